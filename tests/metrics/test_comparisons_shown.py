"""What a reader sees of pass@1 and its differences: an interval the value lies in, and a difference that says
over how many tasks it is where the two rows did not score the same ones."""

from __future__ import annotations

from warmstart.metrics.tally import compare, comparison_note
from warmstart.report.html import comparisons_table
from warmstart.stages.evaluate import fmt, print_comparisons


def test_a_value_is_printed_inside_its_interval():
    # 199 of 200 tasks passed every sample, one 3 of 4: pass@1 0.999 [0.9962, 1.0] had printed [1.00, 1.00].
    assert fmt(0.9988, [0.9962, 1.0]) == "0.999 [0.996, 1.000]"
    assert fmt(0.0013, [0.0, 0.0038]) == "0.001 [0.000, 0.004]"


def test_a_difference_over_fewer_tasks_than_its_rows_says_so(capsys):
    # Row b lost its 100 hard tasks to infra errors: its pass@1 is over the easy half only, a's over all 200.
    easy = {f"e{i}": [4, 4 if i % 4 else 1] for i in range(100)}
    hard = {f"h{i}": [4, 0] for i in range(100)}
    a = {"per_task": {**easy, **hard}}
    b = {"per_task": {t: [4, 2] for t in easy}}
    c = {"a": "a", "b": "b", **compare(a, b)}
    assert (c["tasks"], c["tasks_either"]) == (100, 200)
    assert comparison_note(c).endswith("over the 100 of 200 tasks both scored")
    assert "over the 100 of 200 tasks both scored" in comparisons_table([c])
    print_comparisons([c])
    assert "100 of 200" in capsys.readouterr().out
    same = {"a": "a", "b": "a2", **compare(a, {"per_task": dict(a["per_task"])})}
    assert comparison_note(same) == "within noise"  # the same tasks: nothing more to say
    assert comparison_note({"diff": 0.1, "ci": [0.05, 0.15], "within_noise": False}) == ""  # results before the keys
