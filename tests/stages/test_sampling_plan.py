"""Which samples a budget-aware generate asks for, round by round, from known outcomes."""

from __future__ import annotations

import pytest

from warmstart.config import GenerateConfig
from warmstart.envs.arithmetic import Arithmetic
from warmstart.stages.sampling_plan import SamplingPlan
from warmstart.types import Provenance, Trajectory, Verdict

TASKS = Arithmetic().tasks("train", 3, 0)


def outcome(task_id: str, index: int, passed: bool | None) -> Trajectory:
    """A sample's record: passed, failed, or (None) ended in an error."""
    return Trajectory(
        task_id=task_id,
        sample_index=index,
        policy="t",
        messages=[],
        provenance=Provenance(provider="openai", model="m", created=0.0),
        verdict=None if passed is None else Verdict(reward=float(passed), passed=passed),
        error="request failed" if passed is None else None,
    )


def play(cfg: GenerateConfig, answers: dict[str, list[bool | None]]) -> dict[str, list[int]]:
    """Run the plan to its end with scripted outcomes per task; the indexes asked in each round, per task."""
    plan, rounds = SamplingPlan(cfg, TASKS, []), {t.id: [] for t in TASKS}
    while requests := plan.next_round():
        for r in requests:
            rounds[r.task.id].append(r.sample_index)
            plan.record(outcome(r.task.id, r.sample_index, answers[r.task.id][r.sample_index]))
    return rounds


def test_plain_mode_asks_every_sample_in_one_round():
    cfg = GenerateConfig(samples_per_task=3)
    asked = play(cfg, {t.id: [False] * 3 for t in TASKS})
    assert all(indexes == [0, 1, 2] for indexes in asked.values())


def test_stop_after_verified_stops_a_task_at_its_kth_pass_and_caps_the_rest():
    cfg = GenerateConfig(stop_after_verified=2, max_samples_per_task=5)
    a, b, c = (t.id for t in TASKS)
    asked = play(cfg, {a: [True, True, True, True, True], b: [False, True, False, True, True], c: [False] * 5})
    assert asked[a] == [0, 1]  # two passes in its first round: done
    assert asked[b] == [0, 1, 2, 3]  # 1 pass after 2, then one more each round until the second
    assert asked[c] == [0, 1, 2, 3, 4]  # never passes: up to the maximum


def test_adaptive_stops_tasks_decided_by_the_probe_and_samples_uncertain_ones():
    cfg = GenerateConfig(samples_per_task=2, max_samples_per_task=6, adaptive=True)
    a, b, c = (t.id for t in TASKS)
    asked = play(cfg, {a: [True] * 6, b: [False] * 6, c: [True, False, True, True, False, True]})
    assert asked[a] == [0, 1] and asked[b] == [0, 1]
    assert asked[c] == [0, 1, 2, 3, 4, 5]


def test_an_errored_sample_is_not_an_outcome_and_is_asked_again_by_a_rerun():
    cfg = GenerateConfig(stop_after_verified=1, max_samples_per_task=3)
    a = TASKS[0].id
    earlier = [outcome(a, 0, None), outcome(a, 1, False)]  # sample 0 ended in an error in an earlier run
    plan = SamplingPlan(cfg, TASKS[:1], earlier)
    assert [r.sample_index for r in plan.next_round()] == [0]  # the errored index first, the lowest free


def test_a_teacher_that_keeps_erroring_is_not_asked_in_a_loop():
    cfg = GenerateConfig(stop_after_verified=1, max_samples_per_task=4)
    asked = play(cfg, {t.id: [None] * 4 for t in TASKS})
    assert all(indexes == [0, 1, 2, 3] for indexes in asked.values())


@pytest.mark.parametrize("adaptive", [False, True])
def test_the_summary_counts_what_was_asked(adaptive):
    cfg = GenerateConfig(samples_per_task=2, max_samples_per_task=4, adaptive=adaptive, stop_after_verified=1)
    plan = SamplingPlan(cfg, TASKS, [])
    for r in plan.next_round():
        plan.record(outcome(r.task.id, r.sample_index, True))
    summary, first_round = plan.summary(), 2 if adaptive else 1  # the probe; or the one pass k asks for
    assert summary["samples"] == summary["verified_samples"] == 3 * first_round and summary["tasks_verified"] == 3
    assert plan.next_round() == []  # every task passed: decided


def test_adaptive_asks_its_probe_whole_before_any_more_whatever_k_asks_for():
    """k = 3 passes wanted, a probe of 2: a task whose probe never passed gets no third sample."""
    cfg = GenerateConfig(samples_per_task=2, max_samples_per_task=6, adaptive=True, stop_after_verified=3)
    plan, (a, b, c) = SamplingPlan(cfg, TASKS, []), (t.id for t in TASKS)
    first = plan.next_round()
    assert sorted((r.task.id, r.sample_index) for r in first) == sorted((t, i) for t in (a, b, c) for i in (0, 1))
    answers = {a: [False] * 6, b: [True] * 6, c: [True, False, True, True, True, True]}
    asked = play(cfg, answers)
    assert asked[a] == [0, 1]  # never passed in its probe: no more, though k asked for 3 passes
    assert asked[b] == [0, 1]  # always passed in its probe
    assert asked[c] == [0, 1, 2, 3]  # sometimes failed: on until its third pass


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"max_samples_per_task": 4}, "neither stop_after_verified nor adaptive is set"),
        ({"samples_per_task": 2, "max_samples_per_task": 4}, "neither stop_after_verified nor adaptive is set"),
        ({"adaptive": True, "max_samples_per_task": 4}, "adaptive needs a probe of samples_per_task >= 2"),
    ],
)
def test_settings_a_mode_would_ignore_are_refused(settings, words):
    with pytest.raises(ValueError, match=words):
        GenerateConfig(**settings)
    GenerateConfig(samples_per_task=3, max_samples_per_task=3)  # the plain mode's own count: harmless
