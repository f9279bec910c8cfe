"""The response cache's key holds every setting that changes the answer: a run with Anthropic's thinking on was
answered from the replies a run with it off had cached (no reasoning at all), and the reverse; so was a run
that sends no seed from one that sent them. A setting left at its default keeps the key as it was."""

from __future__ import annotations

from scripted_api import Scripted, message_reply, right_answer
from test_api_faults import recipe_for, rollouts


def thinks_when_asked(path: str, body: dict, n: int) -> dict:
    blocks = [{"type": "text", "text": right_answer(body)}]
    if body.get("thinking"):
        blocks.insert(0, {"type": "thinking", "thinking": "add the numbers", "signature": "c2ln"})
    return {"body": message_reply(blocks, model=body["model"])}


def test_turning_anthropic_thinking_on_or_off_asks_again_instead_of_reading_the_cache(tmp_path):
    thinking = ["api.thinking_tokens=1024", "generate.max_new_tokens=2048"]
    with Scripted(thinks_when_asked) as api:
        [plain] = rollouts(recipe_for(tmp_path, api, provider="anthropic"))
        [thought] = rollouts(recipe_for(tmp_path, api, *thinking, provider="anthropic"))
        [cached] = rollouts(recipe_for(tmp_path, api, *thinking, provider="anthropic"))
        [plain_again] = rollouts(recipe_for(tmp_path, api, provider="anthropic"))
    assert len(api.log) == 2 and "thinking" in api.log[1]["body"]
    assert plain.messages[-1].reasoning is None and thought.messages[-1].reasoning == "add the numbers"
    assert cached.usage[0].from_cache and cached.messages[-1].reasoning == "add the numbers"
    assert plain_again.usage[0].from_cache and plain_again.messages[-1].reasoning is None


def test_a_run_that_sends_no_seed_is_not_answered_by_replies_to_seeded_requests(tmp_path):
    with Scripted() as api:
        [seeded] = rollouts(recipe_for(tmp_path, api))
        [unseeded] = rollouts(recipe_for(tmp_path, api, "api.send_seed=false"))
        [seeded_again] = rollouts(recipe_for(tmp_path, api))
    assert len(api.log) == 2 and "seed" in api.log[0]["body"] and "seed" not in api.log[1]["body"]
    assert not seeded.usage[0].from_cache and not unseeded.usage[0].from_cache
    assert seeded_again.usage[0].from_cache  # the default keeps the key a cache filled earlier was written under
