"""Difficulty from the teacher's own samples: the share of a task's judged samples that passed.

A task the teacher always solves teaches little; one it never solves leaves no verified answer (or
only lucky ones). `curate.teacher_pass_rate = [lo, hi]` keeps the tasks in between. A sample counts
when it was judged: a policy error or a verifier infra error says nothing about the task.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..types import Trajectory


@dataclass(frozen=True)
class PassRate:
    passed: int
    judged: int

    @property
    def rate(self) -> float:
        return self.passed / self.judged


def pass_rates(trajectories: list[Trajectory], probe: int | None = None) -> dict[str, PassRate]:
    """Per task with at least one judged sample: how many of its judged samples passed. `probe`: only its
    samples of index below it are read (the first ones, asked whatever the others scored: where generate
    stopped asking a task by its outcomes, the rest would bias its rate upwards)."""
    passed, judged = Counter(), Counter()
    for t in trajectories:
        if probe is not None and t.sample_index >= probe:
            continue
        if t.error is None and t.verdict is not None and t.verdict.infra_error is None:
            judged[t.task_id] += 1
            passed[t.task_id] += t.verdict.passed
    return {task: PassRate(passed[task], judged[task]) for task in judged}


def outside_reason(rate: PassRate | None, bounds: tuple[float, float], whose: str = "teacher") -> str | None:
    """Why a task with this pass rate (by `whose` samples) is dropped, or None if it lies in [lo, hi]."""
    lo, hi = bounds
    if rate is None or lo <= rate.rate <= hi:
        return None  # no judged sample: the trajectory is dropped for its error already
    return f"{whose} pass rate {rate.rate:.2f} outside [{lo:g}, {hi:g}]"


def summary(rates: dict[str, PassRate], bounds: tuple[float, float] | None, whose: str = "teacher") -> dict:
    """Tasks per pass rate (two decimals), samples per task, and how many lie outside `bounds`."""
    by_rate = Counter(f"{r.rate:.2f}" for r in rates.values())
    samples = Counter(r.judged for r in rates.values())
    out = {
        "tasks": len(rates),
        "tasks_per_rate": dict(sorted(by_rate.items())),
        "tasks_per_sample_count": {str(k): v for k, v in sorted(samples.items())},
        "range": list(bounds) if bounds else None,
    }
    if bounds:
        out["tasks_outside"] = sum(outside_reason(r, bounds, whose) is not None for r in rates.values())
    return out
