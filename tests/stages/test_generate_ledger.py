"""generate's bookkeeping where runs stop, fail or are asked again: an error no rerun will ask again does not
fail the stage for ever, and costs.json keeps every dollar and second that was spent (cache hits, a
failed run's paid replies, `warmstart estimate`'s pilot), with an estimate whose range holds its point.

The teacher is a loopback server (tests/fake_api.py) answering through the official openai SDK."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_api import FakeAPI
from helpers import small_recipe
from warmstart.errors import WarmstartError
from warmstart.runs.jsonl import read_records
from warmstart.stages import generate
from warmstart.stages.estimate import TaskCost, project
from warmstart.types import Message, Task, Trajectory

FAST = ["api.backoff_s=0.05", "api.timeout_s=5.0", "api.max_retries=2"]
ONE_AT_A_TIME = ["generate.concurrency=1", "api.concurrency=1"]


def recipe_for(run_dir: Path, api: FakeAPI, *overrides: str, train: int = 4):
    prices = run_dir.parent / "prices.toml"
    prices.write_text('[models."fake-model"]\ninput = 1.0\noutput = 4.0\n')
    teacher = f"generate.teacher='openai:fake-model@{api.url}/v1'"
    return small_recipe(run_dir, teacher, f"api.prices='{prices}'", *FAST, *overrides, train=train)


def stage_entry(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]["generate:teacher"]


def costs(run_dir: Path) -> dict:
    return json.loads((run_dir / "costs.json").read_text())


def test_an_error_of_a_task_its_other_samples_decided_is_moot_not_a_failure_of_every_rerun(tmp_path):
    """stop_after_verified = 1: the first sample of a task ends in an error, its second passes. No rerun asks
    the first again (the task is decided), so counting its error had left the stage undone for ever (and
    over max_error_rate, failed on every rerun, each sending nothing)."""
    run = tmp_path / "run"
    aware = ("generate.stop_after_verified=1", "generate.max_samples_per_task=3", *ONE_AT_A_TIME)
    with FakeAPI() as api:
        api.faults = ["500"] * 6  # the first two requests fail after their 2 retries each: 2 of 6 rollouts
        generate.run(recipe_for(run, api, *aware))
        entry = stage_entry(run)
        assert (entry.get("status", "done"), entry["errors"], entry["errors_moot"]) == ("done", 0, 2)
        sent = len(api.log)
        generate.run(recipe_for(run, api, *aware))  # done: nothing asked
        assert len(api.log) == sent
    errored = [t for t in read_records(run / "trajectories" / "teacher.jsonl", Trajectory) if t.error]
    assert len(errored) == 2  # kept as written, only not counted


def test_in_plain_mode_an_errored_sample_is_still_an_error_a_rerun_mends(tmp_path):
    run = tmp_path / "run"
    with FakeAPI() as api:
        api.faults = ["500"] * 3
        with pytest.raises(WarmstartError, match="max_error_rate"):
            generate.run(recipe_for(run, api, *ONE_AT_A_TIME, "generate.max_error_rate=0.1"))
        assert stage_entry(run)["errors"] == 1 and "errors_moot" not in stage_entry(run)
        generate.run(recipe_for(run, api, *ONE_AT_A_TIME, "generate.max_error_rate=0.1"))  # asks it again
    assert stage_entry(run)["errors"] == 0


def test_cache_hits_count_every_record_not_the_last_run_only(tmp_path):
    """The ledger's cache hits (every record's) had been replaced by the last run's own count: 4, then 0."""
    run = tmp_path / "run"
    with FakeAPI() as api:
        generate.run(recipe_for(run, api, *ONE_AT_A_TIME))
        (run / "trajectories" / "teacher.jsonl").unlink()  # the records go, the response cache keeps the replies
        api.faults = ["500"] * 3  # the first new task's request fails (2 retries): the next run asks it again
        more = ("generate.max_error_rate=1.0", *ONE_AT_A_TIME)
        generate.run(recipe_for(run, api, *more, train=6))  # 4 from the cache, 1 paid, 1 error
        generate.run(recipe_for(run, api, *more, train=6))  # the error asked again: nothing from the cache
    cost = costs(run)["stages"]["generate:teacher"]["api"]
    records = read_records(run / "trajectories" / "teacher.jsonl", Trajectory)
    assert cost["cache_hits"] == sum(u.from_cache for t in records for u in t.usage) == 4
    assert cost["cache_hits_this_run"] == 0 and cost["trajectories"] == 7


def test_a_failed_run_bills_the_replies_it_paid_for_and_never_wrote(tmp_path):
    """A reply refused as empty (billed by the server) is asked again, and the 401 that answers stops the stage:
    the paid reply is in the journal, not in a record, and had been in no total."""
    run = tmp_path / "run"
    with FakeAPI() as api:
        api.faults = ["empty", "401"]
        with pytest.raises(WarmstartError, match="401"):
            generate.run(recipe_for(run, api, *ONE_AT_A_TIME))
        billed = sum(b["prompt"] * 1.0 + b["completion"] * 4.0 for b in api.billed) / 1e6
    assert billed > 0
    cost = costs(run)
    assert cost["stages"]["generate:teacher"]["api"]["paid_unwritten"] == len(api.billed)
    assert cost["total"]["usd"] == pytest.approx(billed)


def test_the_pilots_seconds_stay_in_the_totals_once_generate_replaces_its_record(tmp_path):
    run = tmp_path / "run"
    with FakeAPI(delay_s=0.05) as api:
        generate.run(recipe_for(run, api, *ONE_AT_A_TIME, train=24), pilot_only=True)
        pilot = stage_entry(run)
        assert pilot["status"] == "pilot"
        generate.run(recipe_for(run, api, *ONE_AT_A_TIME, train=24))
    entry = stage_entry(run)
    assert entry["seconds_before"] == pytest.approx(pilot["seconds"], abs=0.001)
    assert costs(run)["total"]["seconds"] == pytest.approx(entry["seconds"] + pilot["seconds"], abs=0.01)
    assert costs(run)["total"]["seconds_failed"] == 0  # a pilot did not fail


def test_the_actual_bill_of_replies_from_a_model_with_no_price_is_unknown_not_the_asked_models_price(tmp_path):
    run = tmp_path / "run"
    with FakeAPI() as api:
        api.faults = ["other_model"] * 30  # the server says another model answered
        generate.run(recipe_for(run, api, "generate.concurrency=1", train=25))
    stage = costs(run)["stages"]["generate:teacher"]
    assert stage["api"]["usd"] is None and stage["estimate_vs_actual"]["actual"]["usd"] is None


def test_the_estimates_range_is_that_of_its_own_projection_and_holds_it():
    """Short prompts at 0.25 prompt tokens a byte, long ones at 0.45: the projection (tokens per byte as a
    ratio of sums) is right, but the range bootstrapped another estimator (per task rates) and missed it."""
    pilot = [TaskCost(prompt_bytes=400, samples=1, requests=1, tokens_in=100, tokens_out=20)] * 10
    pilot += [TaskCost(prompt_bytes=4000, samples=1, requests=1, tokens_in=1800, tokens_out=20)] * 10

    def task(i: int, size: int) -> Task:
        return Task(id=f"t{i}", env="e", split="train", prompt=[Message(role="user", content="x" * (size - 30))])

    tasks = [task(i, 400) for i in range(500)] + [task(500 + i, 4000) for i in range(500)]
    out = project(pilot, tasks, [], "m", {"m": {"input": 1.0, "output": 4.0}}, False)
    true_usd = 500 * (100 + 80) / 1e6 + 500 * (1800 + 80) / 1e6
    assert out["usd"] == pytest.approx(true_usd, rel=0.01)
    assert out["usd_range"][0] <= out["usd"] <= out["usd_range"][1]
    assert out["usd_range"][0] <= true_usd <= out["usd_range"][1]
    assert project(pilot, tasks, [], "m", {"m": {"input": 1.0, "output": 4.0}}, False) == out  # seeded
