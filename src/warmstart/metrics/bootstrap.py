"""Uncertainty of pass@k: bootstrap confidence intervals over tasks, and paired differences of policies.

A policy's pass@k is the mean over tasks of each task's unbiased pass@k; its uncertainty comes mostly from
which tasks were drawn, so the interval resamples tasks (with replacement) and takes the percentiles of
the resampled means. Two policies evaluated on the same tasks are compared task by task: the mean of the
per-task differences, with the same resampling of tasks applied to both, is far tighter than two separate
intervals would suggest, since a task that is hard for one is usually hard for the other. A difference
whose interval holds 0 is "within noise".

Seeded (`random.Random`), so a report is reproducible; 2,000 resamples put the 2.5 % and 97.5 %
percentiles within about ±0.005 of their limit for the sizes here (200 tasks).

The percentile interval is too narrow over few tasks: its resampled means spread as the values' sd x
sqrt((n - 1) / n) / sqrt(n), with a normal's 1.96 where Student's t with n - 1 degrees of freedom applies.
Two policies with the same per-task pass rates, 400 trials each, were called apart ("not within noise")
in 14.5 % of trials at 5 tasks and 7-8 % at 10-50, against the 5 % a 95 % interval allows; 2 tasks that
gained +1/4 and +2/4 were called apart where 2 that both gained +2/4 were not. So no interval is narrower
than Student's t interval of the same values, mean +- t x sd / sqrt(n) (held to the values' range, where
known): over 200 tasks the two differ by ~1 % of their width, over 3 tasks the t interval is ~3x wider.

Where every task passed or failed whole (a proportion of tasks), the interval is no narrower than Wilson's
either: near 0 and 1 the percentile and t intervals of such values cover less than 95 % (at 1 of 200
tasks they read [0, 0.015], narrower than the [0, 0.019] of 0 of 200).

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


# Student's t 97.5 % quantiles by degrees of freedom (a 95 % two-sided interval); past 30 the expansion in
# `t_quantile`. From any table of the t distribution.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)
T_975 += (2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z_975 = 1.959964


def bootstrap_mean(
    values: list[float],
    seed: int = 0,
    resamples: int = RESAMPLES,
    bounds: tuple[float, float] | None = None,
) -> Interval:
    """The mean of `values` (one per task) with a 95 % percentile bootstrap interval over tasks, widened to
    Student's t interval where that is wider (module docstring). `bounds`: the range the values lie in (a
    pass rate's [0, 1]), which holds the interval, and gives values that are all equal theirs (module
    docstring); without, such an interval keeps no width."""
    if not values:
        raise ValueError("a bootstrap interval of no tasks")
    n = len(values)
    mean = sum(values) / n
    if bounds is not None and alike(values):
        low, high = wilson(mean, n, bounds)
        return Interval(mean, low, high)
    low, high = percentile_range(values, lambda sample: sum(sample) / n, seed, resamples)
    if n > 1:
        half = t_quantile(n - 1) * math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
        low, high = min(low, mean - half), max(high, mean + half)
    if bounds is not None and at_bounds(values, bounds):  # pass or fail per task: no narrower than Wilson's
        wilson_low, wilson_high = wilson(mean, n, bounds)
        low, high = min(low, wilson_low), max(high, wilson_high)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high)


def at_bounds(values: list[float], bounds: tuple[float, float]) -> bool:
    """Every value one of the two bounds (each task passed or failed whole): proportions, whose percentile
    and t intervals undercover near 0 and 1 (1 of 200 tasks had read [0, 0.015] where 0 of 200 read [0,
    0.019])."""
    return all(min(abs(v - bounds[0]), abs(v - bounds[1])) <= 1e-12 for v in values)


def percentile_range(items: list, statistic, seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float]:
    """The 2.5 % and 97.5 % percentiles of `statistic` over `resamples` resamples of `items` with replacement
    (seeded: the same items give the same range)."""
    rng = random.Random(seed)
    draws = sorted(statistic(rng.choices(items, k=len(items))) for _ in range(resamples))
    return draws[int(0.025 * resamples)], draws[min(resamples - 1, int(0.975 * resamples))]


def alike(values: list[float]) -> bool:
    """Every value the same, but for float residue: +1 of 10 samples is 0.3 - 0.1 on one task and 0.5 - 0.3
    on another, which differ in their last bit."""
    return max(values) - min(values) <= 1e-12


def t_quantile(df: int) -> float:
    """Student's t 97.5 % quantile with `df` degrees of freedom: the table, then the Cornish-Fisher
    expansion around the normal's (off by < 1e-4 past 30)."""
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


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
    if alike(differences):  # every task moved alike: resampling cannot vary
        return alike_difference(sum(differences) / len(differences), len(differences))
    return bootstrap_mean(differences, seed, bounds=(-1.0, 1.0))


def alike_difference(difference: float, n: int) -> Interval:
    """The interval of a difference every one of `n` tasks showed: the Wilson interval of the share gained
    minus that of the share lost (module docstring)."""
    gain_low, gain_high = wilson(max(difference, 0.0), n, (0.0, 1.0))
    loss_low, loss_high = wilson(max(-difference, 0.0), n, (0.0, 1.0))
    return Interval(difference, gain_low - loss_high, gain_high - loss_low)
