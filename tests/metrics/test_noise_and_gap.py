"""What eval writes beside a difference and a gap: "within noise" as a reader of results.json derives it from the
interval written there, and "gap closed" only where the teacher's lead over the base is a measurement."""

from __future__ import annotations

from types import SimpleNamespace

from warmstart.metrics.tally import PassTally, compare
from warmstart.stages.evaluate import gap_closed

K = 5


def row(counts: list[int]) -> dict:
    """An eval row whose task i passed counts[i] of K samples."""
    tally = PassTally([f"t{i}" for i in range(len(counts))])
    for i, passed in enumerate(counts):
        for sample in range(K):
            verdict = SimpleNamespace(infra_error=None, passed=sample < passed, details={})
            tally.add(SimpleNamespace(id=f"t{i}", meta={}), SimpleNamespace(usage=[], messages=[]), verdict)
    return {"policy": "x", **tally.row(K, False), "seconds": 1.0}


def test_equal_pass_counts_summed_in_another_order_close_no_gap():
    """51 of 100 samples each: summed per task in another order, base was 0.5099999999999999 and the teacher
    0.51, and a student at 0.6 had closed 81,064,793,292,668,900 % of a gap of 1e-16 (review 83)."""
    teacher = row([0, 2, 4, 3, 3, 2, 3, 2, 4, 1, 4, 1, 2, 1, 0, 4, 2, 4, 5, 4])
    base = row([2, 4, 5, 0, 2, 4, 1, 0, 4, 1, 3, 2, 2, 4, 2, 4, 4, 3, 1, 3])
    assert teacher["pass@1"] != base["pass@1"]  # the residue itself: the sums' order
    results = {"base": base, "teacher": teacher, "student": row([3] * 20)}
    assert gap_closed(results, "student") is None


def test_a_lead_within_noise_closes_no_gap_and_a_real_one_does():
    base, student = row([1] * 10 + [2] * 10), row([3] * 20)
    assert gap_closed({"base": base, "teacher": row([2] * 10 + [1] * 10), "student": student}, "student") is None
    gap = gap_closed({"base": base, "teacher": row([5] * 20), "student": student}, "student")
    assert abs(gap - (0.6 - 0.3) / (1.0 - 0.3)) < 1e-9


def test_within_noise_is_that_of_the_interval_as_written():
    """Its lower end 4e-5 before it was rounded to 4 places: written [0.0, 0.05] with within_noise false."""
    differences = {"up_two": (3, (2, 0)), "up_four": (5, (4, 0)), "down_two": (3, (0, 2))}
    a, b, i = {}, {}, 0
    for count, (passed_a, passed_b) in differences.values():
        for _ in range(count):
            a[f"t{i}"], b[f"t{i}"], i = [4, passed_a], [4, passed_b], i + 1
    while i < 200:
        a[f"t{i}"], b[f"t{i}"], i = [4, 2], [4, 2], i + 1
    comparison = compare({"per_task": a}, {"per_task": b})
    assert comparison["ci"][0] == 0.0 and comparison["within_noise"], comparison


def test_rows_that_scored_no_task_in_common_are_not_compared(caplog):
    """Two rows whose scored tasks do not meet (failed requests under a raised eval.max_error_rate): a paired
    difference had raised ValueError out of eval after every row was paid for, its spend unrecorded."""
    import logging

    from warmstart.stages.evaluate import comparisons

    base, teacher = row([2] * 4 + [0] * 4), row([0] * 4 + [5] * 4)
    base["per_task"] = {t: c for t, c in base["per_task"].items() if t in {"t0", "t1", "t2", "t3"}}
    teacher["per_task"] = {t: c for t, c in teacher["per_task"].items() if t not in base["per_task"]}
    assert compare(teacher, base) is None
    results = {"base": base, "teacher": teacher, "student": row([3] * 8)}
    with caplog.at_level(logging.WARNING, logger="warmstart.stages.evaluate"):
        compared = comparisons(results, [])
    assert [(c["a"], c["b"]) for c in compared] == [("student", "base")]
    assert "teacher and base scored no task in common" in caplog.text
    assert gap_closed(results, "student") is None
