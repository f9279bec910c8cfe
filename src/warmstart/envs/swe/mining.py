"""Mining bug-fix tasks from a package's own test suite (`warmstart tasks mine-bugs PATH`).

The suite is listed and run once unmutated in the sandbox (every collected test must collect, and none
may fail: a suite that fails before any mutation is refused). The listing decides the task set's
`test_paths` (paths.find_test_paths: the collected test files and the folders of tests, with their helpers
and data), stored in the manifest: the grader never takes the agent's changes there, and no mutation
goes there (a mutated test helper is no bug of the package). Then candidate mutations of the other
source files (mutations.py) are tried one at a time, in an order shuffled by the seed and interleaved
across files, each by running the tests that passed, in the sandbox, and reading the JUnit XML. A
mutation is kept when at least one and at most `max_failing` tests fail (`--maxfail` stops a run once
more have failed) and the run finished: those are its fail-to-pass tests, the others that passed its
pass-to-pass. A kept mutation is then graded as a task is (`grade`: plain asserts, the ids in the
order below): the broken tree must score 0, as the original tree (graded once) must score 1. Each kept
mutation becomes a task (taskset.py); the problem statement is written from the failing tests' ids and
their assertion messages, and never names the file or the change.

Every run takes the ids in the suite's collection order (pytest runs explicit ids in the order given,
and a suite may depend on it: a test that reads what an earlier one registered), stored so in the tasks
and, whole, in the manifest (`ids`), which the grader follows. Only the variants of one parametrized
test are sorted among themselves: over a set they are collected in an order that follows the hash seed,
which the sandboxed interpreter (`-I`) leaves random, and the same tree must mine the same tasks.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import WarmstartError
from ..sandbox import bubblewrap as sandbox
from ..sandbox.interpreter import Interpreter, interpreter
from .grader import grade
from .junit import junit_key, outcome_of
from .mutations import Mutation, mutations
from .paths import find_test_paths, is_listed, is_protected
from .snapshot import Snapshot, dropped_note, read_snapshot
from .suite import TAMPERED, check_pytest, run_pytest
from .taskset import write_task_set

NOT_MINED = ("setup.py", "conftest.py", "versioneer.py", "_version.py", "__main__.py")
NOT_MINED_DIRS = ("docs", "doc", "examples", "benchmarks", "bench", "scripts")
LISTED_FAILURES = 5
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")  # object addresses in messages: the same task mined twice reads the same


@dataclass(frozen=True)
class MineSettings:
    max_failing: int = 5
    max_tasks: int = 30
    max_mutations: int = 200
    seed: int = 0
    wall_s: float = 60.0
    memory_mb: int = 2048
    workers: int = 2


@dataclass
class MineResult:
    name: str
    tests: int
    tried: int
    tasks: list[dict]
    seconds: float
    ids: list[str]  # every test's id, in the order the runs took them (the grader follows it)
    test_paths: list[str]  # what the grader never takes from the agent (paths.find_test_paths)

    @property
    def acceptance(self) -> float:
        return len(self.tasks) / self.tried if self.tried else 0.0


def limits(settings: MineSettings) -> sandbox.Limits:
    return sandbox.Limits(
        wall_s=settings.wall_s,
        cpu_s=int(settings.wall_s) + 1,
        memory_bytes=settings.memory_mb << 20,
        open_files=256,
        processes=128,
    )


def source_files(files: dict[str, str], tests: Sequence[str] = ()) -> list[str]:
    """The files mutations go into: Python source of the package, not its tests (`tests`: test_paths),
    setup or docs."""
    return [
        p
        for p in files
        if p.endswith(".py")
        and not is_protected(p)
        and not is_listed(p, tests)
        and p.rsplit("/", 1)[-1] not in NOT_MINED
        and p.split("/")[0] not in NOT_MINED_DIRS
    ]


def check_package(path: Path) -> Snapshot:
    if not path.is_dir():
        raise WarmstartError(f"{path}: not a directory")
    snapshot = read_snapshot(path)
    with naming_dropped(snapshot):
        if not source_files(snapshot.files):
            raise WarmstartError(f"{path}: not a Python package (no Python source files outside tests)")
    return snapshot


@contextmanager
def naming_dropped(snapshot: Snapshot) -> Iterator[None]:
    """An error of the unmutated suite names the files the snapshot left out: the suite runs without them,
    so a test that reads one fails with "No such file" for a file that is there in the tree."""
    try:
        yield
    except WarmstartError as exc:
        note = dropped_note(snapshot.dropped, str(exc))
        if not note:
            raise
        raise WarmstartError(f"{exc}; {note}") from None


def collected_tests(path: Path, files: dict[str, str], python: Interpreter, settings: MineSettings) -> list[str]:
    """Every node id of the suite (skipped ones too), in stable_order; else one error."""
    listing = run_pytest(files, files, [], python, limits(settings), collect_only=True)
    if listing.collected is None or listing.collected["errors"]:
        why = (listing.collected or {}).get("errors") or [{"nodeid": "", "message": no_report(listing.execution)}]
        raise WarmstartError(f"{path}: the tests cannot be collected: {why[0]['nodeid']} {why[0]['message']}".rstrip())
    ids = stable_order(listing.collected["ids"])
    if not ids:
        raise WarmstartError(f"{path}: the test suite collects no tests")
    return ids


def suite_test_paths(path: Path, files: dict[str, str], ids: list[str]) -> list[str]:
    """paths.find_test_paths of the collected suite; one error when no source file is left to mutate."""
    tests = find_test_paths(files, (test_id.split("::")[0] for test_id in ids))
    if not source_files(files, tests):
        folders = ", ".join([t for t in tests if t.endswith("/")] or tests[:5])
        raise WarmstartError(
            f"{path}: every Python source file is in a folder of its tests ({folders}); a folder holding tests "
            "counts as the package's code only when its own __init__.py, or code outside it, imports a module in it"
        )
    return tests


def passing_tests(
    path: Path, files: dict[str, str], ids: list[str], python: Interpreter, settings: MineSettings
) -> list[str]:
    """The collected `ids` that pass unmutated (skipped ones are left out); one error if any fails."""
    baseline = run_pytest(files, files, ids, python, limits(settings), assert_mode="rewrite")
    if baseline.outcomes is None:
        raise WarmstartError(f"{path}: the unmutated test suite left no report: {no_report(baseline.execution)}")
    failed = [i for i in ids if outcome_of(i, baseline.outcomes).kind in ("failure", "error")]
    if failed:
        first = outcome_of(failed[0], baseline.outcomes)
        raise WarmstartError(
            f"{path}: the test suite fails before any mutation: {len(failed)} failing, first {failed[0]}: {first_line(first.message)}"
        )
    keys = [junit_key(i) for i in ids]
    counts = Counter(keys)  # keys.count per key was quadratic: 20,000 tests took minutes
    unique = {k for k in keys if counts[k] == 1}  # two ids that write one JUnit entry cannot be told apart
    return [i for i, k in zip(ids, keys) if k in unique and outcome_of(i, baseline.outcomes).passed]


def stable_order(ids: list[str]) -> list[str]:
    """Collection order, with the variants of each parametrized test (`test_x[...]`) sorted among themselves."""
    first: dict[str, int] = {}
    for position, test_id in enumerate(ids):
        first.setdefault(test_id.partition("[")[0], position)
    return sorted(ids, key=lambda test_id: (first[test_id.partition("[")[0]], test_id))


def check_graded_original(
    path: Path, files: dict[str, str], ids: list[str], tests: list[str], python, settings: MineSettings
) -> None:
    """The unmutated tree must score 1 as the grader runs it (plain asserts, these ids in this order:
    every task's reference fix is this run); else one error naming the first failure."""
    verdict = grade(files, {}, {}, ids, [], python, limits(settings), order=ids, test_paths=tests)
    if verdict.reward != 1.0:
        why = verdict.infra_error or verdict.details.get("first_failure") or verdict.details.get("reason")
        raise WarmstartError(f"{path}: the unmutated test suite fails as the grader runs it (plain asserts): {why}")


def candidate_order(files: dict[str, str], tests: list[str], seed: int) -> list[Mutation]:
    """Every file's mutations shuffled, then taken one file at a time in turn (so no file dominates)."""
    rng = random.Random(seed)
    per_file = []
    for path in sorted(source_files(files, tests)):
        seen, unique = set(), []
        for m in mutations(path, files[path]):
            if m.source not in seen:
                seen.add(m.source)
                unique.append(m)
        rng.shuffle(unique)
        per_file.append(unique)
    rng.shuffle(per_file)
    order = []
    for round_ in range(max((len(f) for f in per_file), default=0)):
        order.extend(f[round_] for f in per_file if round_ < len(f))
    return order


def try_mutation(m: Mutation, files, ids, tests, python, settings: MineSettings) -> list[tuple[str, str]] | None:
    """The (id, message) of each test the mutation fails, or None when it is not a task."""
    run = run_pytest(
        {**files, m.path: m.source}, files, ids, python, limits(settings), "rewrite", settings.max_failing + 1
    )
    if run.outcomes is None:
        return None
    failing = [(i, outcome_of(i, run.outcomes)) for i in ids]
    failing = [(i, o.message or o.kind) for i, o in failing if not o.passed]
    if not 1 <= len(failing) <= settings.max_failing:
        return None
    # As the grader will see the task: the broken tree must score 0 (the reference, 1: check_graded_original).
    failed = {i for i, _ in failing}
    f2p, p2p = [i for i in ids if i in failed], [i for i in ids if i not in failed]
    graded = grade(files, {m.path: m.source}, {}, f2p, p2p, python, limits(settings), order=ids, test_paths=tests)
    return failing if graded.reward == 0.0 and graded.infra_error is None else None


def problem_statement(name: str, failing: list[tuple[str, str]]) -> str:
    shown = sorted(failing)[:LISTED_FAILURES]
    lines = [
        f"{name}: {len(failing)} test{'s' if len(failing) > 1 else ''} of the repository's own suite fail{'' if len(failing) > 1 else 's'}.",
        "",
    ]
    for test_id, message in shown:
        lines.append(f"- `{test_id}`")
        lines.extend(f"    {line}" for line in ADDRESS.sub("0x...", message).splitlines()[:6])
    if len(failing) > len(shown):
        lines.append(f"- ... and {len(failing) - len(shown)} more")
    lines += ["", "The tests are right; the library's code has a bug. Find it and fix the source (not the tests)."]
    return "\n".join(lines)


def mine(
    path: Path, name: str, python: Interpreter, settings: MineSettings, progress=None
) -> tuple[dict[str, str], MineResult]:
    started = time.monotonic()
    snapshot = check_package(path)
    files = snapshot.files
    check_pytest(python, str(python.host))
    with naming_dropped(snapshot):
        collected = collected_tests(path, files, python, settings)
        tests = suite_test_paths(path, files, collected)
        ids = passing_tests(path, files, collected, python, settings)
        check_graded_original(path, files, ids, tests, python, settings)
    candidates = candidate_order(files, tests, settings.seed)[: settings.max_mutations]
    tasks: list[dict] = []
    tried = 0
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        # In batches of `workers`, so the tally stops as soon as enough are kept.
        for start in range(0, len(candidates), settings.workers):
            if len(tasks) >= settings.max_tasks:
                break
            batch = candidates[start : start + settings.workers]
            results = list(pool.map(lambda m: try_mutation(m, files, ids, tests, python, settings), batch))
            for m, failing in zip(batch, results):
                tried += 1
                if failing is not None and len(tasks) < settings.max_tasks:
                    tasks.append(task_record(name, len(tasks), m, failing, ids))
            if progress is not None:
                progress(tried, len(tasks))
    return files, MineResult(name, len(ids), tried, tasks, time.monotonic() - started, ids, tests)


def task_record(name: str, index: int, m: Mutation, failing: list[tuple[str, str]], ids: list[str]) -> dict:
    failed = {i for i, _ in failing}
    return {
        "id": f"{name}/{index:03d}",
        "repo": name,
        "file": m.path,
        "broken": m.source,
        "mutation": f"{m.kind}: {m.description} ({m.path}:{m.line})",
        "problem": problem_statement(name, failing),
        "fail_to_pass": [i for i in ids if i in failed],  # in the order they ran (stable_order)
        "pass_to_pass": [i for i in ids if i not in failed],
    }


def mine_to_directory(
    path: Path, out: Path, name: str | None, python_path: str, settings: MineSettings, force: bool, progress=None
) -> MineResult:
    """`mine`, then the task set written whole to `out` (or nothing written: any error comes first)."""
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise WarmstartError(f"{out}: already exists and is not empty (pass --force to replace it)")
    name = name or path.resolve().name
    python = interpreter(python_path)
    files, result = mine(path, name, python, settings, progress)
    if not result.tasks:
        raise WarmstartError(f"{path}: none of {result.tried} mutations made 1 to {settings.max_failing} tests fail")
    manifest = {
        "name": name,
        "source": str(path.resolve()),
        "python": python.host,
        "tests": result.tests,
        "mutations_tried": result.tried,
        "tasks": len(result.tasks),
        "acceptance": round(result.acceptance, 3),
        "seconds": round(result.seconds, 1),
        "settings": asdict(settings),
        "ids": result.ids,
        "test_paths": result.test_paths,
    }
    write_task_set(out, manifest, files, result.tasks, force)
    return result


def no_report(execution) -> str:
    if execution.timed_out:
        return "it did not finish in the time limit (--wall-s)"
    if execution.returncode == TAMPERED:
        return "its code changed pytest's machinery or the import system while it ran, which the runner refuses (docs/swe.md)"
    return execution.infra_error or f"pytest exited with {execution.returncode} before writing one"


def first_line(message: str) -> str:
    return (message.strip().splitlines() or [""])[0][:200]
