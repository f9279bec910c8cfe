"""A reasoning model's chain written into its answer text becomes the message's reasoning; nothing else moves."""

from __future__ import annotations

import pytest

from warmstart.policies.anthropic_format import to_anthropic
from warmstart.policies.reasoning_tags import split_reasoning
from warmstart.types import Message, ToolCall, ToolFunction


@pytest.mark.parametrize(
    ("content", "reasoning", "answer"),
    [
        ("<think>a\nb</think>\nAnswer: 4", "a\nb", "Answer: 4"),
        ("  <reasoning>r</reasoning>Answer: 1", "r", "Answer: 1"),
        ("the template opened it</think>\n\nAnswer: 5", "the template opened it", "Answer: 5"),  # closing tag only
        ("only a chain</think>", "only a chain", ""),
    ],
)
def test_a_leading_reasoning_block_is_moved(content, reasoning, answer):
    message = split_reasoning(Message(role="assistant", content=content))
    assert (message.reasoning, message.content) == (reasoning, answer)


@pytest.mark.parametrize(
    "content",
    [
        "plain answer",
        "Answer: <think>x</think>",  # a tag inside the answer is content
        "print('a</think>')",  # a closing tag that does not end its line: code, not a chain's end
        "<think>never closed",
    ],
)
def test_text_without_a_leading_block_is_left_alone(content):
    message = split_reasoning(Message(role="assistant", content=content))
    assert message.content == content and message.reasoning is None


def test_reasoning_the_server_separated_is_kept_first():
    message = split_reasoning(Message(role="assistant", content="<think>more</think>ok", reasoning="field"))
    assert message.reasoning == "field\n\nmore" and message.content == "ok"


SIGNED = "I should call the calculator."
CALL = ToolCall(id="toolu_1", function=ToolFunction(name="calculator", arguments='{"expression": "2+2"}'))


@pytest.mark.parametrize(
    "content", ["<think>quick check</think>Let me compute.", "quick check</think>\nLet me compute."]
)
def test_signed_thinking_goes_back_exactly_as_signed_with_the_tagged_chain_kept_apart(content):
    """Anthropic's thinking, signed, and a chain the model also wrote in tags into its text: the chain was joined
    to the signed block's text, sent back with the signature of the text before it (the API's 400, which
    stopped the stage)."""
    signed = Message(role="assistant", content=content, reasoning=SIGNED, reasoning_signature="c2ln", tool_calls=[CALL])
    message = split_reasoning(signed)
    assert (message.reasoning, message.content) == (f"{SIGNED}\n\nquick check", "Let me compute.")
    _, [turn] = to_anthropic([message])
    assert turn["content"][0] == {"type": "thinking", "thinking": SIGNED, "signature": "c2ln"}
    assert [block["type"] for block in turn["content"]] == ["thinking", "text", "tool_use"]


def test_signed_thinking_changed_after_the_fact_is_still_not_sent():
    message = split_reasoning(
        Message(role="assistant", content="<think>more</think>ok", reasoning=SIGNED, reasoning_signature="c2ln")
    )
    edited = message.model_copy(update={"reasoning": "I should not call the calculator.\n\nmore"})
    assert to_anthropic([edited])[1] == [{"role": "assistant", "content": [{"type": "text", "text": "ok"}]}]


def test_a_signed_thinking_turn_with_a_tagged_chain_continues_over_http(tmp_path):
    """The same through the anthropic SDK: the second turn sends the thinking block as signed, which a server
    that checks signatures as Anthropic's does takes."""
    from scripted_api import Scripted, message_reply
    from test_api_faults import recipe_for

    from warmstart.envs.calculator import Calculator
    from warmstart.policies import make_policy
    from warmstart.types import Request, Sampling

    def checks_signatures(path: str, body: dict, n: int) -> dict:
        if n == 0:
            thinking = {"type": "thinking", "thinking": SIGNED, "signature": "c2ln"}
            text = {"type": "text", "text": "<think>quick check</think>Let me compute."}
            call = {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {"expression": "2+2"}}
            return {"body": message_reply([thinking, text, call], stop="tool_use")}
        [sent] = [block for block in body["messages"][1]["content"] if block["type"] == "thinking"]
        if sent != {"type": "thinking", "thinking": SIGNED, "signature": "c2ln"}:
            error = {"type": "invalid_request_error", "message": "Invalid `signature` in `thinking` block"}
            return {"status": 400, "body": {"type": "error", "error": error}}
        return {"body": message_reply()}

    env = Calculator()
    settings = ["env.name=calculator", "env.max_turns=3", "api.thinking_tokens=1024", "generate.max_new_tokens=2048"]
    with Scripted(checks_signatures) as api:
        recipe = recipe_for(tmp_path, api, *settings, provider="anthropic")
        policy = make_policy(recipe.generate.teacher, env, "generate.teacher", recipe)
        [rollout] = policy.rollout([Request(env.tasks("train", 1, 0)[0], 0)], Sampling(1.0, 1.0, 2048), seed=0)
    assert rollout.error is None and len(api.log) == 2
    assert rollout.messages[1].reasoning == f"{SIGNED}\n\nquick check"
