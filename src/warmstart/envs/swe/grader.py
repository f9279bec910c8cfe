"""The real-suite grader: the repository's own tests, run by pytest in the sandbox, decide.

Given the original repository (text files by path), the task's broken files, the agent's writes and
the task's fail-to-pass and pass-to-pass node ids: a fresh tree is built from the original with the
broken files in place, the agent's writes are applied where paths.py allows (never tests, conftest,
configuration, hidden paths, new top-level modules), and pytest runs those ids only
(suite.py / runner.py) with plain asserts (nothing of pytest's assertion rewriter for the code under
test to patch). Each id's outcome comes from the JUnit XML (junit.py); reward 1 only when every id
passed. The sandbox failing to start is an infra error, never a 0.
"""

from __future__ import annotations

from ...types import Verdict
from ..sandbox import bubblewrap as sandbox
from ..sandbox.interpreter import Interpreter
from .junit import outcome_of
from .paths import applied_changes
from .suite import run_pytest


def grade(
    original: dict[str, str],
    broken: dict[str, str],
    changes: dict[str, str],
    fail_to_pass: list[str],
    pass_to_pass: list[str],
    python: Interpreter,
    limits: sandbox.Limits,
) -> Verdict:
    start = {**original, **broken}
    applied = applied_changes(changes, start)
    # In file order, as pytest would collect the whole suite (not the failing tests' files first).
    ids = sorted(dict.fromkeys([*fail_to_pass, *pass_to_pass]), key=lambda i: i.split("::")[0])
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
