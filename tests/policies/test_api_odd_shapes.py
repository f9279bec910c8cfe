"""The teacher client under 200s whose JSON is of the wrong shape (odd_api.py's `SHAPES`): each refused as a
reply warmstart cannot read, naming the part that is wrong, asked again and billed by its real counts;
log-probs that are no log-probabilities never reach a trajectory."""

from __future__ import annotations

import pytest
from odd_api import OddAPI
from test_api_faults import recipe_for, rollouts

LOGPROBS = ("api.top_logprobs=2",)  # the OpenAI cases ask for log-probs: a reply then carries them


@pytest.mark.parametrize(
    "provider, shape, named",
    [
        # each was named by the exception reading it raised ("(AttributeError)", "(ValidationError)")
        ("openai", "message_null", "choices[0].message is null, not an object"),
        ("openai", "choices_object", "choices is an object, not a list"),
        ("openai", "content_list", "choices[0].message.content is a list, not text"),
        ("openai", "finish_number", "choices[0].finish_reason is a number, not text"),
        ("openai", "reasoning_number", "choices[0].message.reasoning_content is a number, not text"),
        ("openai", "arguments_object", "choices[0].message.tool_calls[0].function.arguments is an object, not text"),
        ("openai", "alternative_text", "choices[0].logprobs.content[0].top_logprobs[0] is a string, not an object"),
        # each was kept on the trajectory as it came (or, a list, as no log-probs at all)
        ("openai", "logprobs_list", "choices[0].logprobs is a list, not an object"),
        ("openai", "token_number", "choices[0].logprobs.content[0].token is a number, not text"),
        ("openai", "logprob_text", "choices[0].logprobs.content[0].logprob is a string, not a number"),
        ("openai", "logprob_nan", "choices[0].logprobs.content[0].logprob is nan, not a log-probability"),
        ("openai", "logprob_positive", "choices[0].logprobs.content[0].logprob is 5.0, not a log-probability"),
        ("anthropic", "block_no_type", "content[0] has no type"),
        ("anthropic", "block_null", "content[0] is null, not a block"),
        ("anthropic", "content_text", "content is a string, not a list of blocks"),
        ("anthropic", "text_number", "content[0].text is a number, not text"),
        ("anthropic", "stop_number", "stop_reason is a number, not text"),
        # a tool call whose arguments were "null", kept as a clean stop
        ("anthropic", "tool_use_no_input", "content[0].input is null, not an object"),
    ],
)
def test_a_reply_of_the_wrong_shape_is_refused_naming_what_is_wrong_and_billed(tmp_path, provider, shape, named):
    with OddAPI() as api:
        api.faults = [shape] * 4  # every try of api.max_retries=3
        [failed] = rollouts(recipe_for(tmp_path, api, *(LOGPROBS if provider == "openai" else ()), provider=provider))
    said = f"request failed: invalid reply: a message warmstart cannot read ({named}"
    assert failed.error.startswith(said) and failed.error.endswith("(after 3 retries)"), failed.error
    assert failed.finish_reason is None and failed.logprobs is None
    assert len(failed.rejected_usage) == 4  # its counts were real: billed each time


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_200_of_json_that_is_not_an_object_says_so(tmp_path, provider):
    """It said "not JSON (list instead of ChatCompletion)" of a body that is JSON."""
    with OddAPI() as api:
        api.faults = ["reply_list"] * 4
        [failed] = rollouts(recipe_for(tmp_path, api, provider=provider))
    assert "the server answered 200 with a body that is JSON but not an object: a list (after 3" in failed.error


def test_token_bytes_that_are_not_bytes_are_left_out_and_the_token_kept_by_its_text(tmp_path):
    with OddAPI() as api:
        api.faults = ["bytes_not_bytes"]
        [trajectory] = rollouts(recipe_for(tmp_path, api, *LOGPROBS))
        assert len(api.log) == 1
    first = trajectory.logprobs[0][0]
    assert trajectory.error is None and first["token"] == "Answer:" and "bytes" not in first
    assert first["top_logprobs"][0]["bytes"] == list(b"Answer:")  # its alternatives' bytes, which are bytes, kept


@pytest.mark.parametrize(
    "shape, finish, reasoning",
    [
        ("stop_unknown", "a_reason_of_the_future", None),  # named as sent: not cached, and curate drops it
        ("thinking_unsigned", "stop", "7"),  # a compatible server that signs nothing: kept, never sent back
    ],
)
def test_an_anthropic_reply_the_api_may_yet_send_is_kept_as_it_came(tmp_path, shape, finish, reasoning):
    with OddAPI() as api:
        api.faults = [shape]
        [trajectory] = rollouts(recipe_for(tmp_path, api, provider="anthropic"))
        assert len(api.log) == 1
    assert trajectory.error is None and trajectory.finish_reason == finish
    assert trajectory.messages[-1].reasoning == reasoning and trajectory.messages[-1].reasoning_signature is None
    cache = tmp_path / "run" / "cache" / "responses.jsonl"
    assert len(cache.read_text().splitlines() if cache.exists() else []) == (finish == "stop")
