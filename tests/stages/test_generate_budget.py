"""generate spends the teacher's budget where it teaches: samples stop once a task is decided, a dollar cap
is never crossed, the bill is stated before the run; and what a teacher returns is read honestly (log-probs
that were asked and not sent, reasoning inside <think> tags, the provider's terms on every record).

The teacher is a loopback server (tests/fake_api.py) answering through the official openai SDK, with a
known pass rate per task and, where the bill is measured, replies of realistic, varying length."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fake_api import FakeAPI, Teacher
from helpers import small_recipe, write_recipe_file
from warmstart.errors import WarmstartError
from warmstart.runs.costs import load_terms, terms_of
from warmstart.runs.jsonl import read_records
from warmstart.stages import generate
from warmstart.stages.common import latest_attempts
from warmstart.types import Provenance, Trajectory

FAST = ["api.backoff_s=0.05", "api.timeout_s=5.0", "api.max_retries=2"]
PRICE = "input = 1.0\noutput = 4.0\n"  # dollars per million tokens


def mixed_pass_rate(problem: str) -> float:
    """A task mix with known rates: by the problem's first digit, always (1-4), never (5-6) or half (7-9)."""
    digit = int(next((c for c in problem if c.isdigit() and c != "0"), "1"))  # "0+0": always
    return 1.0 if digit <= 4 else 0.0 if digit <= 6 else 0.5


def recipe_for(run_dir: Path, api: FakeAPI, *overrides: str, train: int = 40):
    prices = run_dir.parent / "prices.toml"
    prices.write_text(f'[models."fake-model"]\n{PRICE}')
    teacher = f"generate.teacher='openai:fake-model@{api.url}/v1'"
    return small_recipe(run_dir, teacher, f"api.prices='{prices}'", *FAST, *overrides, train=train)


def verified_tasks(out: Path) -> set[str]:
    return {t.task_id for t in latest_attempts(read_records(out, Trajectory)) if t.verdict and t.verdict.passed}


def test_stop_after_verified_reaches_the_same_verified_tasks_with_fewer_requests(tmp_path):
    with FakeAPI(teacher=Teacher(pass_rate=mixed_pass_rate)) as api:
        fixed = generate.run(recipe_for(tmp_path / "fixed", api, "generate.samples_per_task=4"))
        fixed_requests = len(api.log)
        aware = generate.run(
            recipe_for(tmp_path / "aware", api, "generate.stop_after_verified=1", "generate.max_samples_per_task=4")
        )
        aware_requests = len(api.log) - fixed_requests
    assert fixed_requests == 40 * 4
    assert verified_tasks(aware) == verified_tasks(fixed) and len(verified_tasks(fixed)) > 20
    # an always-passed task costs 1 request instead of 4; a never-passed one still 4: measured, not assumed
    assert aware_requests < 0.6 * fixed_requests, (aware_requests, fixed_requests)
    per_task = Counter(t.task_id for t in read_records(aware, Trajectory))
    assert set(per_task.values()) <= {1, 2, 3, 4} and max(per_task.values()) == 4


def test_adaptive_sampling_spends_more_only_on_tasks_the_teacher_sometimes_fails(tmp_path):
    with FakeAPI(teacher=Teacher(pass_rate=mixed_pass_rate)) as api:
        recipe = recipe_for(
            tmp_path / "run",
            api,
            "generate.samples_per_task=2",
            "generate.max_samples_per_task=6",
            "generate.adaptive=true",
        )
        out = generate.run(recipe)
        tasks = {t.id: t for t in generate.load_tasks(recipe, generate.make_environment(recipe), "train")}
    samples = Counter(t.task_id for t in read_records(out, Trajectory))
    for task_id, count in samples.items():
        rate = mixed_pass_rate(tasks[task_id].prompt[-1].content)
        if rate in (0.0, 1.0):
            assert count == 2, (task_id, rate, count)  # the probe, no more
        else:
            assert count >= 2  # mixed after its probe: up to 6; a probe that happened to agree: 2
    assert any(count > 2 for count in samples.values())
    summary = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["generate:teacher"]["sampling"]
    assert summary["samples"] == sum(samples.values()) and summary["most_samples_of_a_task"] <= 6


def billed_usd(api: FakeAPI) -> float:
    return sum(b["prompt"] * 1.0 + b["completion"] * 4.0 for b in api.billed) / 1e6


def test_budget_usd_is_never_crossed_and_a_higher_cap_continues_without_asking_twice(tmp_path):
    with FakeAPI(teacher=Teacher(verbose=True)) as api:
        cap = 0.03  # about a third of the job's ~$0.09 (80 requests of ~50 prompt and ~270 completion tokens)
        fits = "generate.max_new_tokens=600"  # the longest reply (400 words) fits: none is cut
        recipe = recipe_for(tmp_path / "run", api, "generate.samples_per_task=2", fits, f"generate.budget_usd={cap}")
        with pytest.raises(WarmstartError, match="budget_usd"):
            generate.run(recipe)
        first = len(api.log)
        assert 10 < first < 60 and billed_usd(api) <= cap
        costs = json.loads((tmp_path / "run" / "costs.json").read_text())
        assert costs["total"]["usd"] <= cap and costs["stages"]["generate:teacher"]["status"] == "failed"
        # a higher cap: the job goes on from where it stopped; no request is sent twice
        generate.run(recipe_for(tmp_path / "run", api, "generate.samples_per_task=2", fits, "generate.budget_usd=1.0"))
    bodies = [json.dumps(entry["body"], sort_keys=True) for entry in api.log]
    assert len(bodies) == 80 and len(set(bodies)) == 80
    records = latest_attempts(read_records(tmp_path / "run" / "trajectories" / "teacher.jsonl", Trajectory))
    assert len(records) == 80 and all(t.error is None for t in records)


def test_replies_a_killed_run_paid_for_and_never_wrote_are_billed_by_the_rerun_not_answered_as_free(tmp_path):
    """SIGKILL while a chunk waits for its last reply: the chunk's other replies were paid for and cached, not
    written. The rerun answers them from the cache; the ledger (and so the dollar cap) still counts them."""
    with FakeAPI(teacher=Teacher(verbose=True)) as api:
        api.faults = [None] * 8 + ["hold"]  # the second chunk's first request never answers
        settings = ["generate.concurrency=8", "generate.max_new_tokens=600", "generate.budget_usd=5.0"]
        recipe = recipe_for(tmp_path / "run", api, *settings, train=24)
        recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
        child = subprocess.Popen(
            [sys.executable, "-m", "warmstart.cli", "generate", str(recipe_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while len(api.billed) < 15:  # the first chunk's 8 and the second's 7 that answered
                assert child.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(0.3)  # the replies reach the client and its cache
        finally:
            child.kill()
            child.wait()
        written = read_records(tmp_path / "run" / "trajectories" / "teacher.jsonl", Trajectory)
        assert len(written) == 8  # the second chunk never returned whole
        generate.run(recipe)
        billed = billed_usd(api)  # before the held request is let go: the client never saw its reply
    costs = json.loads((tmp_path / "run" / "costs.json").read_text())
    cost = costs["stages"]["generate:teacher"]["api"]
    assert cost["paid_unwritten"] == 7 and cost["requests"] == 15 + cost["requests_sent"]
    assert costs["total"]["usd"] == pytest.approx(billed, rel=1e-9)
    generate.run(recipe)  # done: read again, the bill is the same (each reply billed once)
    assert json.loads((tmp_path / "run" / "costs.json").read_text())["total"]["usd"] == pytest.approx(billed, rel=1e-9)


def test_a_cap_below_one_request_sends_nothing(tmp_path):
    with FakeAPI(teacher=Teacher(verbose=True)) as api:
        with pytest.raises(WarmstartError, match=r"budget_usd = \$1e-07"):
            generate.run(recipe_for(tmp_path / "run", api, "generate.budget_usd=0.0000001"))
    assert api.log == []


def test_the_estimate_is_within_a_fifth_of_the_actual_bill(tmp_path):
    with FakeAPI(teacher=Teacher(verbose=True)) as api:
        recipe = recipe_for(
            tmp_path / "run", api, "generate.samples_per_task=2", "generate.max_new_tokens=600", train=120
        )
        estimate_file = generate.run(recipe, pilot_only=True)
        estimate = json.loads(estimate_file.read_text())
        pilot_requests = len(api.log)
        # the pilot was paid for: costs.json says so, the stage left undone
        pilot = json.loads((tmp_path / "run" / "costs.json").read_text())["stages"]["generate:teacher"]
        assert pilot["status"] == "pilot" and pilot["api"]["requests"] == pilot_requests
        assert pilot["api"]["usd"] == pytest.approx(billed_usd(api))
        generate.run(recipe)
    assert pilot_requests == generate.PILOT_TASKS * 2  # the pilot is the job's first tasks, paid once
    assert len(api.log) == 240
    actual_usd = billed_usd(api)
    assert estimate["requests"] == 240
    assert abs(estimate["usd"] - actual_usd) <= 0.2 * actual_usd, (estimate, actual_usd)
    assert estimate["usd_range"][0] <= estimate["usd"] <= estimate["usd_range"][1]
    entry = json.loads((tmp_path / "run" / "costs.json").read_text())["stages"]["generate:teacher"]
    compared = entry["estimate_vs_actual"]
    assert compared["actual"]["usd"] == pytest.approx(actual_usd) and compared["actual"]["requests"] == 240


def test_estimate_cli_prints_the_bill_and_refuses_a_finished_stage(tmp_path):
    with FakeAPI(teacher=Teacher(verbose=True)) as api:
        recipe = recipe_for(tmp_path / "run", api, train=20)
        recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
        cli = [sys.executable, "-m", "warmstart.cli"]
        first = subprocess.run([*cli, "estimate", str(recipe_file)], capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert "expected 20 samples of 20 tasks" in first.stderr and "projected from a pilot" in first.stderr
        assert subprocess.run([*cli, "generate", str(recipe_file)], capture_output=True, timeout=120).returncode == 0
        again = subprocess.run([*cli, "estimate", str(recipe_file)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and again.stderr.strip().splitlines()[-1].startswith(
        "error: generate:teacher is already done"
    )


def test_log_probs_asked_and_not_returned_warn_once_or_fail_when_required(tmp_path, caplog):
    with FakeAPI(teacher=Teacher(logprobs=False)) as api:
        with caplog.at_level(logging.WARNING):
            generate.run(recipe_for(tmp_path / "warn", api, "api.top_logprobs=3", train=6))
        warnings = [r.message for r in caplog.records if "returned no log-probs" in r.message]
        assert len(warnings) == 1 and "api.top_logprobs = 3" in warnings[0]
        before = len(api.log)
        with pytest.raises(WarmstartError, match="require_logprobs"):
            generate.run(recipe_for(tmp_path / "strict", api, "api.top_logprobs=3", "generate.require_logprobs=true"))
        paid = len(api.log) - before
    # the replies that came back were paid for: written and billed before the error, not left to the cache
    kept = read_records(tmp_path / "strict" / "trajectories" / "teacher.jsonl", Trajectory)
    assert paid > 0 and len(kept) == paid
    costs = json.loads((tmp_path / "strict" / "costs.json").read_text())
    assert costs["stages"]["generate:teacher"]["api"]["requests"] == paid and costs["total"]["usd"] > 0


def test_require_logprobs_with_a_teacher_that_gives_none_fails_on_the_first_run_not_only_on_a_rerun(tmp_path):
    recipe = small_recipe(tmp_path / "run", "api.top_logprobs=3", "generate.require_logprobs=true", train=6)
    with pytest.raises(WarmstartError, match="reference returned no log-probs"):
        generate.run(recipe)  # the reference teacher has none to give


def test_a_finished_stage_asked_again_for_log_probs_says_its_records_have_none(tmp_path, caplog):
    with FakeAPI() as api:
        generate.run(recipe_for(tmp_path / "run", api, train=6))  # no log-probs asked
        with caplog.at_level(logging.WARNING):
            generate.run(recipe_for(tmp_path / "run", api, "api.top_logprobs=3", train=6))
        assert any("6 of 6 records carry no log-probs" in r.message for r in caplog.records)
        with pytest.raises(WarmstartError, match="already done, but 6 of 6 records carry no log-probs"):
            generate.run(
                recipe_for(tmp_path / "run", api, "api.top_logprobs=3", "generate.require_logprobs=true", train=6)
            )


def test_reasoning_in_think_tags_becomes_the_messages_reasoning_and_terms_are_recorded(tmp_path):
    with FakeAPI(teacher=Teacher(think_tags=True)) as api:
        out = generate.run(recipe_for(tmp_path / "run", api, train=6))
    records = read_records(out, Trajectory)
    reply = records[0].messages[-1]
    assert reply.reasoning.startswith("step step") and reply.content.startswith("Answer: ")
    assert "<think>" not in reply.content and all(t.verdict.passed for t in records)
    # A server of one's own that speaks OpenAI's API is not under OpenAI's terms: none recorded ...
    assert all(t.provenance.terms is None for t in records)
    # ... unless a price table of one's own names them; OpenAI's own host is under OpenAI's.
    prices = tmp_path / "prices.toml"
    prices.write_text(f'[models."fake-model"]\n{PRICE}\n[providers.openai]\nterms = "our lab\'s terms"\n')
    with FakeAPI() as api:
        recipe = small_recipe(
            tmp_path / "own",
            f"generate.teacher='openai:fake-model@{api.url}/v1'",
            f"api.prices='{prices}'",
            *FAST,
            train=6,
        )
        assert {t.provenance.terms for t in read_records(generate.run(recipe), Trajectory)} == {"our lab's terms"}
    builtin = load_terms(None)
    hosted = Provenance(provider="openai", model="gpt-4o", created=0, endpoint="https://api.openai.com/v1")
    assert "openai.com" in terms_of(builtin, hosted)
    assert terms_of(builtin, hosted.model_copy(update={"endpoint": "https://my-gateway.example/v1"})) is None


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("generate.budget_usd=-1", "generate.budget_usd"),
        ("generate.stop_after_verified=5", "stop_after_verified = 5 is above max_samples_per_task = 1"),
    ],
)
def test_bad_sampling_settings_are_one_line(tmp_path, setting, words):
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", small_recipe(tmp_path / "run"))
    result = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "generate", str(recipe_file), "--set", setting],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_an_estimate_whose_every_pilot_request_failed_is_an_error_not_a_null_bill(tmp_path):
    with FakeAPI() as api:
        api.faults = ["500"] * 1000
        recipe = recipe_for(tmp_path / "run", api, "generate.max_error_rate=1.0", train=20)
        with pytest.raises(WarmstartError, match=r"no pilot task was answered.*first error: request failed: HTTP 500"):
            generate.run(recipe, pilot_only=True)
    assert not (tmp_path / "run" / "estimates").exists()
    kept = read_records(tmp_path / "run" / "trajectories" / "teacher.jsonl", Trajectory)
    assert kept and all(t.error for t in kept)  # the failed pilot is on record: a rerun asks exactly it again


def test_an_estimate_the_dollar_cap_stopped_says_so_not_that_nothing_was_answered(tmp_path):
    with FakeAPI(teacher=Teacher(verbose=True)) as api:
        recipe = recipe_for(tmp_path / "run", api, "generate.max_new_tokens=600", "generate.budget_usd=0.004", train=40)
        with pytest.raises(WarmstartError, match=r"budget_usd = \$0.004 stopped the pilot after \d+ of its 20 tasks"):
            generate.run(recipe, pilot_only=True)
        assert api.log  # some of the pilot was asked, and kept
