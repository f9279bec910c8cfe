"""What the report says of money, gains, times and curves as a reader takes them (review 97): a priced part
beside a price unknown, judges' dollars in a row's API $, no cost per point of a gain within noise, a
one-step curve, a time no clock can say, a hand-edited metrics line, a long run's elapsed time, and an
interval of pass-or-fail tasks never narrower than Wilson's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from warmstart.errors import WarmstartError
from warmstart.metrics.bootstrap import bootstrap_mean, wilson
from warmstart.report.attempts import utc
from warmstart.report.figures import training_curves
from warmstart.report.html import api_line, cost_cells
from warmstart.report.lineage import Lineage
from warmstart.runs.costs import CostLedger
from warmstart.runs.progress import clock
from warmstart.runs.tracking import read_metrics
from warmstart.types import Usage

SFT = {"sft:student": {"data": "train"}, "curate:train": {"source": "teacher"}}


def spend(usd: float | None, **more) -> dict:
    return {"api": True, "requests": 2, "accepted": 10, "usd": usd, "unknown_price_models": [], **more}


def test_the_priced_part_is_said_beside_a_price_unknown():
    ledger = CostLedger({"gpt-4o": {"input": 2.5, "output": 10.0}}, False)
    ledger.add_usage(Usage(tokens_in=1_000_000, tokens_out=1_000_000), "gpt-4o")
    ledger.add_usage(Usage(tokens_in=10, tokens_out=10), "my-finetune")
    line = api_line({"generate:teacher": {"api_cost": ledger.summary()}})
    assert "API dollars: $12.5000 priced, and replies of my-finetune, whose price is unknown" in line  # had: $0
    assert "generate:teacher $12.5000 + price unknown" in line


def test_a_rows_api_dollars_hold_the_data_judges_and_its_own_stages_judge():
    stages = {
        **SFT,
        "generate:teacher": {"api_cost": spend(1.0), "api_cost_judge": spend(5.0)},
        "grpo:student-grpo": {"api_cost_judge": spend(20.0)},
    }
    lineage = Lineage(stages=["grpo:student-grpo", "sft:student"], seconds=18.0, flops=2e12)
    cells = cost_cells(0.6, 0.1, lineage, stages)
    assert cells[2] == "26.0000"  # the teacher's replies alone had been shown: 1.0000
    assert cells[4] == "0.5200"  # dollars per point: 26 / 50
    stages["generate:teacher"]["api_cost_judge"] = spend(None, unknown_price_models=["judge-x"])
    assert cost_cells(0.6, 0.1, lineage, stages)[2] == "price unknown"


def test_no_cost_per_point_of_a_gain_within_noise():
    stages = {**SFT, "generate:teacher": {"api_cost": spend(1.0)}}
    lineage = Lineage(stages=["sft:student"], seconds=9.0, flops=1e12)
    assert cost_cells(0.105, 0.1, lineage, stages, within_noise=True)[3:] == ["within noise", "within noise"]
    assert cost_cells(0.5, 0.1, lineage, stages)[3:] == ["0.2", "0.0250"]


def test_one_logged_step_is_a_curve_of_one_point():
    assert training_curves([{"stage": "sft:student", "step": 1, "loss": 2.0}]) is not None  # had: none at all


def test_a_time_no_clock_can_say_is_said_so():
    assert utc(1e300).startswith("time out of range")  # had: OverflowError out of `warmstart report`
    assert utc(0.0) == "1970-01-01 00:00 UTC"


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"step": 1, "loss": 1.0}, "without its stage's name"),
        ({"stage": "sft:s", "step": "3", "loss": 1.0}, "step that is not an integer"),
        ({"stage": "sft:s", "step": None}, "step that is not an integer"),
        ({"stage": "sft:s", "step": 1, "loss": "x"}, "'loss' is not a number"),
    ],
)
def test_a_hand_edited_metrics_line_is_one_error_naming_it(tmp_path: Path, record, problem):
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"stage": "sft:s", "step": 0}) + "\n" + json.dumps(record) + "\n"
    )
    with pytest.raises(WarmstartError, match=rf"metrics.jsonl:2: .*{re.escape(problem)}"):
        read_metrics(tmp_path)


def test_a_non_finite_scalar_is_written_as_json_null(tmp_path: Path):
    from warmstart.runs.tracking import Tracker

    tracker = Tracker(tmp_path, "sft:s", [], "warmstart", {})
    tracker.log(1, {"loss": float("nan"), "kl": 0.5})
    tracker.close()
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line)["loss"] is None and "NaN" not in line  # json.dumps had written NaN: no JSON


def test_elapsed_time_past_a_day_keeps_its_hours():
    assert clock(25 * 3600 + 61) == "25:01:01"  # had wrapped to 01:01:01
    assert clock(59.9) == "00:00:59"


def test_pass_or_fail_tasks_intervals_grow_with_their_passes():
    """1 of 200 tasks had read [0, 0.015], narrower than 0 of 200's Wilson [0, 0.019]."""
    highs = [bootstrap_mean([1.0] * passed + [0.0] * (200 - passed), bounds=(0.0, 1.0)).high for passed in range(6)]
    assert highs == sorted(highs) and highs[1] >= wilson(1 / 200, 200, (0.0, 1.0))[1]
    lows = [bootstrap_mean([0.0] * failed + [1.0] * (200 - failed), bounds=(0.0, 1.0)).low for failed in range(6)]
    assert lows == sorted(lows, reverse=True)


def test_fractional_task_values_keep_their_bootstrap_interval():
    values = [0.75, 1.0] * 100  # four samples a task: not a proportion of tasks, Wilson's would be far wider
    interval = bootstrap_mean(values, bounds=(0.0, 1.0))
    assert interval.high - interval.low < wilson(0.875, 200, (0.0, 1.0))[1] - wilson(0.875, 200, (0.0, 1.0))[0]


def test_a_failure_block_cuts_a_long_prompt_and_says_so():
    from warmstart.report.html import PROMPT_CHARS, failure_block

    record = {
        "task_id": "swe/1",
        "messages": [{"role": "user", "content": "x" * 50_000}, {"role": "assistant", "content": "y" * 2_000}],
        "verdict": {"passed": False, "details": {"reason": "tests failed"}},
    }
    block = failure_block(record)
    assert len(block) < PROMPT_CHARS + 1_000 + 200  # the whole prompt had been on the page, once per failure
    assert f"[... {50_000 - PROMPT_CHARS:,} more characters]" in block and "tests failed" in block
