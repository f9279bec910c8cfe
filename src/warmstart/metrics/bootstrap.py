"""Uncertainty of pass@k: bootstrap confidence intervals over tasks, and paired differences of policies.

A policy's pass@k is the mean over tasks of each task's unbiased pass@k; its uncertainty comes mostly from
which tasks were drawn, so the interval resamples tasks (with replacement) and takes the percentiles of
the resampled means. Two policies evaluated on the same tasks are compared task by task: the mean of the
per-task differences, with the same resampling of tasks applied to both, is far tighter than two separate
intervals would suggest, since a task that is hard for one is usually hard for the other. A difference
whose interval holds 0 is "within noise".

Seeded (`random.Random`), so a report is reproducible; 2,000 resamples put the 2.5 % and 97.5 %
percentiles within about ±0.005 of their limit for the sizes here (200 tasks).

Where every task gave the same value (no task passed, every task passed, one task) the resampled means are
all equal and the percentile interval has no width: it would say the tasks prove the value exactly. Such
an interval is the Wilson score interval instead, of that value as a proportion of as many trials as there
are tasks: 0 of 200 tasks is [0, 0.019], one task is as wide as one trial allows. A paired difference
whose tasks all moved alike is the difference of two such intervals, of the share of tasks gained and the
share lost (one of them 0): two policies that both solved none of 200 tasks differ by 0 within ±0.019.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    value: float  # the estimate on the tasks as drawn
    low: float
    high: float

    @property
    def within_noise(self) -> bool:
        """For a difference: the interval holds 0."""
        return self.low <= 0.0 <= self.high

    def as_list(self) -> list[float]:
        return [round(self.low, 4), round(self.high, 4)]


def bootstrap_mean(
    values: list[float],
    seed: int = 0,
    resamples: int = RESAMPLES,
    level: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> Interval:
    """The mean of `values` (one per task) with a percentile bootstrap interval over tasks. `bounds`: the
    range the values lie in (a pass rate's [0, 1]), for the interval of values that are all equal (module
    docstring); without, such an interval keeps no width."""
    if not values:
        raise ValueError("a bootstrap interval of no tasks")
    rng, n = random.Random(seed), len(values)
    mean = sum(values) / n
    if bounds is not None and max(values) == min(values):
        low, high = wilson(mean, n, bounds)
        return Interval(mean, low, high)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    cut = (1.0 - level) / 2
    low, high = means[int(cut * resamples)], means[min(resamples - 1, int((1.0 - cut) * resamples))]
    return Interval(mean, low, high)


def wilson(value: float, n: int, bounds: tuple[float, float], z: float = 1.959964) -> tuple[float, float]:
    """The 95 % Wilson score interval of `value` read as a proportion of `n` trials on the scale `bounds`."""
    lo, hi = bounds
    p = (value - lo) / (hi - lo)
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if p <= 0.0 else max(0.0, center - half)  # at the ends exactly (no float residue)
    high = 1.0 if p >= 1.0 else min(1.0, center + half)
    return lo + (hi - lo) * low, lo + (hi - lo) * high


def paired_difference(a: dict[str, float], b: dict[str, float], seed: int = 0) -> Interval:
    """mean(a - b) over the tasks both have (task id -> per-task value in [0, 1]), with its interval."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError("a paired difference of policies with no task in common")
    differences = [a[t] - b[t] for t in shared]
    if max(differences) == min(differences):  # every task moved alike: resampling cannot vary
        return alike_difference(differences[0], len(differences))
    return bootstrap_mean(differences, seed)


def alike_difference(difference: float, n: int) -> Interval:
    """The interval of a difference every one of `n` tasks showed: the Wilson interval of the share gained
    minus that of the share lost (module docstring)."""
    gain_low, gain_high = wilson(max(difference, 0.0), n, (0.0, 1.0))
    loss_low, loss_high = wilson(max(-difference, 0.0), n, (0.0, 1.0))
    return Interval(difference, gain_low - loss_high, gain_high - loss_low)
