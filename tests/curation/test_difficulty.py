"""The teacher's pass rate per task, from its judged samples only."""

from __future__ import annotations

from warmstart.curation.difficulty import PassRate, outside_reason, pass_rates, summary
from warmstart.types import Message, Provenance, Trajectory, Verdict


def sample(task: str, index: int, passed: bool | None, infra: bool = False, error: bool = False) -> Trajectory:
    verdict = (
        None if passed is None else Verdict(reward=float(passed), passed=passed, infra_error="x" if infra else None)
    )
    return Trajectory(
        task_id=task,
        sample_index=index,
        policy="reference",
        messages=[Message(role="user", content="q")],
        verdict=verdict,
        provenance=Provenance(provider="reference", model="m", created=0.0),
        error="boom" if error else None,
    )


def test_only_judged_samples_count():
    samples = [
        sample("a", 0, True),
        sample("a", 1, False),
        sample("a", 2, True, infra=True),  # the verifier could not judge: says nothing of the task
        sample("a", 3, None),  # never verified
        sample("b", 0, True),
        sample("b", 1, True),
        sample("c", 0, False, error=True),  # a policy error
    ]
    assert pass_rates(samples) == {"a": PassRate(1, 2), "b": PassRate(2, 2)}


def test_outside_reason_names_the_rate_and_the_range():
    assert outside_reason(PassRate(4, 4), (0.2, 0.8)) == "teacher pass rate 1.00 outside [0.2, 0.8]"
    assert outside_reason(PassRate(0, 3), (0.2, 0.8)) == "teacher pass rate 0.00 outside [0.2, 0.8]"
    assert outside_reason(PassRate(1, 4), (0.25, 0.75)) is None  # the bounds are inside
    assert outside_reason(PassRate(3, 4), (0.25, 0.75)) is None
    assert outside_reason(None, (0.2, 0.8)) is None


def test_summary_counts_tasks_per_rate():
    rates = {"a": PassRate(1, 4), "b": PassRate(4, 4), "c": PassRate(4, 4), "d": PassRate(0, 2)}
    assert summary(rates, (0.2, 0.8)) == {
        "tasks": 4,
        "tasks_per_rate": {"0.00": 1, "0.25": 1, "1.00": 2},
        "tasks_per_sample_count": {"2": 1, "4": 3},
        "range": [0.2, 0.8],
        "tasks_outside": 3,
    }
    assert summary(rates, None)["range"] is None and "tasks_outside" not in summary(rates, None)
