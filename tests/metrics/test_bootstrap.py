"""Bootstrap intervals over tasks and paired differences: they cover what they claim, and pairing helps."""

from __future__ import annotations

import random

import pytest

from warmstart.metrics.bootstrap import bootstrap_mean, paired_difference


def test_the_interval_of_a_constant_is_that_constant():
    interval = bootstrap_mean([0.25] * 50)
    assert interval.value == interval.low == interval.high == 0.25


def test_the_interval_is_reproducible_from_its_seed_and_brackets_the_estimate():
    rng = random.Random(1)
    values = [rng.random() for _ in range(100)]
    assert bootstrap_mean(values, seed=3) == bootstrap_mean(values, seed=3)
    interval = bootstrap_mean(values)
    assert interval.low < interval.value < interval.high


def test_95_percent_intervals_cover_the_true_pass_rate_about_95_percent_of_the_time():
    rng, p, covered, trials = random.Random(0), 0.3, 0, 300
    for trial in range(trials):
        tasks = [float(rng.random() < p) for _ in range(200)]
        interval = bootstrap_mean(tasks, seed=trial, resamples=500)
        covered += interval.low <= p <= interval.high
    assert 0.90 <= covered / trials <= 0.99


def test_a_paired_difference_sees_a_small_gain_that_two_separate_intervals_would_call_noise():
    rng = random.Random(0)
    difficulty = {f"t{i}": rng.random() for i in range(200)}  # tasks differ far more than the policies do
    base = {t: d for t, d in difficulty.items()}
    better = {t: min(1.0, d + 0.03) for t, d in difficulty.items()}
    diff = paired_difference(better, base)
    assert diff.value == pytest.approx(sum(better[t] - base[t] for t in base) / 200) and not diff.within_noise
    a, b = bootstrap_mean(list(better.values())), bootstrap_mean(list(base.values()))
    assert a.low < b.high  # apart, the two intervals overlap
    assert paired_difference(base, dict(base)).within_noise  # a policy against itself: 0, within noise


def test_only_shared_tasks_are_compared_and_none_shared_is_an_error():
    assert paired_difference({"a": 1.0, "b": 0.0}, {"a": 0.5, "c": 1.0}).value == 0.5
    with pytest.raises(ValueError):
        paired_difference({"a": 1.0}, {"b": 1.0})


def test_tasks_that_all_agree_prove_no_exact_value_the_interval_is_wilsons():
    # No task passed out of 200: not "exactly 0" but at most ~1.9 % (the 95 % Wilson bound, 3.84 / 203.84).
    none = bootstrap_mean([0.0] * 200, bounds=(0.0, 1.0))
    assert none.value == 0.0 and none.low == 0.0 and none.high == pytest.approx(1.959964**2 / (200 + 1.959964**2))
    every = bootstrap_mean([1.0] * 20, bounds=(0.0, 1.0))
    assert every.high == 1.0 and 0.8 < every.low < 0.9
    one = bootstrap_mean([1 / 3], bounds=(0.0, 1.0))  # one task: as wide as one trial allows
    assert one.low < 0.05 and one.high > 0.9
    # A difference on one task is no evidence: within noise; on 200 tasks that all moved, it is evidence.
    assert paired_difference({"t": 1 / 3}, {"t": 0.0}).within_noise
    many = paired_difference({f"t{i}": 1.0 for i in range(200)}, {f"t{i}": 0.0 for i in range(200)})
    assert not many.within_noise and 0.95 < many.low < many.high == 1.0
    # Two policies that both solved none of 200 tasks: 0, within the 1.9 % either one's own interval allows.
    nothing = paired_difference({f"t{i}": 0.0 for i in range(200)}, {f"t{i}": 0.0 for i in range(200)})
    assert nothing.within_noise and nothing.high == pytest.approx(-nothing.low) == pytest.approx(none.high)


def test_near_the_boundary_intervals_still_cover_about_95_percent():
    rng, p, covered, trials = random.Random(0), 0.005, 0, 300
    for trial in range(trials):
        tasks = [float(rng.random() < p) for _ in range(200)]  # often no task passes at all
        interval = bootstrap_mean(tasks, seed=trial, resamples=500, bounds=(0.0, 1.0))
        covered += interval.low <= p <= interval.high
    assert covered / trials >= 0.85  # the percentile interval alone, a point at 0 whenever no task passed: ~0.37


def test_the_same_gain_on_every_task_is_alike_whatever_the_float_residue():
    """+1 of 10 samples is 0.3 - 0.1 on one task and 0.5 - 0.3 on another, which differ in their last bit: the
    exact test had sent such a difference to the percentile bootstrap, a point interval, "not within noise"."""
    assert 0.3 - 0.1 != 0.5 - 0.3
    varied = paired_difference({"t1": 3 / 10, "t2": 5 / 10}, {"t1": 1 / 10, "t2": 3 / 10})
    same = paired_difference({"t1": 3 / 10, "t2": 3 / 10}, {"t1": 1 / 10, "t2": 1 / 10})
    assert (varied.low, varied.high, varied.within_noise) == (same.low, same.high, True)
    rng = random.Random(0)
    start = {f"t{i}": rng.randint(0, 4) / 5 for i in range(200)}
    gained = paired_difference({t: p + 1 / 5 for t, p in start.items()}, start)
    assert gained.high - gained.low > 0.1  # not the point [0.2, 0.2]


def test_few_tasks_give_no_stronger_verdict_than_students_t_allows():
    """The percentile interval over few tasks is too narrow (its means spread by sqrt((n-1)/n) of the sd,
    with a normal's 1.96): 2 tasks that gained +1/4 and +2/4 had been "not within noise", [0.25, 0.5], where 2
    that both gained +2/4, stronger evidence, were within noise."""
    weaker = paired_difference({"t1": 0.5, "t2": 0.75}, {"t1": 0.25, "t2": 0.25})
    assert weaker.within_noise and weaker.low == -1.0  # t(1) = 12.7: held to the differences' range
    three = paired_difference({"t1": 0.5, "t2": 0.75, "t3": 1.0}, {"t1": 0.25, "t2": 0.25, "t3": 0.25})
    # mean 0.5, sd 0.25: 0.5 -+ 4.303 x 0.25 / sqrt(3), held at 1
    assert three.within_noise and three.low == pytest.approx(0.5 - 4.303 * 0.25 / 3**0.5) and three.high == 1.0
    two = bootstrap_mean([0.25, 0.5], bounds=(0.0, 1.0))
    assert (two.low, two.high) == (0.0, 1.0)  # a 95 % interval of 2 tasks is not their [min, max]


def test_under_no_difference_few_tasks_are_called_apart_about_5_percent_of_the_time_or_less():
    rng, apart, trials = random.Random(0), 0, 300
    for trial in range(trials):
        rates = [rng.random() for _ in range(5)]  # both policies pass each task at the same rate, 4 samples
        a = {f"t{i}": sum(rng.random() < r for _ in range(4)) / 4 for i, r in enumerate(rates)}
        b = {f"t{i}": sum(rng.random() < r for _ in range(4)) / 4 for i, r in enumerate(rates)}
        if a != b:
            apart += not paired_difference(a, b, seed=trial).within_noise
    assert apart / trials <= 0.08  # the percentile interval alone: ~0.145 (2026-12-07)
