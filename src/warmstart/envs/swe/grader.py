"""The real-suite grader: the repository's own tests, run by pytest in the sandbox, decide.

Given the original repository (text files by path), the task's broken files, the agent's writes and
the task's fail-to-pass and pass-to-pass node ids: a fresh tree is built from the original with the
broken files in place, the agent's writes are applied where paths.py allows (`.py` files only, never
tests, the task set's `test_paths` (test helpers and folders), conftest, configuration, hidden paths,
new top-level modules), and pytest runs those ids only
(suite.py / runner.py) with plain asserts (nothing of pytest's assertion rewriter for the code under
test to patch). Each id's outcome comes from the JUnit XML (junit.py); reward 1 only when every id
passed. The sandbox failing to start is an infra error, never a 0. A change no tree could hold (a NUL
byte in its path, a path that is a directory, text with a lone surrogate: paths.unwritable) is a 0 with
the reason, never an exception; the swe environment's replay already refuses such writes.
"""

from __future__ import annotations

from ...types import Verdict
from ..sandbox import bubblewrap as sandbox
from ..sandbox.interpreter import Interpreter
from .junit import outcome_of
from .paths import applied_changes, unwritable
from .suite import run_pytest


def grade(
    original: dict[str, str],
    broken: dict[str, str],
    changes: dict[str, str],
    fail_to_pass: list[str],
    pass_to_pass: list[str],
    python: Interpreter,
    limits: sandbox.Limits,
    order: list[str] | None = None,
    test_paths: list[str] | None = None,
) -> Verdict:
    """`order`: the suite's collection order as mining ran it (the task set's manifest `ids`); the ids run
    in it, since pytest runs explicit ids in the order given and a suite may depend on it. `test_paths`:
    the manifest's (paths.find_test_paths), never taken from the agent; None for a set mined before they were
    stored (then only the name rules protect the tests)."""
    start = {**original, **broken}
    applied = applied_changes(changes, start, test_paths)
    refused = unwritable(applied, start)
    if refused:
        path = sorted(refused)[0]
        reason = f"a change cannot be written: {path.encode(errors='backslashreplace').decode()}: {refused[path]}"
        return Verdict(reward=0.0, passed=False, details={"reason": reason, "unwritable_files": len(refused)})
    ids = run_order(fail_to_pass, pass_to_pass, order)
    run = run_pytest({**start, **applied}, original, ids, python, limits)
    if run.outcomes is None and run.execution.infra_error:
        return Verdict(reward=0.0, passed=False, infra_error=run.execution.infra_error)
    outcomes = run.outcomes or {}
    failed = [i for i in ids if not outcome_of(i, outcomes).passed]
    details = {
        "fail_to_pass": sum(outcome_of(i, outcomes).passed for i in fail_to_pass),
        "pass_to_pass": sum(outcome_of(i, outcomes).passed for i in pass_to_pass),
        "tests": len(ids),
        "fraction": (len(ids) - len(failed)) / max(1, len(ids)),
        "changed_files": sorted(applied),
        "ignored_files": sorted(set(changes) - set(applied) - {p for p, c in changes.items() if start.get(p) == c}),
        "seconds": round(run.execution.seconds, 3),
    }
    if run.outcomes is None:
        details["reason"] = "time limit" if run.execution.timed_out else "no test report"
    elif failed:
        first = outcome_of(failed[0], outcomes)
        details["first_failure"] = f"{failed[0]}: {first.kind} {first.message}"[:300]
    ok = bool(ids) and not failed
    return Verdict(reward=1.0 if ok else 0.0, passed=ok, details=details)


def run_order(fail_to_pass: list[str], pass_to_pass: list[str], order: list[str] | None) -> list[str]:
    """The ids in the order mining ran them; without `order` (a set mined before it was stored: its ids
    sorted) grouped by file, as pytest collects a whole suite (not the failing tests' files first)."""
    ids = list(dict.fromkeys([*fail_to_pass, *pass_to_pass]))
    if order is None:
        return sorted(ids, key=lambda i: i.split("::")[0])
    rank = {test_id: n for n, test_id in enumerate(order)}
    return sorted(ids, key=lambda i: rank.get(i, len(rank)))
