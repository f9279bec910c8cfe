"""`repo`: SWE-style tasks — fix an issue in a small git repository through tools, graded by hidden tests.

Tools: `list_files`, `read_file(path)`, `write_file(path, content)`, `run(command)`. The environment
keeps no state: the agent's working copy is the pristine repository plus every `write_file` of the
conversation so far, replayed in order, so episodes can run anywhere and in any order. A write the
copy could not hold (a NUL byte or an over-long name in its path, a path that is a directory or lies
under a file, text with a lone surrogate) is refused with an `error:` reply, and the replay refuses it
alike, so no tool argument can make `step` or `verify` raise. `run` builds
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
MAX_NAME_BYTES = 255  # longer file names cannot be created (ENAMETOOLONG on every common file system)
MAX_PATH_BYTES = 1024
PATH_ERROR = (
    "error: path must be a relative path inside the repository (no '..', not .git, no NUL byte, "
    f"names of at most {MAX_NAME_BYTES} bytes)"
)
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
    """A relative path inside the repository that a file can be created at, or None (absolute, `..`,
    .git, not a string; a NUL byte, text UTF-8 cannot encode, or names too long for a file system: a
    model can emit each of these, and writing the working copy would raise)."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\0" in path or not encodable(path):
        return None
    normal = posixpath.normpath(path)
    if normal.startswith("..") or normal == "." or normal.split("/")[0] == ".git":
        return None
    too_long = len(normal.encode()) > MAX_PATH_BYTES or any(
        len(name.encode()) > MAX_NAME_BYTES for name in normal.split("/")
    )
    return None if too_long else normal


def encodable(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (JSON can carry a lone surrogate; a file cannot)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def tree_conflict(path: str, files: dict[str, str]) -> str | None:
    """Why `path` cannot be a file among `files` (it is a directory there, or lies under a file), or None."""
    names = path.split("/")
    for depth in range(1, len(names)):
        prefix = "/".join(names[:depth])
        if prefix in files:
            return f"error: {prefix} is a file, so {path} cannot be created"
    if any(other.startswith(path + "/") for other in files):
        return f"error: {path} is a directory"
    return None


def content_error(content, max_bytes: int) -> str | None:
    """Why `content` cannot be a file's text (not a string, not encodable as UTF-8, too big), or None."""
    if not isinstance(content, str):
        return f"error: content must be a string of at most {max_bytes} bytes"
    if not encodable(content):
        return "error: content must be text UTF-8 can encode (it holds a lone surrogate, e.g. \\ud800)"
    if len(content.encode()) > max_bytes:
        return f"error: a file may hold at most {max_bytes} bytes"
    return None


def command_error(command) -> str | None:
    """Why `command` cannot be run (empty, a NUL byte, not encodable: exec would raise), or None."""
    if not isinstance(command, str) or not command.strip():
        return "error: run needs a command"
    if "\0" in command or not encodable(command):
        return "error: the command must be text without NUL bytes or lone surrogates"
    return None


def write(files: dict[str, str], arguments: dict, max_bytes: int = MAX_FILE_BYTES) -> str | None:
    """Apply one write_file call to `files` in place; the error text when it cannot be applied (the
    working copy could not hold it: the same refusal when the call is made and whenever it is replayed)."""
    path = clean_path(arguments.get("path"))
    if path is None:
        return PATH_ERROR
    content = arguments.get("content")
    error = content_error(content, max_bytes) or tree_conflict(path, files)
    if error is None:
        files[path] = content
    return error


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


def replayed_files(start: dict[str, str], messages: list[Message], before_call: str | None = None) -> dict[str, str]:
    """`start` with every write_file of the conversation replayed in order (a refused one changes
    nothing); with `before_call` (a tool call's id), only those made before the last call with that id."""
    calls = [call for message in messages for call in message.tool_calls or []]
    if before_call is not None:
        ids = [call.id for call in calls]
        if before_call in ids:
            calls = calls[: len(ids) - 1 - ids[::-1].index(before_call)]
    files = dict(start)
    for call in calls:
        if call.function.name == "write_file":
            write(files, call_arguments(call) or {})
    return files


def write_tree(root: Path, files: dict[str, str]) -> None:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8", newline="") as f:  # the text as it is: CRLF stays CRLF
            f.write(content)


def write_changes(root: Path, changes: dict[str, str]) -> str | None:
    """The agent's changes written over the tree at `root`; the error text when the file system refuses
    them (the replay already refused every path and text that cannot be written: a full disk is left)."""
    try:
        write_tree(root, changes)
    except OSError as exc:
        return f"error: the working copy could not be written: {exc.strerror or exc}"
    return None


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

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        arguments = call_arguments(call) or {}
        files = replayed_files(task.hidden["files"], messages, before_call=call.id)  # what this call sees
        name = call.function.name
        if name == "list_files":
            return "\n".join(sorted(files))
        if name == "read_file":
            path = clean_path(arguments.get("path"))
            if path is None:
                return PATH_ERROR
            return files[path][:MAX_FILE_BYTES] if path in files else f"error: no such file: {path}"
        if name == "write_file":
            error = write(dict(files), arguments)  # as the replay will decide it
            content = arguments.get("content")
            return error or f"wrote {len(content.encode())} bytes to {clean_path(arguments.get('path'))}"
        command = arguments.get("command")
        return command_error(command) or self._run(task, files, command)

    def _run(self, task: Task, files: dict[str, str], command: str) -> str:
        with tempfile.TemporaryDirectory(prefix="warmstart-repo-") as tmp:
            os.chmod(tmp, 0o755)  # the sandbox user must reach the two directories inside
            work, empty = Path(tmp) / "work", Path(tmp) / "task"
            empty.mkdir()
            git_repository(work, task.hidden["files"])
            error = write_changes(work, {p: c for p, c in files.items() if task.hidden["files"].get(p) != c})
            if error is not None:
                return error
            execution = sandbox.run(
                ["/bin/sh", "-c", command], empty, self._limits(), unsafe=self.options.unsafe_no_sandbox, work_dir=work
            )
        return command_report(execution)

    def _limits(self) -> sandbox.Limits:
        return sandbox.Limits(
            wall_s=self.options.wall_s, cpu_s=int(self.options.wall_s) + 1, memory_bytes=self.options.memory_mb << 20
        )

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        start = task.hidden["files"]
        files = replayed_files(start, trajectory.messages)
        changes = {p: c for p, c in files.items() if start.get(p) != c and not is_test_path(p)}
        probes, nonce = task.hidden["probes"], secrets.token_hex(8)
        with tempfile.TemporaryDirectory(prefix="warmstart-grade-") as tmp:
            os.chmod(tmp, 0o755)  # the sandbox user must reach the two directories inside
            work, task_dir = Path(tmp) / "work", Path(tmp) / "task"
            write_tree(work, start)
            error = write_changes(work, changes)
            if error is not None:  # the replay refuses what cannot be written: this is the host's disk
                return Verdict(reward=0.0, passed=False, infra_error=error)
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
