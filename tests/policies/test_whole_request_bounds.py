"""The synchronous clients (a teacher's prompt scoring, GRPO's rollout server) bound each request as a whole by
api.timeout_s, as the asynchronous policies do: httpx's timeout bounds each read, and a server that answers
200 and trickles its body a byte at a time held them until the body's declared end (hours)."""

from __future__ import annotations

import time

import pytest
from scripted_api import Scripted, trickled

from warmstart.errors import WarmstartError
from warmstart.policies.backend import within
from warmstart.policies.openai_scoring import RemoteScorer
from warmstart.policies.rollout_server import RolloutServer
from warmstart.types import Sampling

TIMEOUT_S = 1.0
SLACK_S = 20.0  # far past what a bounded call takes (two tries of 1 s and the SDK's wait between them)


def trickling(path: str, body: dict, n: int):
    return trickled(every_s=0.1)


def ended(call) -> tuple[BaseException | None, float]:
    """What `call()` raised and how long it took; a call still running after SLACK_S fails the test."""
    started = time.monotonic()
    try:
        within(SLACK_S, call)
    except TimeoutError:
        pytest.fail(f"still running after {SLACK_S:g} s: the request is not bounded as a whole")
    except BaseException as exc:  # noqa: BLE001 - the call's own failure, returned to be checked
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def test_a_teacher_s_scoring_gives_up_on_a_trickled_answer_at_api_timeout_s_each_try():
    with Scripted(trickling) as api:
        scorer = RemoteScorer("fake-model", f"{api.url}/v1", "unused", TIMEOUT_S, concurrency=1, max_retries=1)
        failure, took = ended(lambda: scorer.score([[1, 2, 3]]))
        scorer.close()
    assert isinstance(failure, WarmstartError)
    assert "no whole answer" in str(failure) and "api.timeout_s = 1 s, on each of 2 tries" in str(failure)
    assert len(api.log) == 2 and took < 2 * TIMEOUT_S + 3  # the SDK asked again once, as after any timeout


def test_grpo_s_rollout_server_gives_up_on_a_trickled_answer_at_api_timeout_s_each_try():
    with Scripted(trickling) as api:
        server = RolloutServer("fake-model", f"{api.url}/v1", "unused", TIMEOUT_S, concurrency=1, max_retries=1)
        failure, took = ended(lambda: server.sample(None, 0, [[1, 2, 3]], Sampling(1.0, 1.0, 8), [2], 0))
        server.close()
    assert isinstance(failure, WarmstartError) and "within api.timeout_s = 1 s, on each of 2 tries" in str(failure)
    assert len(api.log) == 2 and took < 2 * TIMEOUT_S + 3


def test_a_weight_update_s_trickled_answer_ends_at_api_timeout_s():
    with Scripted(trickling) as api:
        server = RolloutServer("fake-model", f"{api.url}/v1", "unused", TIMEOUT_S, concurrency=1, max_retries=1)
        failure, took = ended(lambda: server.load_adapter("step-1", "/nowhere"))
        server.close()
    assert isinstance(failure, WarmstartError) and "no whole answer to /v1/load_lora_adapter within 1 s" in str(failure)
    assert took < TIMEOUT_S + 2


def test_an_answer_that_comes_whole_in_time_is_read_as_before():
    with Scripted() as api:
        scorer = RemoteScorer("fake-model", f"{api.url}/v1", "unused", TIMEOUT_S, concurrency=2, max_retries=0)
        [scored] = scorer.score([[1, 2, 3]])
        scorer.close()
    assert scored.logprobs == [None, -0.5, -0.25]
