"""curate's fingerprint with a student pass rate, and teacher pass rates on data generate stopped asking by
outcome (generate.stop_after_verified)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import small_recipe
from warmstart.errors import WarmstartError
from warmstart.stages import curate, generate


@pytest.fixture
def student_calls(monkeypatch) -> list[set[str]]:
    """Each time curate measures the student: the tasks it asks (no model is sampled)."""
    calls: list[set[str]] = []

    def measured(recipe, task_ids):
        calls.append(set(task_ids))
        return {}, [], {"api": False}

    monkeypatch.setattr(curate, "student_pass_rates", measured)
    return calls


def fake_model(path: Path, weights: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_text(weights)
    return path


def test_what_the_student_pass_rate_measured_with_is_in_the_fingerprint(tmp_path, student_calls):
    first, second = fake_model(tmp_path / "a", "weights a"), fake_model(tmp_path / "b", "weights b")
    base = ["curate.student_pass_rate=[0.0, 0.75]", "generate.samples_per_task=1"]
    run = tmp_path / "run"
    generate.run(small_recipe(run, *base, train=20))

    def curated(*overrides: str) -> int:
        curate.run(small_recipe(run, *base, *overrides, train=20))
        return len(student_calls)

    assert curated(f"sft.student='{first}'") == 1  # `base`: sft.student
    assert curated(f"sft.student='{first}'") == 1  # nothing changed: done
    assert curated(f"sft.student='{second}'") == 2  # another base model
    assert curated(f"sft.student='{second}'", "eval.temperature=0.1") == 3  # sampled otherwise
    assert curated(f"sft.student='{second}'", "eval.temperature=0.1", "eval.max_new_tokens=8") == 4
    assert curated(f"curate.student='{first}'") == 5
    (first / "model.safetensors").write_text("weights a, trained again")
    assert curated(f"curate.student='{first}'") == 6  # the same path, other weights
    assert curated(f"curate.student='{first}'") == 6


def test_without_a_student_pass_rate_the_fingerprint_ignores_students_and_sampling(tmp_path, student_calls):
    run = tmp_path / "run"
    generate.run(small_recipe(run, train=20))
    curate.run(small_recipe(run, train=20))
    fingerprint = json.loads((run / "manifest.json").read_text())["stages"]["curate:train"]["fingerprint"]
    curate.run(small_recipe(run, "eval.temperature=0.1", "sft.student='elsewhere'", train=20))
    entry = json.loads((run / "manifest.json").read_text())["stages"]["curate:train"]
    assert entry["fingerprint"] == fingerprint and not student_calls


def stop_recipe(run: Path, k: int):
    return small_recipe(
        run,
        "env.options.teacher_error_rate=0.5",
        "generate.samples_per_task=1",
        f"generate.stop_after_verified={k}",
        "generate.max_samples_per_task=4",
        "curate.teacher_pass_rate=[0.2, 0.8]",
        train=200,
    )


def test_stop_after_verified_one_cannot_measure_a_teacher_pass_rate(tmp_path):
    recipe = stop_recipe(tmp_path / "run", 1)
    generate.run(recipe)
    with pytest.raises(WarmstartError, match="generate.stop_after_verified"):
        curate.run(recipe)


def test_stop_after_verified_rates_read_only_the_first_samples_of_each_task(tmp_path):
    recipe = stop_recipe(tmp_path / "run", 2)
    generate.run(recipe)
    curate.run(recipe)
    rates = json.loads((tmp_path / "run" / "curated" / "train.dropped.json").read_text())["teacher_pass_rate"]
    # A task asked until 2 passed: its first 2 samples were asked whatever they scored; read alone, a task
    # the teacher solves half the time is at 0.5, not at 2/2 (1.00) or 2/3 as its luck went.
    assert set(rates["tasks_per_sample_count"]) == {"2"}
    assert rates["first_samples_of_each_task"] == 2
    assert set(rates["tasks_per_rate"]) <= {"0.00", "0.50", "1.00"} and rates["tasks_per_rate"]["0.50"] > 0
