"""curate.student_pass_rate: tasks the student already solves (or cannot yet) are dropped, from the
student's own verified samples. The student is a loopback server through the openai SDK with a known
pass rate per task (tests/fake_api.py), so which tasks go is known in advance."""

from __future__ import annotations

import json
import logging

from fake_api import FakeAPI, Teacher
from helpers import small_recipe
from warmstart.runs.jsonl import JsonlAppender, read_records
from warmstart.stages import curate, generate
from warmstart.stages.common import load_tasks, make_environment
from warmstart.types import Trajectory


def student_rate(problem: str) -> float:
    """1.0 for problems with a '+', 0.0 otherwise: the student solves sums only."""
    return 1.0 if "+" in problem.split("?")[0] else 0.0


def student_recipe(tmp_path, api: FakeAPI, samples: int, train: int):
    """Curation that keeps the tasks whose student (the loopback `api`) pass rate lies in [0, 0.75]."""
    return small_recipe(
        tmp_path,
        f"curate.student='openai:fake-model@{api.url}/v1'",
        "curate.student_pass_rate=[0.0, 0.75]",
        f"curate.student_samples={samples}",
        "api.backoff_s=0.05",
        train=train,
    )


def test_tasks_the_student_always_solves_are_dropped_and_counted(tmp_path):
    with FakeAPI(teacher=Teacher(pass_rate=student_rate)) as api:
        recipe = student_recipe(tmp_path, api, samples=2, train=60)
        teacher = read_records(generate.run(recipe), Trajectory)  # the reference teacher (wrong one time in ten)
        out = curate.run(recipe)
        asked = len(api.log)
    tasks = {t.id: t for t in load_tasks(recipe, make_environment(recipe), "train")}
    candidates = {t.task_id for t in teacher if t.verdict.passed}  # what curate keeps before the student's turn
    sums = {i for i in candidates if student_rate(tasks[i].prompt[-1].content) == 1.0}
    kept = {t.task_id for t in read_records(out, Trajectory)}
    assert sums and kept == candidates - sums  # exactly the tasks the student solves are gone
    assert asked == 2 * len(candidates)  # student_samples per candidate task, and no other
    report = json.loads((tmp_path / "curated" / "train.dropped.json").read_text())
    assert report["dropped"]["student pass rate 1.00 outside [0, 0.75]"] == len(sums)
    assert sum(report["dropped"].values()) == len(tasks) - len(kept)
    assert report["student_pass_rate"]["tasks_outside"] == len(sums) and report["student_pass_rate"]["samples"] == asked
    # the student's samples were paid for: the curate stage's costs.json entry bills them
    cost = json.loads((tmp_path / "costs.json").read_text())["stages"]["curate:train"]["api"]
    assert cost["requests"] == asked and cost["tokens_in"] == 20 * asked


def test_tasks_the_student_cannot_be_asked_are_kept_and_said_to_be_unmeasured(tmp_path, caplog):
    with FakeAPI(teacher=Teacher(pass_rate=student_rate)) as api:
        recipe = student_recipe(tmp_path, api, samples=1, train=20)
        path = generate.run(recipe)
        teacher = read_records(path, Trajectory)
        path.unlink()
        with JsonlAppender(path) as writer:  # data of one's own: tasks the recipe's train split does not hold
            for t in teacher:
                writer.append(t.model_copy(update={"task_id": f"mine/{t.task_id}"}))
        with caplog.at_level(logging.WARNING, logger="warmstart.stages.curate"):
            out = curate.run(recipe)
    kept = read_records(out, Trajectory)
    assert kept and all(t.task_id.startswith("mine/") for t in kept)
    report = json.loads((tmp_path / "curated" / "train.dropped.json").read_text())
    assert report["student_pass_rate"]["tasks_not_measured"] == len({t.task_id for t in kept})
    assert any("task(s) kept unmeasured" in r.getMessage() for r in caplog.records)
