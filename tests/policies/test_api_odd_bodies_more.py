"""More 200s that are no reply (odd_api.py's faults, and a compressed body cut short, which `CutAPI` adds):
GRPO's rollout server asks again as the teachers do; a null log-prob is refused wherever the API gives it no
meaning; a gzip or deflate stream cut short is named as one, not as a body that is not JSON."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from odd_api import FIRST_TOKEN, OddAPI, at
from test_api_faults import recipe_for, rollouts
from test_api_odd_bodies import SCORED, scorer_answer, with_prompt_logprobs

from warmstart.errors import WarmstartError
from warmstart.policies.rollout_server import RolloutServer
from warmstart.types import Sampling

CUT = {"cut_gzip": gzip.compress, "cut_deflate": zlib.compress}  # HTTP's deflate: zlib-wrapped


def cut_short(fault: str | None, status: int, data: bytes, headers: dict) -> tuple[int, bytes, dict]:
    """The answer as `fault` spoils it: `cut_gzip` / `cut_deflate`, a 200 compressed and cut in the middle
    of its compressed data (its Content-Length that of what is sent: the HTTP message itself is whole);
    `401_cut_gzip`, a 401 whose body is that."""
    if fault == "401_cut_gzip":
        status, data = 401, json.dumps({"error": {"message": "the status says it all", "type": "test"}}).encode()
        fault = "cut_gzip"
    if fault not in CUT:
        return status, data, headers
    packed = CUT[fault](data)
    return status, packed[: len(packed) // 2], headers | {"content-encoding": fault.removeprefix("cut_")}


class CutAPI(OddAPI):
    """OddAPI with the faults of `cut_short` too (for the model list: `model_list_fault`)."""

    def _handler(self):
        api, answer = self, super()._handler()

        class Handler(answer):
            def _raw(self, status: int, data: bytes, headers: dict | None = None, content_type="application/json"):
                fault = api.model_list_fault if self.command == "GET" else getattr(api.current, "fault", None)
                status, data, headers = cut_short(fault, status, data, headers or {})
                super()._raw(status, data, headers, content_type)

        return Handler


# --- GRPO's rollout server -------------------------------------------------------------------------------

SAMPLING = Sampling(1.0, 1.0, 8)
LISTED = ["choices", 0, "logprobs", "token_logprobs"]


def served(reply: dict) -> dict:
    """fake_api's legacy completion as vLLM answers a rollout server's request: the sampled ids
    (`return_token_ids`) and their log-probs, ending on the stop id 2."""
    reply["choices"][0]["token_ids"] = [5, 6, 2]
    reply["choices"][0]["logprobs"] = {
        "tokens": ["a", "b", "c"],
        "token_logprobs": [-0.1, -0.2, -0.3],
        "top_logprobs": None,
        "text_offset": [0, 1, 2],
    }
    return reply


def sampled(api: CutAPI, faults: list[str], max_retries: int) -> list:
    """The turns a rollout server's client samples for one prompt while `api` answers `faults` in turn."""
    api.shapes = api.shapes | {"served": served}
    api.faults = faults
    server = RolloutServer("m", f"{api.url}/v1", "unused", timeout_s=10, concurrency=1, max_retries=max_retries)
    try:
        return server.sample(None, 0, [[1, 2, 3]], SAMPLING, [2], 0)
    finally:
        server.close()


UNDECODABLE = {
    "malformed": "not JSON: '{this is not json'",
    "html": "not JSON: '<html><body><h1>502 Bad Gateway</h1></body></html>'",  # was an AttributeError traceback
    "html_as_json": "not JSON: '<html><body><h1>502 Bad Gateway</h1></body></html>'",
    "latin1": "not UTF-8 text (invalid continuation byte at byte",
    "bad_gzip": """labelled gzip (Content-Encoding) but not gzip (incorrect header check): '{"id": """,
    "bad_deflate": "labelled deflate (Content-Encoding) but not deflate (invalid stored block lengths): '\\x00",
    "br": "labelled br (Content-Encoding), an encoding not asked for (Accept-Encoding: gzip, deflate): '",
    "cut_gzip": "a gzip stream cut short (Content-Encoding: gzip): the body ends inside its compressed data",
}


@pytest.mark.parametrize("fault", UNDECODABLE)
def test_the_rollout_server_asks_again_after_a_200_whose_body_cannot_be_decoded(fault):
    """It said so in one line and stopped GRPO at the first (a page the SDK handed over as text: a traceback),
    where a teacher's client asks again."""
    with CutAPI() as api:
        [turn] = sampled(api, [fault, "served"], max_retries=1)
        assert [e["fault"] for e in api.log] == [fault, "served"]
    assert (turn.completion_ids, turn.stopped, turn.logprobs) == ([5, 6, 2], True, [-0.1, -0.2, -0.3])


@pytest.mark.parametrize("fault", UNDECODABLE)
def test_the_rollout_server_names_a_body_it_could_never_decode_in_one_line_after_its_retries(fault):
    with CutAPI() as api:
        with pytest.raises(WarmstartError) as caught:
            sampled(api, [fault] * 2, max_retries=1)
        assert len(api.log) == 2
    said = (
        f"grpo.rollout_server: no usable answer from {api.url}/v1: invalid reply: the server answered 200 with a "
        f"body that is {UNDECODABLE[fault]}"
    )
    error = str(caught.value)
    assert error.startswith(said) and error.endswith("(after 1 retries)"), error
    assert "\n" not in error and "Error" not in error


@pytest.mark.parametrize(
    "change, said",
    [
        # each was handed to GRPO's importance weights as it came (None: "unknown", weight 1; a NaN)
        (at([*LISTED, 1], None), "choices[0].logprobs.token_logprobs[1] is null, not a number"),
        (at([*LISTED, 0], None), "choices[0].logprobs.token_logprobs[0] is null, not a number"),
        (at([*LISTED, 2], float("nan")), "choices[0].logprobs.token_logprobs[2] is nan, not a log-probability"),
        (at([*LISTED, 1], 4.0), "choices[0].logprobs.token_logprobs[1] is 4.0, not a log-probability"),
        # a ValueError traceback (float("high"))
        (at([*LISTED, 1], "high"), "choices[0].logprobs.token_logprobs[1] is a string, not a number"),
    ],
)
def test_the_rollout_server_refuses_a_logprob_that_is_no_log_probability_naming_its_position(change, said):
    """No token of a rollout server's turn is echoed: each was sampled, so a null there has no meaning."""
    with CutAPI() as api:
        api.shapes = api.shapes | {"odd": lambda reply: change(served(reply))}
        with pytest.raises(WarmstartError) as caught:
            sampled(api, ["odd"] * 2, max_retries=1)
        assert len(api.log) == 2  # asked again, as a teacher's client asks after a reply it cannot read
        [turn] = sampled(api, ["odd", "served"], max_retries=1)
    assert f"invalid reply: a completion warmstart cannot read ({said}" in str(caught.value)
    assert str(caught.value).endswith("(after 1 retries)")
    assert turn.logprobs == [-0.1, -0.2, -0.3]


def test_the_rollout_server_still_takes_a_stop_tokens_logprob_left_out_as_unknown():
    """The one None a turn may hold: a server that lists no log-prob for the stop token it ended on."""
    with CutAPI() as api:
        api.shapes = {"short": lambda reply: at(LISTED, [-0.1, -0.2])(served(reply))}
        api.faults = ["short"]
        server = RolloutServer("m", f"{api.url}/v1", "unused", timeout_s=10, concurrency=1, max_retries=0)
        [turn] = server.sample(None, 0, [[1, 2, 3]], SAMPLING, [2], 0)
        server.close()
    assert turn.completion_ids == [5, 6, 2] and turn.logprobs == [-0.1, -0.2, None]


# --- the teachers' chat log-probs and a teacher's scoring ------------------------------------------------


@pytest.mark.parametrize(
    "change, named",
    [
        (at([*FIRST_TOKEN, "logprob"], None), "choices[0].logprobs.content[0].logprob is null, not a number"),
        (
            at([*FIRST_TOKEN, "top_logprobs", 1, "logprob"], None),
            "choices[0].logprobs.content[0].top_logprobs[1].logprob is null, not a number",
        ),
    ],
)
def test_a_chat_reply_with_a_null_logprob_is_refused_naming_it_and_never_reaches_a_trajectory(tmp_path, change, named):
    """The chat API gives every token and alternative a number: a null was recorded as it came, where top-k
    KD skipped it, or, for a token without alternatives, stopped on an IndexError (distill/topk.py)."""
    with OddAPI() as api:
        api.shapes = {"odd": change}
        api.faults = ["odd"] * 4  # every try of api.max_retries=3
        [failed] = rollouts(recipe_for(tmp_path, api, "api.top_logprobs=2"))
    said = f"request failed: invalid reply: a message warmstart cannot read ({named}) (after 3 retries)"
    assert failed.error == said and failed.logprobs is None


def test_a_teachers_scoring_refuses_a_null_logprob_past_the_first_naming_its_position():
    """Only the first echoed token's null means something (nothing predicts it); one further on was taken
    for a server that does not score prompts at all, an error no retry was asked for."""
    with OddAPI() as api:
        api.shapes = {"odd": with_prompt_logprobs(at([*SCORED, "token_logprobs", 2], None))}
        error = scorer_answer(api, ["odd"] * 2)
        assert len(api.log) == 2  # asked again
        api.shapes = {"unscored": with_prompt_logprobs(at([*SCORED, "token_logprobs"], [None, None, None]))}
        unscored = scorer_answer(api, ["unscored"])
    said = "invalid reply: a completion warmstart cannot read (choices[0].logprobs.token_logprobs[2] is null, not a"
    assert said in error and error.endswith("(after 1 retries)")
    assert "does not return prompt logprobs" in unscored  # no log-prob for any token: a server that scores none


# --- a compressed body cut short -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", ["cut_gzip", "cut_deflate"])
def test_a_compressed_reply_cut_short_is_named_as_one_and_asked_again(tmp_path, provider, fault):
    """It was "a body that is not JSON", quoting a reply that had looked whole as far as it went."""
    encoding = fault.removeprefix("cut_")
    with CutAPI() as api:
        api.faults = [fault] * 4  # every try of api.max_retries=3
        [failed] = rollouts(recipe_for(tmp_path, api, provider=provider))
        assert len(api.log) == 4
    said = (
        f"request failed: invalid reply: the server answered 200 with a body that is a {encoding} stream cut short "
        f"(Content-Encoding: {encoding}): the body ends inside its compressed data, after "
    )
    assert failed.error.startswith(said) and failed.error.endswith("(after 3 retries)"), failed.error
    assert '; decompressed, it begins: \'{"id": ' in failed.error  # what came, readable


def test_a_teachers_scoring_names_a_compressed_reply_cut_short():
    with CutAPI() as api:
        error = scorer_answer(api, ["cut_gzip"] * 2)
    assert "invalid reply: the server answered 200 with a body that is a gzip stream cut short" in error


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_model_list_cut_short_is_one_clear_error_before_any_request(tmp_path, provider):
    with CutAPI() as api:
        api.model_list_fault = "cut_gzip"
        with pytest.raises(WarmstartError, match="answered the model list with something that is a gzip stream cut"):
            rollouts(recipe_for(tmp_path, api, provider=provider))
    assert api.log == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_error_status_whose_body_is_cut_short_is_still_that_status(tmp_path, provider):
    """An error status's body is read for its message only: what came of it is kept, and the 401 stops the
    stage at once, where a body refused as undecodable would have been a connection error asked again."""
    with CutAPI() as api:
        api.faults = ["401_cut_gzip"] * 4
        with pytest.raises(WarmstartError, match="HTTP 401") as caught:
            rollouts(recipe_for(tmp_path, api, provider=provider))
        assert len(api.log) == 1
    assert "\n" not in str(caught.value)
