"""The teacher client under replies no real server should send: bounded waits, no crash on odd replies,
honest failure accounting (tests/fake_api.py injects each fault)."""

from __future__ import annotations

import json
import logging
import math
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from fake_api import FakeAPI
from helpers import small_recipe, write_recipe_file
from warmstart.envs.arithmetic import Arithmetic
from warmstart.errors import WarmstartError
from warmstart.policies import backend, make_policy
from warmstart.policies.limits import classify
from warmstart.runs.jsonl import read_records
from warmstart.stages import curate, generate
from warmstart.types import Request, Sampling, Trajectory

ENV = Arithmetic()
# The timeout is well above a healthy loopback reply on a loaded 2-core machine: these tests count requests
# exactly, and a healthy reply cut off would add a retry.
FAST = ["api.backoff_s=0.05", "api.timeout_s=2.0", "api.max_retries=3"]
PRICES = "[models.fake-model]\ninput = 1.0\noutput = 2.0\n\n[models.other-model]\ninput = 10.0\noutput = 20.0\n"


TEACHERS = {"openai": "openai:fake-model@{url}/v1", "anthropic": "anthropic:claude-fake-1@{url}"}


def recipe_for(tmp_path, api: FakeAPI, *overrides: str, train: int = 6, provider: str = "openai"):
    teacher = f"generate.teacher='{TEACHERS[provider].format(url=api.url)}'"
    return small_recipe(tmp_path / "run", teacher, *FAST, *overrides, train=train)


def rollouts(recipe, n: int = 1, max_new_tokens: int = 32) -> list[Trajectory]:
    policy = make_policy(recipe.generate.teacher, ENV, "generate.teacher", recipe)
    tasks = ENV.tasks("train", n, 0)
    return policy.rollout([Request(t, 0) for t in tasks], Sampling(0.0, 1.0, max_new_tokens), seed=0)


def stage_cost(run_dir) -> dict:
    return json.loads((run_dir / "costs.json").read_text())["stages"]["generate:teacher"]["api"]


def test_a_retry_after_of_years_is_capped_and_the_cap_is_logged(tmp_path, caplog):
    with FakeAPI() as api, caplog.at_level(logging.WARNING, logger="warmstart.policies.api"):
        api.faults = ["retry_after_huge"]
        started = time.monotonic()
        [trajectory] = rollouts(recipe_for(tmp_path, api, "api.max_retry_after_s=0.3"))
    assert time.monotonic() - started < 10
    assert trajectory.error is None and [e["fault"] for e in api.log] == ["retry_after_huge", None]
    assert any("Retry-After 999999999 s capped by api.max_retry_after_s" in r.getMessage() for r in caplog.records)


def test_api_deadline_s_bounds_a_request_and_its_retries(tmp_path):
    with FakeAPI() as api:
        api.faults = ["500"] * 50
        started = time.monotonic()
        [trajectory] = rollouts(
            recipe_for(tmp_path, api, "api.max_retries=40", "api.backoff_s=0.2", "api.deadline_s=1.5")
        )
    assert time.monotonic() - started < 5
    assert "gave up after" in trajectory.error and "api.deadline_s" in trajectory.error
    assert 2 <= len(api.log) < 40


BILLED_UNREADABLE = ("choices_object", "content_text", "stop_number")  # unreadable, with counts that are real


@pytest.mark.parametrize(
    "provider, fault, why",
    [
        ("openai", "surrogates", "not valid Unicode"),
        ("openai", "empty", "an empty reply"),
        ("openai", "no_choices", "no choices"),
        ("openai", "negative_usage", "impossible token counts"),
        ("openai", "huge_usage", "implausible token counts"),
        ("openai", "huge_output_usage", "implausible token counts"),
        ("anthropic", "huge_usage", "implausible token counts"),
        ("openai", "no_usage", "no token usage"),
        ("openai", "bad_usage", "no token usage"),
        ("openai", "html", "not JSON"),
        ("openai", "event_stream", "not JSON"),
        ("anthropic", "html", "not JSON"),
        ("anthropic", "event_stream", "not JSON"),
        ("anthropic", "server_tool", "content blocks warmstart cannot represent: server_tool_use"),
        # bodies the SDKs hand over unchecked, which reading raised on (a crash of the stage, not an error record)
        ("openai", "usage_list", "no token usage"),
        ("openai", "choices_object", "a message warmstart cannot read"),
        ("anthropic", "usage_list", "no token usage"),
        ("anthropic", "content_text", "a message warmstart cannot read"),
        ("anthropic", "stop_number", "a message warmstart cannot read"),
        ("openai", "error_200", "a 200 whose body is an error (upstream provider returned 502)"),
        ("anthropic", "error_200", "a 200 whose body is an error (upstream provider returned 502)"),
    ],
)
def test_an_odd_reply_is_asked_again_and_billed_only_where_its_usage_is_real(tmp_path, provider, fault, why):
    with FakeAPI() as api:
        api.faults = [fault]
        [trajectory] = rollouts(recipe_for(tmp_path / "once", api, provider=provider))
        assert trajectory.error is None and trajectory.messages[-1].content.startswith("Answer: ")
        assert [u.tokens_in for u in trajectory.usage] == [20]  # the good reply's, whatever the odd one claimed
        # valid counts on a reply that was refused
        billed_twice = fault in ("surrogates", "empty", "no_choices", "server_tool", *BILLED_UNREADABLE)
        assert len(trajectory.rejected_usage) == int(billed_twice) and len(api.billed) == 1 + int(billed_twice)
        cache = tmp_path / "once" / "run" / "cache" / "responses.jsonl"
        assert len(cache.read_text().splitlines()) == 1  # the good reply only: a refused one is never cached
        api.faults = [fault] * 4  # every try: an error record, never a crash
        [failed] = rollouts(recipe_for(tmp_path / "always", api, provider=provider))
    assert failed.error is not None and why in failed.error and failed.finish_reason is None
    assert len(failed.rejected_usage) == (4 if billed_twice else 0)


def test_a_reply_cut_by_the_token_limit_while_thinking_is_kept_as_cut_not_asked_again(tmp_path):
    """No text, only reasoning, cut at max_new_tokens: asked again at the same limit it would be cut again,
    each try billed. It is one request, kept and flagged (not cached), and curate drops it."""
    with FakeAPI() as api:
        api.faults = ["thinking_cut"]
        recipe = recipe_for(tmp_path, api, train=1)
        [trajectory] = read_records(generate.run(recipe), Trajectory)
    assert len(api.log) == 1 and trajectory.error is None and trajectory.finish_reason == "length"
    assert trajectory.messages[-1].reasoning == "First, the ones column" and not trajectory.messages[-1].content
    cache = tmp_path / "run" / "cache" / "responses.jsonl"
    assert not cache.exists() or not cache.read_text().strip()  # a cut reply is not cached
    with pytest.raises(WarmstartError, match=r"every trajectory .* was dropped \({'truncated': 1}\)"):
        curate.run(recipe)


def test_an_unusable_reply_is_asked_again_with_another_seed_and_a_request_that_failed_with_the_same(tmp_path):
    """A server that honours seeds answers a seed the same way each time: asked again with the seed of an
    unusable reply, it would send the same unusable reply, billed each time. The seeds stay reproducible."""

    def seeds_sent(run: str) -> list[int]:
        with FakeAPI() as api:
            api.faults = ["empty", "500", "no_choices"]
            [trajectory] = rollouts(recipe_for(tmp_path / run, api))
        assert trajectory.error is None and [e["fault"] for e in api.log] == ["empty", "500", "no_choices", None]
        return [e["body"]["seed"] for e in api.log]

    first, after_empty, after_500, after_no_choices = seeds_sent("one")
    assert after_empty != first and after_500 == after_empty and after_no_choices not in (first, after_empty)
    assert seeds_sent("two") == [first, after_empty, after_500, after_no_choices]


def test_a_stage_whose_every_request_failed_fails_bills_what_was_billed_and_a_rerun_retries_exactly_those(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    with FakeAPI() as api:
        recipe = recipe_for(tmp_path, api, f"api.prices='{prices}'", "api.max_retries=1")
        api.faults = ["no_choices"] * 12  # 6 tasks x 2 tries: every reply billed, none usable
        with pytest.raises(
            WarmstartError, match=r"6 of 6 rollouts ended in an error, more than generate.max_error_rate"
        ):
            generate.run(recipe)
        failed = stage_cost(tmp_path / "run")
        assert failed["requests"] == 12 and failed["requests_sent"] == 12 and failed["requests_failed"] == 12
        assert failed["tokens_in"] == 12 * 20 and failed["usd"] == pytest.approx(12 * (20 * 1.0 + 6 * 2.0) / 1e6)
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert manifest["stages"]["generate:teacher"]["status"] == "failed"
        out = generate.run(recipe)  # a healthy server now: exactly the six errors are asked again
        assert len(api.log) == 12 + 6
    records = read_records(out, Trajectory)
    assert len(records) == 12 and sum(r.error is not None for r in records) == 6
    latest = {r.key: r for r in records}
    assert len(latest) == 6 and all(r.error is None for r in latest.values())
    done = stage_cost(tmp_path / "run")
    assert done["requests"] == 12 + 6 and done["requests_sent"] == 6  # the ledger keeps the failed run's bill
    curate.run(recipe)
    assert len(read_records(tmp_path / "run" / "curated" / "train.jsonl", Trajectory)) == 6


def test_an_unpriced_model_is_null_never_zero_even_when_every_request_failed(tmp_path):
    with FakeAPI() as api:
        api.faults = ["no_choices"] * 6
        with pytest.raises(WarmstartError, match="max_error_rate"):
            generate.run(recipe_for(tmp_path, api, "api.max_retries=0"))
    cost = stage_cost(tmp_path / "run")
    assert cost["requests"] == 6 and cost["usd"] is None and cost["unknown_price_models"] == ["fake-model"]


def test_the_served_model_is_recorded_priced_and_warned_of(tmp_path, caplog):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    with FakeAPI() as api, caplog.at_level(logging.WARNING, logger="warmstart.policies.api"):
        api.faults = ["other_model", "other_model"]
        out = generate.run(recipe_for(tmp_path, api, f"api.prices='{prices}'", train=3))
    served = [u.model for r in read_records(out, Trajectory) for u in r.usage]
    assert sorted(served) == ["fake-model", "other-model", "other-model"]
    assert stage_cost(tmp_path / "run")["usd"] == pytest.approx((20 * 1.0 + 6 * 2.0 + 2 * (20 * 10.0 + 6 * 20.0)) / 1e6)
    warnings = [r.getMessage() for r in caplog.records if "other-model" in r.getMessage()]
    assert len(warnings) == 1  # once per model


def test_a_reply_far_longer_than_max_tokens_is_cut_flagged_and_never_cached(tmp_path):
    with FakeAPI(huge_bytes=3_000_000) as api:
        api.faults = ["huge"]
        recipe = recipe_for(tmp_path, api, "generate.max_new_tokens=64", train=2)
        out = generate.run(recipe)
    records = read_records(out, Trajectory)
    oversized = [r for r in records if r.finish_reason == "oversized"]
    assert len(oversized) == 1 and len(oversized[0].messages[-1].content.encode()) <= 64 * 32 + 1024
    assert out.stat().st_size < 20_000
    assert (tmp_path / "run" / "cache" / "responses.jsonl").stat().st_size < 20_000  # the huge reply is not cached
    curate.run(recipe)
    dropped = json.loads((tmp_path / "run" / "curated" / "train.dropped.json").read_text())["dropped"]
    assert dropped == {"oversized (longer than max_new_tokens allows)": 1}


def test_the_teacher_behind_another_port_is_the_same_teacher(tmp_path):
    with FakeAPI() as first, FakeAPI() as second:
        first.faults = ["no_choices"] * 6
        with pytest.raises(WarmstartError, match="max_error_rate"):
            generate.run(recipe_for(tmp_path, first, "api.max_retries=0"))
        out = generate.run(recipe_for(tmp_path, second))  # the same stage resumed, not "another config"
        assert len(second.log) == 6
        generate.run(recipe_for(tmp_path, first))  # done: nothing asked, whatever the port
        assert len(first.log) == 6
    assert {r.provenance.endpoint for r in read_records(out, Trajectory)} == {f"{first.url}/v1", f"{second.url}/v1"}


SOAK_REQUESTS = 200  # the closing note's soak: 2,000, by editing this line


def test_a_soak_of_every_fault_at_random_ends_in_time_with_every_rollout_once_and_an_exact_ledger(tmp_path):
    tasks = SOAK_REQUESTS // 2  # about two requests per rollout at this fault rate
    # A reply that comes after the client stopped waiting is billed by the server and never seen by the client:
    # the timeout is far above how long any but a `slow` reply takes, even on a loaded machine.
    settings = ["api.max_retries=2", "api.backoff_s=0.01", "api.max_retry_after_s=0.05", "api.timeout_s=3"]
    with FakeAPI(slow_s=3.5, huge_bytes=200_000, chaos=random.Random(0), chaos_rate=0.5) as api:
        recipe = recipe_for(
            tmp_path, api, *settings, "generate.max_error_rate=1.0", "generate.concurrency=32", train=tasks
        )
        worst = make_policy(recipe.generate.teacher, ENV, "t", recipe).request_tally.worst_case_s  # as the stage states
        started = time.monotonic()
        out = generate.run(recipe)
        seconds = time.monotonic() - started
        billed = list(api.billed)
        api.chaos = None  # healthy now
        generate.run(recipe)
    records = read_records(out, Trajectory)
    first_run = records[:tasks]
    assert sorted(r.key for r in first_run) == sorted((t.id, 0) for t in ENV.tasks("train", tasks, recipe.run.seed))
    assert seconds < math.ceil(tasks / 32) * worst + 30  # chunks of 32, each bounded by its worst request
    ledger = sum((r.usage + r.rejected_usage for r in first_run), [])
    assert sum(u.tokens_in for u in ledger) == sum(b["prompt"] for b in billed)
    assert sum(u.tokens_out for u in ledger) == sum(b["completion"] for b in billed)
    latest = {r.key: r for r in records}
    assert len(latest) == tasks and all(r.error is None for r in latest.values())
    assert len(records) == tasks + sum(r.error is not None for r in first_run)


def test_an_implausible_bill_under_a_dollar_cap_is_not_spent_and_the_stage_goes_on(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    with FakeAPI() as api:
        api.faults = ["huge_usage"]  # 10**15 prompt tokens: $1e9 at these prices, were it believed
        generate.run(recipe_for(tmp_path, api, f"api.prices='{prices}'", "generate.budget_usd=1.0", train=2))
        assert len(api.log) == 3
    cost = stage_cost(tmp_path / "run")
    assert cost["tokens_in"] == 2 * 20 and cost["usd"] == pytest.approx(2 * (20 * 1.0 + 6 * 2.0) / 1e6)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "fault, said",
    [
        ("html", "answered the model list with something that is not JSON"),
        # labelled JSON: it was a JSONDecodeError's traceback
        ("html_as_json", "answered the model list with something that is not JSON: '<html>"),
    ],
)
def test_a_model_list_that_is_not_json_is_one_clear_error_before_any_request(tmp_path, provider, fault, said):
    with FakeAPI() as api:
        api.models_fault = fault
        with pytest.raises(WarmstartError, match=said):
            rollouts(recipe_for(tmp_path, api, provider=provider))
    assert api.log == []


@pytest.fixture()
def quick_model_list(monkeypatch):
    """The model list's tries bounded at 1 s each, 0.05 s apart (the same code as the 15-s default)."""
    monkeypatch.setattr(backend, "MODEL_LIST_TRY_S", 1.0)
    monkeypatch.setattr(backend, "MODEL_LIST_BACKOFF_S", 0.05)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("faults", [["429"], ["503", "529"], ["trickle"]])
def test_a_model_list_that_fails_for_a_moment_is_asked_again(tmp_path, provider, faults, quick_model_list):
    with FakeAPI() as api:
        api.models_faults = list(faults)
        started = time.monotonic()
        [trajectory] = rollouts(recipe_for(tmp_path, api, provider=provider))
    assert trajectory.error is None and api.models_faults == []
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "fault, why",
    [
        ("503", r"answered HTTP 503 to the model list \(.*fault 503.*\)"),
        ("trickle", "did not answer the model list within 1 s"),
    ],
)
def test_a_model_list_that_keeps_failing_is_one_error_in_bounded_time(tmp_path, provider, fault, why, quick_model_list):
    with FakeAPI() as api:
        api.models_faults = [fault] * 3
        started = time.monotonic()
        with pytest.raises(WarmstartError, match=why + re.escape(" (after 3 tries)")):
            rollouts(recipe_for(tmp_path, api, provider=provider))
        assert time.monotonic() - started < 10  # a trickling server no longer holds the run forever
    assert api.log == []  # nothing paid for


@pytest.mark.parametrize("fault", ["rate_limit_openai", "rate_limit_azure"])
def test_an_ordinary_rate_limit_is_waited_out_though_its_message_links_to_billing_and_quota(tmp_path, fault):
    with FakeAPI() as api:
        api.faults = [fault]
        [trajectory] = rollouts(recipe_for(tmp_path, api))
    assert trajectory.error is None and [e["fault"] for e in api.log] == [fault, None]
    assert api.log[1]["t"] - api.log[0]["t"] >= 0.9  # its Retry-After (1 s), not the 0.05-s backoff


def test_a_spend_limit_429_stops_the_stage_after_one_request(tmp_path):
    with FakeAPI() as api:
        api.faults = ["quota"]
        with pytest.raises(WarmstartError, match="a spend or quota limit was reached"):
            rollouts(recipe_for(tmp_path, api))
    assert len(api.log) == 1


@pytest.mark.parametrize(
    "body, spend_limit",
    [
        ('{"code": "billing_hard_limit_reached", "message": "Billing hard limit has been reached"}', True),
        ('{"type": "error", "error": {"type": "rate_limit_error", "message": "Quota of tokens per minute"}}', False),
        ('{"error": {"code": "429", "message": "You have reached your monthly spending limit."}}', True),
        ("Your credit balance is too low", True),
        ("Too many requests: see https://example.com/billing/quota-increase", False),
    ],
)
def test_a_429_is_a_spend_limit_by_its_code_else_by_its_words_not_by_its_links(body, spend_limit):
    assert classify(429, body, {}, "the message").retry is not spend_limit


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_reply_with_no_finish_reason_is_kept_as_unknown_and_never_cached(tmp_path, provider):
    with FakeAPI() as api:
        api.faults = ["no_finish"]
        [trajectory] = rollouts(recipe_for(tmp_path, api, provider=provider))
    assert trajectory.error is None and trajectory.finish_reason == "unknown"
    cache = tmp_path / "run" / "cache" / "responses.jsonl"
    assert not cache.exists() or cache.read_text() == ""


def release_when_arrived(api: FakeAPI, requests: int) -> None:
    """Hold every reply until `requests` requests have arrived, so that they are all in flight together."""
    api.held = threading.Event()

    def release() -> None:
        while len(api.log) < requests:
            time.sleep(0.01)
        api.held.set()

    threading.Thread(target=release, daemon=True).start()


def test_an_error_that_stops_the_call_ends_the_other_requests_before_the_client_closes(tmp_path, caplog):
    with FakeAPI(slow_s=1.0) as api, caplog.at_level(logging.WARNING, logger="warmstart.policies.api"):
        api.faults = ["401", "slow", "slow", "slow"]  # one bad key while three requests are in flight
        release_when_arrived(api, 4)
        with pytest.raises(WarmstartError, match="HTTP 401"):
            rollouts(recipe_for(tmp_path, api, "api.concurrency=4"), n=4)
    assert len(api.log) == 4
    assert [r.getMessage() for r in caplog.records] == []  # no "Connection error" retry from a closed client


def test_a_stage_stopped_by_a_fatal_error_writes_and_bills_what_had_finished(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    with FakeAPI(slow_s=1.0) as api:
        recipe = recipe_for(tmp_path, api, f"api.prices='{prices}'", "api.concurrency=4", train=4)
        api.faults = [None, None, None, "late_401"]  # the key is refused after the other three have answered
        with pytest.raises(WarmstartError, match="HTTP 401"):
            generate.run(recipe)
        out = tmp_path / "run" / "trajectories" / "teacher.jsonl"
        kept = read_records(out, Trajectory)
        assert len(kept) == 3 and all(t.error is None and t.verdict.passed for t in kept)
        stopped = stage_cost(tmp_path / "run")  # costs.json has the stopped stage's bill
        assert stopped["requests_sent"] == 4 and stopped["tokens_in"] == 3 * 20
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert manifest["stages"]["generate:teacher"]["status"] == "failed"
        generate.run(recipe)  # the key fixed: only the task that was refused is asked again
        assert len(api.log) == 5
    done = stage_cost(tmp_path / "run")
    assert done["requests"] == 4 and done["cache_hits"] == 0
    assert done["usd"] == pytest.approx(4 * (20 * 1.0 + 6 * 2.0) / 1e6)


# SIGTERM (a scheduler's stop, `docker stop`, `timeout`) as Ctrl-C: it killed the process at once, the
# finished rollouts unwritten and the stage's spend unrecorded until a rerun.
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_ctrl_c_mid_call_writes_what_had_finished_and_a_rerun_pays_for_nothing_twice(tmp_path, stop):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    with FakeAPI() as api:
        recipe = recipe_for(tmp_path, api, f"api.prices='{prices}'", "api.concurrency=8", train=8)
        recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
        api.faults = [None] * 5 + ["hold"] * 3  # five answered, three the client is waiting for
        cache = tmp_path / "run" / "cache" / "responses.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-m", "warmstart.cli", "generate", str(recipe_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not (cache.exists() and cache.read_text().count("\n") == 5 and len(api.log) == 8):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the five replies never reached the client"
                time.sleep(0.01)
            proc.send_signal(stop)
            assert proc.wait(timeout=60) == 130, proc.stderr.read()
        finally:
            proc.kill()
            api.released.set()
        out = tmp_path / "run" / "trajectories" / "teacher.jsonl"
        assert len(read_records(out, Trajectory)) == 5  # paid for, so written, though the call was stopped
        assert stage_cost(tmp_path / "run")["requests"] == 5  # and the stopped stage's bill recorded
        generate.run(recipe)
        assert len(api.log) == 8 + 3
    records = read_records(out, Trajectory)
    assert len(records) == len({r.key for r in records}) == 8
    done = stage_cost(tmp_path / "run")
    assert done["cache_hits"] == 0 and done["requests"] == 8  # no paid reply taken from the cache as free


@pytest.mark.parametrize("fault", ["no_usage", "huge_usage"])
def test_under_a_dollar_cap_a_reply_without_a_bill_to_believe_counts_at_its_largest_cost(tmp_path, fault):
    from warmstart.policies.api import prompt_size
    from warmstart.runs.budget import BudgetGuard
    from warmstart.runs.costs import load_prices

    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    with FakeAPI() as api:
        recipe = recipe_for(tmp_path, api, f"api.prices='{prices}'")
        policy = make_policy(recipe.generate.teacher, ENV, "generate.teacher", recipe)
        policy.budget = guard = BudgetGuard(1.0, 0.0, "fake-model", load_prices(str(prices)), False)
        [task] = ENV.tasks("train", 1, 0)
        api.faults = [fault]
        [trajectory] = policy.rollout([Request(task, 0)], Sampling(0.0, 1.0, 32), seed=0)
    assert trajectory.error is None and not trajectory.rejected_usage
    largest = guard.largest_cost(*prompt_size(task.prompt, []), 32)
    assert guard.spent == pytest.approx(largest + (20 * 1.0 + 6 * 2.0) / 1e6)  # the unknown bill, then the real one


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_reasoning_far_longer_than_max_tokens_is_cut_flagged_and_never_cached(tmp_path, provider):
    """Thinking is part of `max_tokens` at every provider: 3 MB of it in a 64-token reply is no more believable
    than 3 MB of text, and was kept whole in the record and the cache."""
    with FakeAPI() as api:
        api.faults = ["huge_reasoning"]
        recipe = recipe_for(tmp_path, api, "generate.max_new_tokens=64", train=2, provider=provider)
        out = generate.run(recipe)
    [oversized] = [r for r in read_records(out, Trajectory) if r.finish_reason == "oversized"]
    message = oversized.messages[-1]
    assert len((message.content or "").encode()) + len((message.reasoning or "").encode()) <= 64 * 32 + 1024
    assert message.reasoning_signature is None  # the cut reasoning is no longer what was signed
    assert out.stat().st_size < 20_000
    assert (tmp_path / "run" / "cache" / "responses.jsonl").stat().st_size < 20_000


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_prompt_too_long_for_the_model_ends_its_rollout_not_the_stage(tmp_path, provider):
    """A 400 for the context length is the request's own (a long task, a conversation grown over turns):
    not retried, an error record, and the other rollouts go on. It stopped the whole stage."""
    with FakeAPI() as api:
        api.faults = ["too_long"]
        trajectories = rollouts(recipe_for(tmp_path, api, "api.concurrency=1", provider=provider), n=3)
    errors = [t.error for t in trajectories if t.error is not None]
    assert len(errors) == 1 and "the request is too long for the model" in errors[0]
    assert len(api.log) == 3  # asked once: retrying cannot make it fit


def test_when_every_request_is_too_long_the_settings_are_at_fault_and_the_stage_stops(tmp_path):
    """None ever answered: max_new_tokens over the model's context, say. Stopped after a few, not after
    sending every request of the stage to be refused."""
    with FakeAPI() as api:
        api.faults = ["too_long"] * 50
        with pytest.raises(WarmstartError, match="8 requests refused as too long and none answered"):
            generate.run(recipe_for(tmp_path, api, "generate.concurrency=1", train=20))
    assert len(api.log) == 8


def test_a_sibling_model_is_warned_of_though_its_name_starts_with_the_one_asked_for(tmp_path, caplog):
    with FakeAPI() as api, caplog.at_level(logging.WARNING, logger="warmstart.policies.api"):
        api.faults = ["sibling_model"]
        [trajectory] = rollouts(recipe_for(tmp_path, api))
    assert trajectory.usage[0].model == "fake-model-mini"
    assert any("'fake-model-mini' answered" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "variable, proxy, why",
    [
        ("ALL_PROXY", "socks5://127.0.0.1:9", "socksio"),  # a SOCKS proxy without the package httpx needs for it
        ("HTTP_PROXY", "proxy.internal:port", "Invalid port"),  # a malformed proxy URL
        ("HTTP_PROXY", "http://127.0.0.1:9", "Connection refused"),  # a proxy that is down
    ],
)
def test_a_proxy_from_the_environment_that_cannot_be_used_is_one_clear_error_naming_it(
    tmp_path, monkeypatch, provider, variable, proxy, why
):
    """The first two were a traceback from httpx; the third said only "cannot reach" the server."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, proxy)
    with FakeAPI() as api:
        with pytest.raises(WarmstartError, match=f"through the proxy {re.escape(proxy)} .*{why}"):
            rollouts(recipe_for(tmp_path, api, provider=provider))
    assert api.log == []


def test_connection_refused_says_why_the_server_could_not_be_reached(tmp_path):
    with FakeAPI() as api:
        recipe = recipe_for(tmp_path, api)
    with pytest.raises(WarmstartError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1 \(.*Connection refused\)"):
        rollouts(recipe)  # the server is gone


def test_the_judge_behind_another_port_is_the_same_judge(tmp_path):
    """As for the teacher: the judge's URL is where it is reached, not what it is. Its port made a finished
    stage "another config", refused outright."""

    def recipe(judge: FakeAPI):
        judge_spec = f"env.judge.policy='openai:fake-model@{judge.url}/v1'"
        return recipe_for(tmp_path, teacher, judge_spec, "env.judge.rubric='a strict grader'", train=3)

    with FakeAPI() as teacher, FakeAPI() as first, FakeAPI() as second:
        generate.run(recipe(first))
        generate.run(recipe(second))  # done: nothing asked of either
        assert len(teacher.log) == 3 and len(first.log) == 3 and second.log == []


def test_an_api_policy_behind_another_port_is_the_same_in_curate_and_eval(tmp_path):
    """The judge's and an evaluated API model's URL, like the teacher's, are where they are reached: a port
    of their own made a finished curate or eval stage "another config", refused outright."""
    from warmstart.stages import evaluate

    def recipe(judge: FakeAPI, model: FakeAPI):
        return recipe_for(
            tmp_path,
            teacher,
            f"env.judge.policy='openai:fake-model@{judge.url}/v1'",
            f"eval.policies={{api = 'openai:fake-model@{model.url}/v1'}}",
            "eval.k=1",
            "tasks.eval=2",
            train=3,
        )

    with FakeAPI() as teacher, FakeAPI() as judge, FakeAPI() as model, FakeAPI() as judge2, FakeAPI() as model2:
        generate.run(recipe(judge, model))
        curate.run(recipe(judge, model))
        evaluate.run(recipe(judge, model))
        asked = len(judge.log), len(model.log)
        curate.run(recipe(judge2, model2))  # done: nothing asked of either
        evaluate.run(recipe(judge2, model2))
        assert (len(judge.log), len(model.log)) == asked and judge2.log == [] and model2.log == []
