"""`repo`: SWE-style tasks — fix an issue in a small git repository through tools, graded by hidden tests.

Tools: `list_files`, `read_file(path)`, `write_file(path, content)`, `run(command)`. The environment
keeps no state: the agent's working copy is the pristine repository plus every `write_file` of the
conversation so far, replayed in order, so episodes can run anywhere and in any order. `run` builds
that copy as a fresh git repository with one commit (the pristine files; nothing else reachable: no
other commits, reflog entries, tags or packed objects, so the fix cannot be dug out of history) and
runs the command in the sandbox (`sandbox/bubblewrap.py`), as `nobody`, with no network.

Grading (`verify`): a fresh copy with only the agent's non-test changes (writes under `tests/` or to
`test_*.py` files are dropped), then the hidden probes — calls with expected results, fail-to-pass and
pass-to-pass — run through the python harness in the sandbox; results come back as plain data and
are compared here, type-strict. Every probe must be present and pass; a missing module or function, an
exception or a time-out fails it. Because the hidden tests are probes rather than test files run
in-process, there is nothing to skip, xfail, patch or delete (see python_harness.py for why results
cannot be forged).
"""

from __future__ import annotations

import json
import os
import posixpath
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ..errors import WarmstartError
from ..lm.toolcalls import call_arguments
from ..types import Message, Provenance, Task, ToolCall, ToolFunction, Trajectory, Verdict
from .base import hash_split
from .python import parse_results, run_harness
from .python_harness import decode, encode
from .repo_fixtures import FIXTURES
from .sandbox import bubblewrap as sandbox

MAX_FILE_BYTES = 100_000
MAX_TOOL_OUTPUT = 4_000
EVAL_BUCKETS = 3  # three fixtures: one lands in eval


def function_tool(name: str, description: str, properties: dict) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(properties)},
        },
    }


TOOLS = (
    function_tool("list_files", "List the repository's files.", {}),
    function_tool("read_file", "Read a file of the repository.", {"path": {"type": "string"}}),
    function_tool(
        "write_file",
        "Replace (or create) a file with the given content.",
        {"path": {"type": "string"}, "content": {"type": "string"}},
    ),
    function_tool(
        "run", "Run a shell command in the repository (sandboxed, no network).", {"command": {"type": "string"}}
    ),
)
PROBE_PROGRAM = (
    "import importlib, sys\nsys.path.insert(0, '/work')\n"
    "def __probe(module, function, *args):\n    return getattr(importlib.import_module(module), function)(*args)\n"
)


class RepoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wall_s: float = Field(20.0, gt=0)  # per `run` command and per grading
    memory_mb: int = Field(1024, ge=64)
    unsafe_no_sandbox: bool = False


def clean_path(path) -> str | None:
    """A relative path inside the repository, or None (absolute, `..`, .git, not a string)."""
    if not isinstance(path, str) or not path or path.startswith("/"):
        return None
    normal = posixpath.normpath(path)
    if normal.startswith("..") or normal == "." or normal.split("/")[0] == ".git":
        return None
    return normal


def is_test_path(path: str) -> bool:
    return path.split("/")[0] == "tests" or posixpath.basename(path).startswith("test_")


def strict_equal(a, b) -> bool:
    """Equality that also requires equal types, all the way down (True is not 1, 3 is not 3.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    return a == b


def written_files(messages: list[Message]) -> dict[str, str]:
    """Every well-formed write_file of the conversation, in order: the agent's changes."""
    files: dict[str, str] = {}
    for message in messages:
        for call in message.tool_calls or []:
            if call.function.name != "write_file":
                continue
            arguments = call_arguments(call) or {}
            path, content = clean_path(arguments.get("path")), arguments.get("content")
            if path is not None and isinstance(content, str) and len(content.encode()) <= MAX_FILE_BYTES:
                files[path] = content
    return files


def write_tree(root: Path, files: dict[str, str]) -> None:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)


def git_repository(root: Path, files: dict[str, str]) -> None:
    """A repository whose only commit holds `files`: no history beyond it."""
    write_tree(root, files)
    env = {
        "PATH": "/usr/bin:/bin",
        "GIT_AUTHOR_NAME": "warmstart",
        "GIT_AUTHOR_EMAIL": "w@example.invalid",
        "GIT_COMMITTER_NAME": "warmstart",
        "GIT_COMMITTER_EMAIL": "w@example.invalid",
        "HOME": str(root),
    }
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "Initial commit"],
    ):
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)


class RepoEnv:
    name = "repo"
    tools: tuple[dict, ...] = TOOLS
    verify_workers = max(1, os.cpu_count() or 1)

    def __init__(self, options: RepoOptions | None = None):
        self.options = options or RepoOptions()
        if sandbox.bwrap_path() is None and not self.options.unsafe_no_sandbox:
            raise WarmstartError(
                "env repo: bubblewrap (bwrap) is not installed: install it, or set env.options.unsafe_no_sandbox = true for trusted code only"
            )
        self.all_tasks = [self._task(f) for f in FIXTURES]

    def _task(self, fixture: dict) -> Task:
        probes = [{**p, "args": encode(p["args"]), "expected": encode(p["expected"])} for p in fixture["probes"]]
        text = (
            f"Fix this issue in the repository:\n\n{fixture['issue']}\n\nUse the tools to look at the code, change it "
            "and run the tests; then reply with a one-line summary of the fix."
        )
        return Task(
            id=f"repo/{fixture['id']}",
            env=self.name,
            prompt=[Message(role="user", content=text)],
            hidden={"files": fixture["files"], "fix": fixture["fix"], "probes": probes},
            split=hash_split(fixture["id"], EVAL_BUCKETS),
        )

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        pool = [t for t in self.all_tasks if t.split == split]
        if n > len(pool):
            raise ValueError(f"repo: only {len(pool)} {split} task(s) exist, {n} asked")
        return pool[:n]

    def working_files(self, task: Task, messages: list[Message]) -> dict[str, str]:
        return {**task.hidden["files"], **written_files(messages)}

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        arguments = call_arguments(call) or {}
        files = self.working_files(task, messages)  # writes so far, this turn's included
        name = call.function.name
        if name == "list_files":
            return "\n".join(sorted(files))
        if name in ("read_file", "write_file"):
            path = clean_path(arguments.get("path"))
            if path is None:
                return "error: path must be a relative path inside the repository (no '..', not .git)"
            if name == "read_file":
                return files[path][:MAX_FILE_BYTES] if path in files else f"error: no such file: {path}"
            content = arguments.get("content")
            if not isinstance(content, str) or len(content.encode()) > MAX_FILE_BYTES:
                return f"error: content must be a string of at most {MAX_FILE_BYTES} bytes"
            return f"wrote {len(content.encode())} bytes to {path}"
        command = arguments.get("command")
        if not isinstance(command, str) or not command.strip():
            return "error: run needs a command"
        return self._run(task, files, command)

    def _run(self, task: Task, files: dict[str, str], command: str) -> str:
        with tempfile.TemporaryDirectory(prefix="warmstart-repo-") as tmp:
            os.chmod(tmp, 0o755)  # the sandbox user must reach the two directories inside
            work, empty = Path(tmp) / "work", Path(tmp) / "task"
            empty.mkdir()
            git_repository(work, task.hidden["files"])
            write_tree(work, {p: c for p, c in files.items() if task.hidden["files"].get(p) != c})
            execution = sandbox.run(
                ["/bin/sh", "-c", command], empty, self._limits(), unsafe=self.options.unsafe_no_sandbox, work_dir=work
            )
        return command_report(execution)

    def _limits(self) -> sandbox.Limits:
        return sandbox.Limits(
            wall_s=self.options.wall_s, cpu_s=int(self.options.wall_s) + 1, memory_bytes=self.options.memory_mb << 20
        )

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        changes = {p: c for p, c in written_files(trajectory.messages).items() if not is_test_path(p)}
        probes, nonce = task.hidden["probes"], secrets.token_hex(8)
        with tempfile.TemporaryDirectory(prefix="warmstart-grade-") as tmp:
            os.chmod(tmp, 0o755)  # the sandbox user must reach the two directories inside
            work, task_dir = Path(tmp) / "work", Path(tmp) / "task"
            write_tree(work, {**task.hidden["files"], **changes})
            task_dir.mkdir()
            calls = [
                {"function": "__probe", "args": [p["module"], p["function"], *p["args"]], "kwargs": {}} for p in probes
            ]
            spec = {"program": PROBE_PROGRAM, "entry_point": None, "calls": calls, "nonce": nonce, "per_call_s": 5.0}
            execution = run_harness(spec, task_dir, self._limits(), self.options.unsafe_no_sandbox, work_dir=work)
        results, load_error = parse_results(execution.stdout, nonce, len(probes))
        if not results and load_error is None and execution.infra_error:
            return Verdict(reward=0.0, passed=False, infra_error=execution.infra_error)
        outcome = {p["name"]: probe_passed(p, results.get(i)) for i, p in enumerate(probes)}
        failed = [name for name, ok in outcome.items() if not ok]
        details = {
            "fail_to_pass": sum(outcome[p["name"]] for p in probes if p["kind"] == "fail_to_pass"),
            "pass_to_pass": sum(outcome[p["name"]] for p in probes if p["kind"] == "pass_to_pass"),
            "probes": len(probes),
            "fraction": (len(probes) - len(failed)) / len(probes),
            "changed_files": sorted(changes),
        }
        if failed:
            details["failed"] = failed
        return Verdict(reward=0.0 if failed else 1.0, passed=not failed, details=details)

    def reference(self, task: Task, rng) -> Trajectory:
        """Solve through the tools, as an agent would: look, read, write the fix, run the tests."""
        ((path, fixed),) = task.hidden["fix"].items()
        plan = [
            ("list_files", {}),
            ("read_file", {"path": path}),
            ("write_file", {"path": path, "content": fixed}),
            ("run", {"command": "python3 -m unittest 2>&1 | tail -n 3"}),
        ]
        return scripted_episode(self, task, plan, f"Fixed the issue in {path}; the tests pass.", "repo-fixes")


def scripted_episode(env, task: Task, plan: list[tuple[str, dict]], answer: str, model: str) -> Trajectory:
    """A reference solver's episode: each (tool, arguments) of `plan` called through `env.step` in turn,
    its result answered, then the final `answer`."""
    messages = list(task.prompt)
    for turn, (name, arguments) in enumerate(plan):
        call = ToolCall(id=f"call-{turn}-0", function=ToolFunction(name=name, arguments=json.dumps(arguments)))
        messages.append(Message(role="assistant", content="", tool_calls=[call]))
        messages.append(Message(role="tool", tool_call_id=call.id, content=env.step(task, call, messages)))
    messages.append(Message(role="assistant", content=answer))
    return Trajectory(
        task_id=task.id,
        policy="reference",
        messages=messages,
        provenance=Provenance(provider="reference", model=model, created=time.time()),
    )


def command_report(execution) -> str:
    """A `run` command's answer to the agent: how it ended, then the tail of what it printed."""
    output = (execution.stdout + execution.stderr).decode(errors="replace")
    if execution.timed_out:
        status = "time limit"
    elif execution.truncated:
        status = "output limit"
    else:
        status = f"exit code {execution.returncode}"
    return f"{status}\n{output[-MAX_TOOL_OUTPUT:]}"


def probe_passed(probe: dict, record: dict | None) -> bool:
    if record is None or "value" not in record:
        return False
    try:
        return strict_equal(decode(record["value"]), decode(probe["expected"]))
    except (ValueError, TypeError, KeyError, RecursionError):
        return False
