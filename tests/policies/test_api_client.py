"""API backends against a fault-injecting loopback server (fake_api.py), through the official SDKs:
retries and what is never retried, timeouts, the response cache, flagged replies, rate limits, costs."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from fake_api import FakeAPI
from helpers import small_recipe, write_recipe_file
from warmstart.config import PolicySpec
from warmstart.envs.arithmetic import Arithmetic
from warmstart.errors import WarmstartError
from warmstart.policies import make_policy
from warmstart.policies.api import APIPolicy, ApiSettings
from warmstart.policies.cache import ResponseCache
from warmstart.policies.limits import RateLimiter
from warmstart.policies.openai_api import OpenAIBackend
from warmstart.runs.jsonl import read_records
from warmstart.stages import curate, generate
from warmstart.types import Request, Sampling, Trajectory

ENV = Arithmetic()
# The timeout is well above a healthy loopback reply on a loaded 2-core machine: these tests count requests
# exactly, and a healthy reply cut off would add a retry.
FAST = ["api.backoff_s=0.05", "api.timeout_s=2.0", "api.max_retries=3"]


def recipe_for(
    tmp_path, api: FakeAPI, *overrides: str, train: int = 6, provider: str = "openai", model: str = "fake-model"
):
    base = f"{api.url}/v1" if provider == "openai" else api.url
    return small_recipe(tmp_path, f"generate.teacher='{provider}:{model}@{base}'", *FAST, *overrides, train=train)


def one_rollout(recipe, n: int = 1) -> list[Trajectory]:
    policy = make_policy(recipe.generate.teacher, ENV, "generate.teacher", recipe)
    tasks = ENV.tasks("train", n, 0)
    return policy.rollout([Request(t, 0) for t in tasks], Sampling(0.0, 1.0, 32), seed=0)


@pytest.mark.parametrize("fault", ["500", "529", "reset", "malformed", "slow"])
def test_a_transient_failure_is_retried_and_the_answer_kept(tmp_path, fault):
    with FakeAPI(slow_s=3.0) as api:  # past FAST's timeout
        api.faults = [fault]
        [trajectory] = one_rollout(recipe_for(tmp_path, api))
    assert trajectory.error is None and trajectory.messages[-1].content.startswith("Answer: ")
    assert [e["fault"] for e in api.log] == [fault, None]


def test_api_timeout_s_ends_a_request_the_sdk_would_still_wait_for(tmp_path):
    with FakeAPI(slow_s=3.0) as api:
        api.faults = ["slow"]
        backend = OpenAIBackend("fake-model", f"{api.url}/v1", "unused", timeout_s=60)  # the SDK's own limit: far off
        settings = ApiSettings(concurrency=1, timeout_s=0.5, max_retries=1, backoff_s=0.05, top_logprobs=0)
        policy = APIPolicy(backend, ENV, 1, settings, RateLimiter(None, None), ResponseCache(tmp_path / "cache.jsonl"))
        started = time.monotonic()
        [trajectory] = policy.rollout([Request(ENV.tasks("train", 1, 0)[0], 0)], Sampling(0.0, 1.0, 16), seed=0)
    assert trajectory.error is None and time.monotonic() - started < 2.5
    assert [e["fault"] for e in api.log] == ["slow", None]


def test_a_429_waits_at_least_its_retry_after(tmp_path):
    with FakeAPI() as api:
        api.faults = ["429"]
        [trajectory] = one_rollout(recipe_for(tmp_path, api))
    assert trajectory.error is None
    first, second = api.log
    assert second["t"] - first["t"] >= 1.0  # Retry-After: 1, though the backoff alone would be ~0.05 s


@pytest.mark.parametrize(("fault", "words"), [("401", "HTTP 401"), ("quota", "spend or quota limit")])
def test_errors_that_retrying_cannot_fix_stop_the_stage_after_one_request(tmp_path, fault, words):
    with FakeAPI() as api:
        api.faults = [fault]
        with pytest.raises(WarmstartError, match=words):
            one_rollout(recipe_for(tmp_path, api))
    assert len(api.log) == 1


def test_a_request_that_keeps_failing_becomes_a_record_with_an_error(tmp_path):
    with FakeAPI() as api:
        api.faults = ["500"] * 4
        [trajectory] = one_rollout(recipe_for(tmp_path, api))
    assert trajectory.error is not None and "HTTP 500" in trajectory.error
    assert len(api.log) == 4  # the first try and api.max_retries = 3


def test_an_unknown_model_is_refused_before_any_request(tmp_path):
    with FakeAPI() as api:
        with pytest.raises(WarmstartError, match="does not serve model 'gpt-9'.*fake-model"):
            one_rollout(recipe_for(tmp_path, api, model="gpt-9"))
    assert api.log == []


def test_generate_caches_every_reply_and_a_rerun_pays_for_nothing(tmp_path):
    with FakeAPI() as api:
        recipe = recipe_for(tmp_path, api, "generate.samples_per_task=2")
        out = generate.run(recipe)
        assert len(api.log) == 12
        paid = json.loads((tmp_path / "costs.json").read_text())["stages"]["generate:teacher"]["api"]
        generate.run(recipe)  # finished: skipped
        out.unlink()  # lose the records: the cache still has every reply
        (tmp_path / "manifest.json").unlink()
        generate.run(recipe)
        assert len(api.log) == 12
    records = read_records(out, Trajectory)
    assert len(records) == 12 and all(r.verdict.passed for r in records)
    assert paid["requests"] == paid["requests_sent"] == 12 and paid["cache_hits"] == 0
    assert paid["tokens_in"] == 12 * 20 and paid["tokens_out"] == 12 * 6
    assert paid["usd"] is None and paid["unknown_price_models"] == ["fake-model"]  # flagged, not 0
    # The rerun sent nothing and counts the cache hits apart; the replies they repeat were paid for once, by
    # the first run, whose records are gone: its journal of paid replies still bills them, once.
    cached = json.loads((tmp_path / "costs.json").read_text())["stages"]["generate:teacher"]["api"]
    assert cached["requests_sent"] == 0 and cached["cache_hits"] == 12
    assert cached["requests"] == cached["paid_unwritten"] == 12 and cached["tokens_in"] == 12 * 20
    assert all(u.from_cache for r in records for u in r.usage)


def test_the_provider_seed_names_the_sample_not_the_server_it_is_asked_of(tmp_path):
    """Two servers on two ports are asked the same samples with the same seeds: a recipe's samples do not
    depend on where the model is served."""
    bodies = []
    for name in ("first", "second"):
        with FakeAPI() as api:
            generate.run(recipe_for(tmp_path / name, api, "generate.samples_per_task=2"))
            bodies.append({(json.dumps(e["body"]["messages"]), e["body"]["seed"]) for e in api.log})
    first, second = bodies
    assert len(first) == 12 and first == second
    assert len({seed for _, seed in first}) == 12  # every sample its own seed, both samples of a task included


def test_prices_turn_tokens_into_money_per_accepted_trajectory(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."fake-model"]\ninput = 1.0\ncached_input = 0.5\noutput = 2.0\nbatch = 0.5\n')
    with FakeAPI() as api:
        generate.run(recipe_for(tmp_path / "run", api, f"api.prices='{prices}'", "api.batch_discount=true"))
    cost = json.loads((tmp_path / "run" / "costs.json").read_text())["total"]
    per_request = (20 * 1.0 + 6 * 2.0) / 1e6 * 0.5
    assert cost["usd"] == pytest.approx(6 * per_request)
    assert cost["usd_per_accepted_trajectory"] == pytest.approx(per_request)


@pytest.mark.parametrize(
    ("fault", "reason"), [("length", "truncated"), ("refusal", "refused"), ("filter", "content filtered")]
)
def test_cut_refused_and_filtered_replies_are_flagged_not_cached_and_dropped(tmp_path, fault, reason):
    with FakeAPI() as api:
        recipe = recipe_for(tmp_path, api, "generate.concurrency=1")
        api.faults = [fault]
        generate.run(recipe)
        cache = ResponseCache(tmp_path / "cache" / "responses.jsonl")
        assert len(cache.replies) == 5  # six replies, the flagged one not cached
        curate.run(recipe)
    dropped = json.loads((tmp_path / "curated" / "train.dropped.json").read_text())
    assert dropped["dropped"] == {reason: 1}


def test_logprobs_are_stored_on_the_trajectory(tmp_path):
    with FakeAPI() as api:
        [trajectory] = one_rollout(recipe_for(tmp_path, api, "api.top_logprobs=3"))
    assert api.log[0]["body"]["top_logprobs"] == 3
    [turn] = trajectory.logprobs
    assert turn[0]["token"] == "Answer:" and len(turn[0]["top_logprobs"]) == 3


def test_anthropic_backend_retries_overloaded_and_normalizes_the_reply(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    with FakeAPI() as api:
        api.faults = ["529"]
        [trajectory] = one_rollout(recipe_for(tmp_path, api, provider="anthropic", model="claude-fake"))
    assert trajectory.error is None and trajectory.messages[-1].content.startswith("Answer: ")
    assert trajectory.usage[0].tokens_in == 20 and trajectory.provenance.provider == "anthropic"
    assert [e["fault"] for e in api.log] == ["529", None]


def test_a_killed_generate_reruns_without_losing_duplicating_or_repaying(tmp_path):
    with FakeAPI(delay_s=0.05) as api:
        recipe_file = tmp_path / "recipe.toml"
        from helpers import write_recipe_file

        write_recipe_file(
            recipe_file, recipe_for(tmp_path / "run", api, "api.concurrency=2", "generate.concurrency=8", train=40)
        )
        command = [sys.executable, "-m", "warmstart.cli", "generate", str(recipe_file)]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while len(api.log) < 15 and time.time() < deadline:
            time.sleep(0.01)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        sent_before = len(api.log)
        assert 15 <= sent_before < 40
        assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    records = read_records(tmp_path / "run" / "trajectories" / "teacher.jsonl", Trajectory)
    assert sorted(r.task_id for r in records) == sorted(
        t.id for t in ENV.tasks("train", 40, 0)
    )  # none lost, none twice
    # Only requests in flight at the kill (at most api.concurrency) can have been sent twice.
    assert len(api.log) <= 40 + 2


def test_a_thousand_requests_never_exceed_rpm_or_tpm_in_any_window(tmp_path):
    # The limiter's code path with a 1-s window instead of 60, to keep the test fast. Each request uses
    # 26 tokens, so the token limit binds (~115 requests per window) before the request limit (150).
    window, rpm, tpm = 1.0, 150, 3_000
    with FakeAPI() as api:
        backend = OpenAIBackend("fake-model", f"{api.url}/v1", "unused", timeout_s=10)
        settings = ApiSettings(concurrency=32, timeout_s=10, max_retries=0, backoff_s=0.05, top_logprobs=0)
        policy = APIPolicy(
            backend, ENV, 1, settings, RateLimiter(rpm, tpm, window_s=window), ResponseCache(tmp_path / "cache.jsonl")
        )
        tasks = ENV.tasks("train", 1000, 0)
        started = time.time()
        trajectories = policy.rollout([Request(t, 0) for t in tasks], Sampling(0.0, 1.0, 16), seed=0)
        elapsed = time.time() - started
    assert all(t.error is None for t in trajectories) and len(api.log) == 1000
    times = sorted((e["t"], e["tokens"]) for e in api.log)
    for i, (start, _) in enumerate(times):
        inside = [tokens for t, tokens in times[i:] if t < start + window]
        assert len(inside) <= rpm and sum(inside) <= tpm
    assert elapsed >= (1000 * 26 / tpm - 1) * window  # the limits really held it back


def test_a_judge_beside_the_verifier_reports_agreement_and_unparseable_replies_are_not_zeros(tmp_path):
    from warmstart.stages import evaluate

    with FakeAPI() as api:
        judge = f"openai:fake-model@{api.url}/v1"
        recipe = small_recipe(
            tmp_path,
            f"env.judge.policy='{judge}'",
            "env.judge.use=compare",
            *FAST,
            'eval.policies={teacher="teacher"}',
            "eval.k=2",
            train=10,
        )
        api.faults = ["garbage", "garbage", "lie"]  # one judgement unparseable twice, then one wrong
        summary = json.loads(evaluate.run(recipe).read_text())
    row = summary["policies"]["teacher"]
    agreement = row["judge_agreement"]
    assert agreement["samples"] == 20 * 2 - 1  # the unparseable judgement left out, not counted as a fail
    assert agreement["judge_pass_verifier_fail"] + agreement["judge_fail_verifier_pass"] == 1  # the lie
    assert agreement["agreement"] == pytest.approx((39 - 1) / 39, abs=1e-4)
    assert agreement["judge_errors"] == 1 and "VERDICT" in agreement["first_judge_error"]  # and counted
    assert row["infra_errors"] == 0  # compare mode: the verifier decided every sample


def test_a_judge_that_never_answers_is_counted_and_said_not_taken_for_no_judge(tmp_path, caplog):
    """Every judgement failing had left results.json without judge_agreement and the table without a judge
    column: a judge that never worked looked like none. Its reply budget is env.judge.max_new_tokens."""
    from warmstart.stages import evaluate

    with FakeAPI() as api:
        judge = f"openai:fake-model@{api.url}/v1"
        recipe = small_recipe(
            tmp_path,
            f"env.judge.policy='{judge}'",
            "env.judge.max_new_tokens=64",
            *FAST,
            'eval.policies={teacher="teacher"}',
            "eval.k=2",
            train=10,
        )
        api.faults = ["garbage"] * 80  # each of the 40 judgements asked twice
        with caplog.at_level(logging.WARNING):
            summary = json.loads(evaluate.run(recipe).read_text())
        asked = {e["body"].get("max_tokens") for e in api.log}
    agreement = summary["policies"]["teacher"]["judge_agreement"]
    assert agreement["samples"] == 0 and agreement["agreement"] is None and agreement["judge_errors"] == 40
    assert summary["policies"]["teacher"]["infra_errors"] == 0  # the verifier decided them all
    assert "the judge failed on 40 samples of row 'teacher'" in caplog.text and "VERDICT" in caplog.text
    assert asked == {64}


def test_a_judge_as_the_reward_masks_an_unparseable_judgement(tmp_path):
    from warmstart.envs.judge import Judged, NoTools, RubricJudge

    with FakeAPI() as api:
        recipe = small_recipe(tmp_path, *FAST)
        judge = RubricJudge(
            lambda: make_policy(PolicySpec.parse(f"openai:fake-model@{api.url}/v1"), NoTools(), "judge", recipe),
            "Correct answer.",
        )
        env = Judged(ENV, judge, "reward")
        first, second = ENV.tasks("train", 2, 0)
        api.faults = ["garbage", "garbage", "garbage"]
        unparseable = env.verify(first, ENV.reference(first, random.Random(0)))
        recovered = env.verify(second, ENV.reference(second, random.Random(0)))  # garbage once, then asked again
    assert unparseable.infra_error is not None and "VERDICT" in unparseable.infra_error
    assert recovered.infra_error is None
    assert recovered.details["judge_passed"] == recovered.details["verifier_passed"] == recovered.passed
    assert len(api.log) == 4


def test_in_eval_a_request_that_keeps_failing_is_left_out_and_counted_not_a_zero(tmp_path):
    from warmstart.stages import evaluate

    with FakeAPI() as api:
        recipe = recipe_for(tmp_path, api, 'eval.policies={teacher="teacher"}', "eval.k=1", "eval.batch_size=1")
        api.faults = ["500"] * 4  # the first eval request and its three retries
        row = json.loads(evaluate.run(recipe).read_text())["policies"]["teacher"]
    assert row["request_errors"] == 1 and row["infra_errors"] == 0  # the request's failure, not the verifier's
    assert row["pass@1"] == 1.0  # the 19 answered samples are all right; the failed one is left out
    costs = json.loads((tmp_path / "costs.json").read_text())["stages"]["eval"]["api"]
    assert costs["trajectories"] == 20 and costs["accepted"] == 19


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [({"Retry-After": "3"}, 3.0), ({"retry-after-ms": "250"}, 0.25), ({"Retry-After": "soon"}, None), ({}, None)],
)
def test_retry_after_is_read_and_an_unreadable_one_is_ignored(headers, seconds):
    from warmstart.policies.limits import retry_after_seconds

    assert retry_after_seconds(headers) == seconds


def cached_reply(text: str = "Answer: 1"):
    from warmstart.policies.backend import Reply
    from warmstart.types import Message, Usage

    return Reply(
        message=Message(role="assistant", content=text), usage=Usage(tokens_in=1, tokens_out=1), finish_reason="stop"
    )


def wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_put_never_waits_for_the_disk_and_one_background_fsync_per_interval_covers_earlier_lines(tmp_path, monkeypatch):
    import threading

    from warmstart.policies import cache as cache_module

    disk = threading.Event()  # the disk answers only when the test says so
    syncs = []  # (when it began, file size then: the lines it covers)

    def slow_sync(fd):
        syncs.append((time.monotonic(), os.fstat(fd).st_size))
        disk.wait()

    monkeypatch.setattr(cache_module, "_sync", slow_sync)
    path = tmp_path / "cache" / "responses.jsonl"
    cache = ResponseCache(path, sync_interval_s=0.1)
    cache.put("k0", cached_reply())
    wait_until(lambda: len(syncs) == 1)
    for i in range(1, 20):  # the first fdatasync hangs: none of these waits for it
        cache.put(f"k{i}", cached_reply())
    assert len(syncs) == 1 and set(cache.replies) == {f"k{i}" for i in range(20)}
    disk.set()
    for i in range(20, 60):
        cache.put(f"k{i}", cached_reply())
        time.sleep(0.01)
    closing = time.monotonic()
    cache.close()
    assert ResponseCache(path).replies.keys() == {f"k{i}" for i in range(60)}
    background = [t for t, _ in syncs if t < closing]
    # At most one per interval: each began >= 0.1 s after the one before, timed here a few bytecodes later
    # (a thread preempted there for over 10 ms would fail a 0.09 bound); a syncer that did not wait
    # for the interval would sync about every 10 ms, as the lines come.
    assert all(later - earlier >= 0.05 for earlier, later in zip(background, background[1:]))
    assert 3 <= len(background) < 20  # grouped: far fewer than one per reply
    assert syncs[-1][1] == path.stat().st_size  # after close, everything written is synced


def test_a_reply_written_by_put_survives_a_sigkill_without_any_fsync(tmp_path):
    path = tmp_path / "responses.jsonl"
    child = f"""
import sys, time
from pathlib import Path
from warmstart.policies import cache as cache_module
from warmstart.policies.backend import Reply
from warmstart.policies.cache import ResponseCache
from warmstart.types import Message, Usage

cache_module._sync = lambda fd: time.sleep(3600)  # no fdatasync ever completes
cache = ResponseCache(Path({str(path)!r}))
reply = Reply(message=Message(role="assistant", content="Answer: 7"), usage=Usage(tokens_in=1, tokens_out=1), finish_reason="stop")
cache.put("k", reply)
print("put", flush=True)
time.sleep(3600)
"""
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "put\n"
    finally:
        process.kill()  # SIGKILL: no close, no final fsync
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert ResponseCache(path).get("k").message.content == "Answer: 7"


def test_a_torn_last_line_left_by_a_kill_is_cut_before_the_cache_appends(tmp_path):
    path = tmp_path / "responses.jsonl"
    cache = ResponseCache(path)
    cache.put("k0", cached_reply())
    cache.close()
    whole = path.read_bytes()
    path.write_bytes(whole + whole[: len(whole) // 2])  # a kill in the middle of a write
    cache = ResponseCache(path)
    assert set(cache.replies) == {"k0"}
    cache.put("k1", cached_reply())
    cache.close()
    assert ResponseCache(path).replies.keys() == {"k0", "k1"} and path.read_bytes().startswith(whole)


def broken_disk(monkeypatch, healthy_syncs: int = 0):
    """The disk fails every fdatasync after the first `healthy_syncs`; returns the fds it was asked to sync."""
    from warmstart.policies import cache as cache_module

    calls = []

    def sync(fd):
        calls.append(fd)
        if len(calls) > healthy_syncs:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(cache_module, "_sync", sync)
    return calls


def test_a_failed_background_fsync_fails_the_next_put_naming_the_cache(tmp_path, monkeypatch):
    calls = broken_disk(monkeypatch)
    path = tmp_path / "responses.jsonl"
    cache = ResponseCache(path, sync_interval_s=0.01)
    cache.put("k0", cached_reply())  # written; its fdatasync fails in the background
    wait_until(lambda: cache._syncer.failure is not None)
    for key in ("k1", "k2"):  # and every later put, which writes nothing
        with pytest.raises(OSError, match="could not be synced") as failed:
            cache.put(key, cached_reply())
        assert failed.value.filename == str(path) and str(path) in str(failed.value)
    cache.close()  # already raised by a put: not again
    assert len(calls) == 1  # no retry that could report a lost write as success
    assert set(cache.replies) == {"k0"} and ResponseCache(path).replies.keys() == {"k0"}


def test_a_failed_fsync_nobody_was_told_of_is_raised_by_close(tmp_path, monkeypatch):
    path = tmp_path / "responses.jsonl"
    broken_disk(monkeypatch)  # the background fdatasync fails, no put comes to hear of it
    cache = ResponseCache(path, sync_interval_s=3600)
    cache.put("k0", cached_reply())  # the first line is synced at once
    wait_until(lambda: cache._syncer.failure is not None)
    with pytest.raises(OSError, match="could not be synced"):
        cache.close()
    calls = broken_disk(monkeypatch, healthy_syncs=1)  # the background fdatasync works, close's fails
    cache = ResponseCache(path, sync_interval_s=3600)
    cache.put("k1", cached_reply())
    wait_until(lambda: len(calls) == 1)
    cache.put("k2", cached_reply())  # left for close: the next background sync is an hour away
    with pytest.raises(OSError, match=str(path)):
        cache.close()
    assert len(calls) == 2


def test_generating_and_curating_from_an_api_teacher_never_import_torch(tmp_path):
    """`warmstart generate` / `curate` with an API teacher: no model, so no torch (seconds of start-up, and
    ~200k objects more for every full garbage collection of a long rollout to scan)."""
    with FakeAPI() as api:
        recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe_for(tmp_path, api))
        for stage in ("generate", "curate"):
            done = subprocess.run(
                [sys.executable, "-X", "importtime", "-m", "warmstart.cli", stage, str(recipe_file)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            imported = {
                line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
            }
            assert "warmstart.stages.common" in imported and (
                "openai" in imported or stage == "curate"
            )  # the stage ran
            assert "torch" not in imported and "transformers" not in imported


def test_generate_is_quiet_by_default_and_logs_every_request_with_v(tmp_path):
    def generate_cli(run: str, *flags: str) -> str:
        recipe_file = write_recipe_file(tmp_path / f"{run}.toml", recipe_for(tmp_path / run, api))
        command = [sys.executable, "-m", "warmstart.cli", *flags, "generate", str(recipe_file)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stderr

    with FakeAPI() as api:
        quiet, verbose = generate_cli("quiet"), generate_cli("verbose", "-v")
    # the bar, the limits and the projected bill at the start, and one closing line
    assert "HTTP Request" not in quiet and len(quiet.splitlines()) <= 5, quiet
    assert verbose.count("HTTP Request: POST") == 6
