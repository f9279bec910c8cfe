"""One pytest run over a repository in the sandbox, its outcomes read from the JUnit XML it wrote.

The sandbox's /work is a fresh, size-capped tmpfs holding a copy of the repository (`repo/`: whatever the
code under test writes there is capped and never reaches the host's disk) and a results directory with a
random name made for this run (the agent's tool calls never saw it, so nothing can have been prepared
there): a host directory mounted there, the only thing read back; the runner (runner.py, in the
read-only /task) writes the XML there. Output is never read (the runner sends it to /dev/null). The
report is read only when the runner confirms it (exit status REPORTED: pytest's own writer wrote it, in
a process that could start no other program and where nothing else could write there: runner.py says
how) and only as a regular file, opened without following a symlink, in the results directory, itself
not a symlink. A run killed at its time limit has no XML, so every test in it is missing, a failure.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import WarmstartError
from ..sandbox import bubblewrap as sandbox
from ..sandbox.interpreter import Interpreter
from .junit import Outcome, junit_key, read_outcomes
from .paths import source_roots

RUNNER = Path(__file__).with_name("runner.py")
# runner.py's exit codes: its report was written by pytest's writer; the interpreter cannot import pytest;
# the watched machinery changed; the kernel refused the filter that stops other programs from starting.
REPORTED = 0
NO_PYTEST = 5
TAMPERED = 6
NO_EXEC_FILTER = 8


@dataclass
class SuiteRun:
    outcomes: dict[tuple[str, str], Outcome] | None  # None: no JUnit XML (killed, exited early, tampered)
    collected: dict | None  # collect-only mode: {"ids": node ids, "errors": [{nodeid, message}]}
    execution: sandbox.Execution


def write_tree(root: Path, files: dict[str, str]) -> None:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8", newline="") as f:  # the text as it is: CRLF stays CRLF
            f.write(content)


def run_pytest(
    files: dict[str, str],
    roots_from: dict[str, str],
    ids: list[str],
    python: Interpreter,
    limits: sandbox.Limits,
    assert_mode: str = "plain",
    maxfail: int | None = None,
    collect_only: bool = False,
) -> SuiteRun:
    """pytest over `files` (the whole tree), selecting `ids` (none: the whole suite). `roots_from`: the
    original tree, whose layout decides sys.path (never the tree under test)."""
    with tempfile.TemporaryDirectory(prefix="warmstart-swe-") as tmp:
        os.chmod(tmp, 0o755)  # the sandbox user must reach the directories inside
        work, task = Path(tmp) / "work", Path(tmp) / "task"
        results_name = f"results-{secrets.token_hex(16)}"
        results = Path(tmp) / results_name  # mounted at /work/<its name>, beside the repository's copy
        write_tree(work / "repo", files)
        results.mkdir()
        task.mkdir()
        (task / "runner.py").write_text(RUNNER.read_text())
        spec = {
            "root": "/work/repo",
            "paths": source_roots(roots_from),
            "results": f"/work/{results_name}",
            "ids": ids,
            "assert": assert_mode,
            "maxfail": maxfail,
            "collect_only": collect_only,
        }
        (task / "spec.json").write_text(json.dumps(spec))
        argv = [*python.argv(), "/task/runner.py", "/task/spec.json"]
        execution = sandbox.run(argv, task, limits, work_dir=work, python=python, out_dir=results)
        confirmed = execution.returncode == REPORTED
        report = read_report(results, "collected.json" if collect_only else "junit.xml")
        report = report if confirmed else None
        outcomes = read_outcomes(report) if report is not None and not collect_only else None
        if outcomes is not None:
            outcomes = seen_by_runner(outcomes, read_report(results, "ran.txt"))
        listed = json.loads(report) if report is not None and collect_only else None
    return SuiteRun(outcomes, listed, execution)


def seen_by_runner(outcomes: dict[tuple[str, str], Outcome], ran: str | None) -> dict[tuple[str, str], Outcome] | None:
    """The report's outcomes, a pass kept only where the runner saw the test pass itself (`ran.txt`: one
    node id a line, as `repr` wrote it: every phase returned, the test function called), whatever pytest's
    reporting machinery, which code under test can reach, then wrote. None when that record is missing."""
    if ran is None:
        return None
    seen = set()
    for line in ran.splitlines():
        try:
            node_id = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
        if not isinstance(node_id, str):
            return None
        seen.add(junit_key(node_id))
    unseen = Outcome(False, "error", "the runner did not see this test pass (pytest's report said it passed)")
    return {key: o if not o.passed or key in seen else unseen for key, o in outcomes.items()}


def read_report(results: Path, name: str) -> str | None:
    """`results/name` when both are what the runner made: a directory and a regular file in it, neither a
    symlink (nor the file a FIFO, a device, a directory); None otherwise."""
    try:
        directory = os.open(results, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    except OSError:
        return None
    finally:
        os.close(directory)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read().decode(errors="replace")
    finally:
        os.close(fd)


def check_pytest(python: Interpreter, given: str) -> None:
    """Before anything untrusted runs: the interpreter starts in the sandbox and imports pytest there."""
    with tempfile.TemporaryDirectory(prefix="warmstart-swe-") as tmp:
        task = Path(tmp)
        (task / "runner.py").write_text(RUNNER.read_text())
        (task / "spec.json").write_text(json.dumps({"probe": True, "root": "/work", "results": "/work"}))
        done = sandbox.run(
            [*python.argv(), "/task/runner.py", "/task/spec.json"], task, sandbox.Limits(wall_s=60), python=python
        )
    if done.infra_error:
        raise WarmstartError(f"swe: the sandbox did not start: {done.infra_error}")
    if done.returncode == NO_PYTEST:
        raise WarmstartError(f"swe: {given} cannot import pytest inside the sandbox; install pytest into it")
    if done.returncode == NO_EXEC_FILTER:
        raise WarmstartError(
            f"swe: {given} could not install the seccomp filter that stops the tests from starting programs "
            "(x86_64 or aarch64 Linux, with ctypes, is needed)"
        )
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise WarmstartError(f"swe: {given} does not run inside the sandbox (it runs as `nobody`): {last}")
