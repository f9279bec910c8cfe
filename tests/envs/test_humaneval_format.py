"""The whole HumanEval and MBPP test formats, graded through the sandbox in both of its modes: a 160-task
HumanEval-layout file whose tests use loops, helpers, random inputs, computed arguments, `assert True`,
the prompt's helpers, float tolerances and expected exceptions loads whole; every canonical solution
passes and every wrong one fails. The tasks are original (humaneval_format_tasks.py builds them)."""

from __future__ import annotations

import json
import random

import pytest
from humaneval_format_tasks import (
    humaneval_style_tasks,
    mbpp_style_tasks,
    test_the_generated_tasks_grade_as_intended_in_plain_python,  # noqa: F401  (collected here too)
)

from helpers import code_reply
from warmstart.envs.python import PythonEnv, PythonOptions
from warmstart.envs.sandbox import bubblewrap
from warmstart.types import Trajectory

needs_bwrap = pytest.mark.skipif(bubblewrap.bwrap_path() is None, reason="bubblewrap is not installed")
MODES = pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "per-execution"])


def reply(task, code: str) -> Trajectory:
    return code_reply(task, code)


def load(tmp_path, records: list[dict], zygote: bool) -> PythonEnv:
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return PythonEnv(PythonOptions(tasks_file=str(path), zygote=zygote))


def grade_all(env: PythonEnv, wrong: dict[str, list[str]]) -> tuple[list[str], list[str], list[str]]:
    """(tasks whose reference failed, wrong answers that passed, infra errors)."""
    failed, passed_wrong, infra = [], [], []
    for task in env.all_tasks:
        verdict = env.verify(task, env.reference(task, random.Random(0)))
        if verdict.infra_error:
            infra.append(f"{task.id}: {verdict.infra_error}")
        elif not verdict.passed:
            failed.append(f"{task.id}: {verdict.details}")
        for code in wrong[task.id]:
            verdict = env.verify(task, reply(task, code))
            if verdict.infra_error:
                infra.append(f"{task.id} (wrong): {verdict.infra_error}")
            elif verdict.passed:
                passed_wrong.append(f"{task.id}: {code!r}")
    return failed, passed_wrong, infra


@needs_bwrap
@MODES
def test_a_160_task_humaneval_file_loads_whole_and_grades_right(tmp_path, zygote):
    records = humaneval_style_tasks()
    env = load(tmp_path, records, zygote)
    try:
        assert len(env.all_tasks) == len(records) == 160
        assert all(t.hidden.get("mode") == "proxy" for t in env.all_tasks)  # none is of the literal-call shape
        wrong = {f"python/{r['task_id']}": r["wrong_solutions"] for r in records}
        failed, passed_wrong, infra = grade_all(env, wrong)
    finally:
        env.close()
    assert (failed, passed_wrong, infra) == ([], [], [])


@needs_bwrap
@MODES
def test_an_mbpp_file_loads_and_grades_right(tmp_path, zygote):
    records = mbpp_style_tasks()
    env = load(tmp_path, records, zygote)
    try:
        assert len(env.all_tasks) == 24
        assert any(t.hidden.get("mode") == "proxy" and len(t.hidden["proxied"]) == 2 for t in env.all_tasks)
        assert "Your code should pass these tests" in env.all_tasks[0].prompt[0].content
        wrong = {f"python/{r['task_id']}": [r["wrong_code"]] for r in records}
        failed, passed_wrong, infra = grade_all(env, wrong)
        # Each MBPP assert is a test of its own: a wrong program fails some, not always all.
        task = env.all_tasks[0]
        verdict = env.verify(
            task, reply(task, next(r["wrong_code"] for r in records if f"python/{r['task_id']}" == task.id))
        )
        assert verdict.details["tests"] == 3 and verdict.details["tests_passed"] < 3
    finally:
        env.close()
    assert (failed, passed_wrong, infra) == ([], [], [])


@needs_bwrap
def test_what_mbpp_test_setup_code_defines_is_there_for_the_solution_too(tmp_path):
    # MBPP's harness runs test_setup_code and the solution in one namespace; here the solution ran alone,
    # so a canonical solution using the setup's table failed with a NameError.
    record = {
        "task_id": 901,
        "text": "Write a function that looks a code up in the table RATES.",
        "code": "def rate(code):\n    return RATES[code]\n",
        "test_list": ["assert rate('a') == 1.5", "assert rate('b') == 2"],
        "test_setup_code": "RATES = {'a': 1.5, 'b': 2}",
    }
    env = load(tmp_path, [record], zygote=True)
    try:
        [task] = env.all_tasks
        assert env.verify(task, env.reference(task, random.Random(0))).passed
        assert not env.verify(task, reply(task, "def rate(code):\n    return 0\n")).passed
    finally:
        env.close()
