"""`swe`: fix a bug in a real Python package through tools; its own pytest suite, in the sandbox, decides.

Tasks come from a mined task set (`env.options.tasks_dir`: `warmstart tasks mine-bugs`, taskset.py).
Tools as in `repo` (`list_files`, `read_file`, `write_file`, `run`) plus `edit_file` (replace one
exact occurrence: large files need not be rewritten whole). State is the replay of the conversation's
writes and edits (tools.py). `run` builds the working copy as a git repository whose only commit is the
broken tree (so `git diff` / `git status` show the agent's own changes and nothing else is in the
history) and runs the command in the sandbox with the task's interpreter first on PATH (`python -m
pytest` works, with its packages mounted read-only), no network, and time, memory, output and disk
limits (the working copy is a capped tmpfs: bubblewrap.py). Each task set's tasks are graded and run
with the interpreter that set was mined with (its manifest's `python`), or `env.options.python` for
all: a folder of sets mined with different interpreters (one package's dependencies in one venv,
another's in another) grades each with its own. `verify` is the real-suite grader (grader.py). The
reference solver puts the original lines back with `edit_file`, runs the failing tests, and answers.
"""

from __future__ import annotations

import difflib
import os
import random
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ...errors import WarmstartError
from ...lm.toolcalls import call_arguments
from ...types import Message, Task, ToolCall, Trajectory, Verdict
from ..base import hash_split
from ..repo import (
    PATH_ERROR,
    clean_path,
    command_error,
    command_report,
    git_repository,
    scripted_episode,
    write_changes,
)
from ..repo import TOOLS as REPO_TOOLS
from ..sandbox import bubblewrap as sandbox
from ..sandbox.interpreter import Interpreter, interpreter
from .grader import grade
from .paths import source_roots
from .suite import check_pytest
from .taskset import TaskSet, load_task_sets
from .tools import EDIT_TOOL, changed, edit, replay, working_files, write

EVAL_BUCKETS = 4
MAX_READ_CHARS = 20_000


class SweOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks_dir: str  # a mined task set, or a directory of them (taskset.py)
    # An interpreter with pytest and the packages' dependencies, for every set; default: each set's own.
    python: str | None = None
    wall_s: float = Field(60.0, gt=0)  # per grading
    tool_wall_s: float = Field(30.0, gt=0)  # per `run` command
    memory_mb: int = Field(2048, ge=256)


class SweEnv:
    name = "swe"
    tools: tuple[dict, ...] = (*REPO_TOOLS[:3], EDIT_TOOL, REPO_TOOLS[3])
    verify_workers = max(1, os.cpu_count() or 1)

    def __init__(self, options: SweOptions | dict):
        self.options = options if isinstance(options, SweOptions) else SweOptions.model_validate(options)
        if sandbox.bwrap_path() is None:
            raise WarmstartError(
                "env swe: bubblewrap (bwrap) is not installed; the test suites run only in the sandbox"
            )
        sets = load_task_sets(Path(self.options.tasks_dir))
        # Per set name (a task's hidden["repo"]): what grades its tasks and runs their `run` commands.
        self.pythons = set_interpreters(sets, self.options.python)
        self.snapshots = {s.manifest["name"]: s.snapshot for s in sets}
        # The order mining ran the tests in (None: a set mined before it was stored, its ids sorted).
        self.orders = {s.manifest["name"]: s.manifest.get("ids") for s in sets}
        # The test files and folders the grader never takes from the agent (None: mined before they were stored).
        self.test_paths = {s.manifest["name"]: s.manifest.get("test_paths") for s in sets}
        self.all_tasks = [self._task(record) for s in sets for record in s.tasks]

    def _task(self, record: dict) -> Task:
        text = (
            f"You are working in a git repository of the Python package {record['repo']}. A bug was reported:\n\n"
            f"{record['problem']}\n\nUse the tools to look at the code, fix it and run the tests "
            "(`python -m pytest ...`); then reply with a one-line summary of the fix."
        )
        return Task(
            id=f"swe/{record['id']}",
            env=self.name,
            prompt=[Message(role="user", content=text)],
            hidden={k: record[k] for k in ("repo", "file", "broken", "fail_to_pass", "pass_to_pass")},
            split=hash_split(record["id"], EVAL_BUCKETS),
            meta={"repo": record["repo"], "mutation": record.get("mutation", "")},
        )

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        pool = [t for t in self.all_tasks if t.split == split]
        if n > len(pool):
            raise ValueError(f"swe: only {len(pool)} {split} tasks in {self.options.tasks_dir}, {n} asked")
        random.Random(f"swe-{seed}").shuffle(pool)
        return pool[:n]

    def start_files(self, task: Task) -> dict[str, str]:
        return {**self.snapshots[task.hidden["repo"]], task.hidden["file"]: task.hidden["broken"]}

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        arguments = call_arguments(call) or {}
        name = call.function.name
        before = working_files(self.start_files(task), messages, before_call=call.id)
        if name == "list_files":
            return file_list(sorted(before))
        if name == "read_file":
            path = clean_path(arguments.get("path"))
            if path is None:
                return PATH_ERROR
            if path not in before:
                return f"error: no such file: {path}"
            text = before[path]
            return text if len(text) <= MAX_READ_CHARS else text[:MAX_READ_CHARS] + "\n[... cut: use run with sed -n]"
        if name in ("write_file", "edit_file"):
            files = dict(before)
            error = (write if name == "write_file" else edit)(files, arguments)
            return error or f"{name}: {clean_path(arguments.get('path'))} updated"
        command = arguments.get("command")
        return command_error(command) or self._run(task, before, command)

    def _run(self, task: Task, files: dict[str, str], command: str) -> str:
        start = self.start_files(task)
        python = self.pythons[task.hidden["repo"]]
        script = run_script(os.path.dirname(python.path), source_roots(start), command)
        limits = sandbox.Limits(
            wall_s=self.options.tool_wall_s,
            cpu_s=int(self.options.tool_wall_s) + 1,
            memory_bytes=self.options.memory_mb << 20,
            open_files=256,
        )
        with tempfile.TemporaryDirectory(prefix="warmstart-swe-") as tmp:
            os.chmod(tmp, 0o755)  # the sandbox user must reach the two directories inside
            work, empty = Path(tmp) / "work", Path(tmp) / "task"
            empty.mkdir()
            git_repository(work, start)
            error = write_changes(work, changed(start, files))
            if error is not None:
                return error
            execution = sandbox.run(["/bin/sh", "-c", script], empty, limits, work_dir=work, python=python)
        return command_report(execution)

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        start = self.start_files(task)
        files, refused = replay(start, trajectory.messages)
        changes = changed(start, files)
        limits = sandbox.Limits(
            wall_s=self.options.wall_s,
            cpu_s=int(self.options.wall_s) + 1,
            memory_bytes=self.options.memory_mb << 20,
            open_files=256,
            processes=128,
        )
        broken = {task.hidden["file"]: task.hidden["broken"]}
        original = self.snapshots[task.hidden["repo"]]
        hidden = task.hidden
        f2p, p2p, repo = hidden["fail_to_pass"], hidden["pass_to_pass"], hidden["repo"]
        order, tests = self.orders[repo], self.test_paths[repo]
        python = self.pythons[repo]
        verdict = grade(original, broken, changes, f2p, p2p, python, limits, order=order, test_paths=tests)
        if refused:  # writes and edits the agent was told were refused: they changed nothing
            verdict.details["refused_calls"] = refused[:10]
        return verdict

    def reference(self, task: Task, rng) -> Trajectory:
        """Put the original lines back with one edit_file, run the failing tests, answer."""
        path = task.hidden["file"]
        old, new = fix_edit(task.hidden["broken"], self.snapshots[task.hidden["repo"]][path])
        tests = " ".join(f"'{i}'" for i in task.hidden["fail_to_pass"][:5])
        plan = [
            ("edit_file", {"path": path, "old": old, "new": new}),
            ("run", {"command": f"python -m pytest -q -p no:cacheprovider {tests} 2>&1 | tail -n 3"}),
        ]
        answer = f"Fixed the bug in {path}; the failing tests pass."
        return scripted_episode(self, task, plan, answer, "swe-original-files")


def file_list(paths: list[str]) -> str:
    """The paths one a line, cut like read_file (20,000 files were a 720,000-character reply)."""
    text = "\n".join(paths)
    if len(text) <= MAX_READ_CHARS:
        return text
    shown = text[:MAX_READ_CHARS].rpartition("\n")[0]
    more = len(paths) - (shown.count("\n") + 1 if shown else 0)
    return f"{shown}\n[... {more} more files: use run with `git ls-files` (and grep)]"


def run_script(bin_dir: str, roots: list[str], command: str) -> str:
    """The shell script `run` executes in the working copy (/work): the task's interpreter first on PATH,
    and the repository's source roots on PYTHONPATH, as the grader's sys.path has them (a src-layout
    package cannot be imported by `python -m pytest` otherwise)."""
    python_path = ":".join("/work" if root == "" else f"/work/{root}" for root in roots)
    return f'PATH="{bin_dir}:/usr/bin"; PYTHONPATH="{python_path}"; export PATH PYTHONPATH; {command}'


def set_interpreters(sets: list[TaskSet], given: str | None) -> dict[str, Interpreter]:
    """Each set's interpreter by set name: `given` (env.options.python) for all, else the one its manifest
    names. Each distinct one is probed and checked for pytest in the sandbox once, before anything runs."""
    checked: dict[str | None, Interpreter] = {}
    chosen = {}
    for task_set in sets:
        path = given or task_set.manifest.get("python")
        if path not in checked:
            checked[path] = checked_interpreter(path) if given else mined_interpreter(task_set, path)
        chosen[task_set.manifest["name"]] = checked[path]
    return chosen


def checked_interpreter(path: str) -> Interpreter:
    python = interpreter(path)
    check_pytest(python, path)
    return python


def mined_interpreter(task_set: TaskSet, path: str | None) -> Interpreter:
    """The interpreter a set's manifest names, checked; any error is one line naming the set (the errors of
    `interpreter` speak of env.options.python, which the user did not set)."""
    where = f"env swe: task set {task_set.manifest.get('name')!r} ({task_set.directory})"
    if not path:
        raise WarmstartError(f"{where} names no interpreter in its manifest; set env.options.python")
    if not Path(path).exists():
        raise WarmstartError(
            f"{where} was mined with {path}, which does not exist here; make it again (pytest and the "
            "package's dependencies) or set env.options.python"
        )
    try:
        return checked_interpreter(path)
    except WarmstartError as exc:
        raise WarmstartError(f"{where}: {exc}") from None


def fix_edit(broken: str, fixed: str) -> tuple[str, str]:
    """The smallest (old, new) pair of whole lines, with context until `old` is unique in `broken`."""
    a, b = broken.splitlines(keepends=True), fixed.splitlines(keepends=True)
    codes = [c for c in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if c[0] != "equal"]
    i1, i2, j1, j2 = codes[0][1], codes[-1][2], codes[0][3], codes[-1][4]
    while True:
        old = "".join(a[i1:i2])
        if old and broken.count(old) == 1 or (i1 == 0 and i2 == len(a)):
            return old, "".join(b[j1:j2])
        i1, j1 = max(0, i1 - 1), max(0, j1 - (1 if i1 > 0 else 0))
        if i2 < len(a):
            i2, j2 = i2 + 1, j2 + 1
