"""Answers larger than their request can need (a server or proxy that does not stop, a declared 10 GiB, a
gzip bomb) are refused as they arrive, by every API client warmstart makes (tests/fake_api.py's faults)."""

from __future__ import annotations

import json
import time

import pytest
from odd_api import OddAPI
from test_api_faults import recipe_for, rollouts
from test_api_odd_bodies import with_prompt_logprobs
from test_api_odd_bodies_more import CutAPI, sampled

from fake_api import BOMB_BYTES, FakeAPI
from warmstart.config import ApiConfig, PolicySpec
from warmstart.errors import WarmstartError
from warmstart.policies.bounded_http import BASE_BYTES, BYTES_PER_ENTRY, reply_limit
from warmstart.policies.openai_scoring import connect_scorer
from warmstart.policies.rollout_server import RolloutServer
from warmstart.types import Sampling

TOO_LARGE = "larger than 16 MiB, more than the request can need"
FAULTS = ["endless", "oversized", "gzip_bomb"]


def test_the_bound_is_what_the_request_can_ask_for():
    assert reply_limit(b"") == reply_limit(b"not json") == reply_limit(b"[1, 2]") == BASE_BYTES
    chat = {"messages": [], "max_tokens": 1000, "top_logprobs": 20, "logprobs": True, "n": 2}
    assert reply_limit(json.dumps(chat).encode()) == BASE_BYTES + 2 * 1000 * 21 * BYTES_PER_ENTRY
    assert reply_limit(json.dumps({"max_completion_tokens": 10}).encode()) == BASE_BYTES + 10 * BYTES_PER_ENTRY
    batch = {"prompt": [[1, 2, 3], [4] * 50], "max_tokens": 100, "logprobs": 0}  # a rollout server's batch
    assert reply_limit(json.dumps(batch).encode()) == BASE_BYTES + 2 * 100 * BYTES_PER_ENTRY
    echoed = {"prompt": list(range(4000)), "max_tokens": 1, "echo": True, "logprobs": 0}  # a teacher's scoring
    assert reply_limit(json.dumps(echoed).encode()) == BASE_BYTES + 4001 * BYTES_PER_ENTRY
    odd = {"max_tokens": True, "top_logprobs": -5, "n": "2", "prompt": {"x": 1}}  # nothing counted from these
    assert reply_limit(json.dumps(odd).encode()) == BASE_BYTES


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", FAULTS)
def test_an_answer_too_large_to_hold_is_refused_as_it_arrives_and_asked_again(tmp_path, provider, fault):
    with FakeAPI() as api:
        api.faults = [fault]
        started = time.monotonic()
        [trajectory] = rollouts(recipe_for(tmp_path / "once", api, provider=provider))
        assert trajectory.error is None and trajectory.messages[-1].content.startswith("Answer: ")
        api.faults = [fault] * 4  # every try: an error record naming the bound, never the process's memory
        [failed] = rollouts(recipe_for(tmp_path / "always", api, provider=provider))
    assert failed.error is not None and TOO_LARGE in failed.error
    assert "no answer within" not in failed.error  # refused as it came, not when api.timeout_s ran out
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_model_list_too_large_to_hold_is_one_clear_error_before_any_request(tmp_path, provider, fault):
    with FakeAPI() as api:
        api.models_faults = [fault]
        with pytest.raises(
            WarmstartError, match=f"generate.teacher: {api.url}.*: the answer to /v1/models was {TOO_LARGE}"
        ):
            rollouts(recipe_for(tmp_path, api, provider=provider))
    assert api.log == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_answers_under_their_bound_are_read_whole_compressed_or_not(tmp_path, provider):
    with FakeAPI() as api:
        api.faults = ["huge", "gzip", "deflate"]  # a 2 MB text, whatever max_tokens asked: under the bound
        huge, gzipped, deflated = (rollouts(recipe_for(tmp_path / str(i), api, provider=provider))[0] for i in range(3))
        assert [e["fault"] for e in api.log] == ["huge", "gzip", "deflate"]  # each read at the first try
    assert huge.error is None and huge.finish_reason == "oversized"  # read whole, then cut to max_tokens
    for trajectory in (gzipped, deflated):
        assert trajectory.error is None and trajectory.messages[-1].content.startswith("Answer: ")
    assert BOMB_BYTES > BASE_BYTES  # the bomb is over the bound it is tested against


@pytest.mark.parametrize("fault", FAULTS)
def test_a_teachers_scoring_and_a_rollout_server_ask_again_after_an_answer_past_its_bound(fault):
    """As a teacher's client does: another request may be answered whole (they had stopped at the first)."""
    with OddAPI() as api:
        api.shapes = {"scored": with_prompt_logprobs(lambda reply: reply)}
        scorer = connect_scorer(PolicySpec.parse(f"openai:fake-model@{api.url}/v1"), ApiConfig(max_retries=1), "unused")
        api.faults = [fault, "scored"]
        assert scorer.score([[1, 2, 3]])[0].logprobs == [None, -0.5, -0.25]
        scorer.close()
        assert [entry["fault"] for entry in api.log[-2:]] == [fault, "scored"]
    with CutAPI() as api:
        [turn] = sampled(api, [fault, "served"], max_retries=1)
        assert [entry["fault"] for entry in api.log] == [fault, "served"]
    assert (turn.completion_ids, turn.stopped) == ([5, 6, 2], True)


def test_a_teachers_scoring_and_a_rollout_server_refuse_an_answer_past_its_bound():
    with FakeAPI() as api:
        scorer = connect_scorer(PolicySpec.parse(f"openai:fake-model@{api.url}/v1"), ApiConfig(max_retries=0), "unused")
        api.faults = ["endless"]
        with pytest.raises(WarmstartError, match=f"no usable answer from {api.url}/v1: .*{TOO_LARGE}"):
            scorer.score([[1, 2, 3]])
        scorer.close()
        server = RolloutServer("fake-model", f"{api.url}/v1", "unused", 5.0, 1, 0)
        api.faults = ["gzip_bomb"]
        with pytest.raises(WarmstartError, match=f"grpo.rollout_server: no usable answer from .*{TOO_LARGE}"):
            server.sample(None, 0, [[1, 2, 3]], Sampling(1.0, 1.0, 8), [0], 0)
        api.models_faults = ["endless"]  # the next GET: /get_model_info
        with pytest.raises(WarmstartError, match=f"grpo.rollout_server: .*{TOO_LARGE}"):
            server.weight_version()
        server.close()
