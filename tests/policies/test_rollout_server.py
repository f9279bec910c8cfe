"""The rollout server's client: a server that does not return token ids, or answers for another policy, is
one clear error; a turn is cut at the trainer's stop ids; a stop the trainer does not know is refused."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from fake_api import FakeAPI
from warmstart.errors import WarmstartError
from warmstart.policies.rollout_server import RolloutServer, sampled_turn
from warmstart.types import Sampling

SAMPLING = Sampling(1.0, 1.0, 8)


def client_of(api: FakeAPI) -> RolloutServer:
    return RolloutServer("m", f"{api.url}/v1", "unused", timeout_s=10, concurrency=2, max_retries=0)


def test_a_server_that_returns_no_token_ids_is_one_clear_error():
    with FakeAPI() as api:
        with pytest.raises(WarmstartError, match="does not return the sampled token ids"):
            client_of(api).sample(None, 0, [[1, 2, 3]], SAMPLING, [2], 0)


def test_an_answer_from_another_policy_is_refused():
    with FakeAPI() as api:
        api.faults = ["other_model"]
        with pytest.raises(WarmstartError, match="policy-version mismatch"):
            client_of(api).sample(None, 0, [[1, 2, 3]], SAMPLING, [2], 0)


def choice(ids, logprobs, finish_reason):
    return SimpleNamespace(
        model_extra={"token_ids": ids},
        logprobs=SimpleNamespace(token_logprobs=logprobs),
        finish_reason=finish_reason,
    )


def test_a_turn_is_cut_at_the_first_stop_id_with_its_logprobs():
    turn = sampled_turn([9], choice([5, 6, 2, 7], [-0.1, -0.2, -0.3, -0.4], "length"), {2}, "url")
    assert (turn.completion_ids, turn.stopped, turn.logprobs) == ([5, 6, 2], True, [-0.1, -0.2, -0.3])
    cut_by_length = sampled_turn([9], choice([5, 6], [-0.1, -0.2], "length"), {2}, "url")
    assert (cut_by_length.completion_ids, cut_by_length.stopped) == ([5, 6], False)
    # A server that lists no log-prob for its stop token: that one token is unknown (weight 1), not an error.
    short = sampled_turn([9], choice([5, 2], [-0.1], "stop"), {2}, "url")
    assert short.logprobs == [-0.1, None]


def test_a_stop_the_trainer_does_not_know_or_a_wrong_count_is_refused():
    with pytest.raises(WarmstartError, match="not one of the policy's stop tokens"):
        sampled_turn([9], choice([5, 6], [-0.1, -0.2], "stop"), {2}, "url")
    with pytest.raises(WarmstartError, match="returned 1 logprobs for 3 token ids"):
        sampled_turn([9], choice([5, 6, 7], [-0.1], "length"), {2}, "url")


def test_closing_the_client_ends_a_wait_on_a_request_in_another_thread():
    # One step off policy, the batch sampled ahead waits on the prefetch thread; an interrupted run closes
    # the client and must not wait out the request (tests/stages/test_grpo_server_interrupt.py: the process).
    with FakeAPI() as api:
        api.faults = ["hold"]  # answered only once the test ends
        server = client_of(api)
        outcome: dict = {}

        def sample() -> None:
            try:
                server.sample(None, 0, [[1, 2, 3]], SAMPLING, [2], 0)
            except WarmstartError as exc:
                outcome["error"] = str(exc)

        waiting = threading.Thread(target=sample)
        waiting.start()
        deadline = time.monotonic() + 30
        while not api.log and time.monotonic() < deadline:
            time.sleep(0.01)
        server.close()
        waiting.join(timeout=5)
        assert not waiting.is_alive(), "the wait outlived close()"
        assert "closed with 1 requests" in outcome["error"]


@pytest.mark.parametrize(
    "variable, proxy, why",
    [("ALL_PROXY", "socks5://127.0.0.1:9", "socksio"), ("HTTP_PROXY", "proxy.internal:port", "Invalid port")],
)
def test_a_proxy_setting_the_client_cannot_use_is_one_clear_error(monkeypatch, variable, proxy, why):
    """As for the teacher's client (backend.make_client): httpx reads the environment's proxy as the client is
    made, and one it cannot use had been a traceback of httpx's."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, proxy)
    with pytest.raises(WarmstartError, match=f"grpo.rollout_server: .*{why}"):
        RolloutServer("m", "http://127.0.0.1:9/v1", "unused", timeout_s=10, concurrency=2, max_retries=0)
