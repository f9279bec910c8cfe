"""Anthropic Messages API payloads <-> canonical Messages: recorded responses, round trips, request shapes.

The responses below are written as the API returns them (JSON bodies of `messages.create`), and every
request this module builds is checked against the SDK's own param types (`assert_valid_request`).
"""

from __future__ import annotations

import json

import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import (
    MessageParam,
    RedactedThinkingBlockParam,
    TextBlockParam,
    ThinkingBlockParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)
from anthropic.types import Usage as AnthropicUsage
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from pydantic import TypeAdapter, ValidationError

from warmstart.errors import WarmstartError
from warmstart.policies.anthropic_format import (
    BLOCKS_PREFIX,
    RAW_ARGUMENTS_KEY,
    finish_reason,
    from_anthropic,
    to_anthropic,
    usage_from_anthropic,
)
from warmstart.types import Message, ToolCall, ToolFunction, Usage

MODEL = "claude-sonnet-4-5-20250929"
SIGNATURE = (
    "EuYBCkQYAiJAgCs1le6/Pol5Z4/JMomVOouGrWdhYNsH3ukzUECbB6iWrSQtsQuRHJID6lWV2kRuA6nG0d1hWgWsYtB0gT5ZQBIMfIBMmRPxv6"
    "JT9mVNGgwlyWbmLq8wpFZzcNAiMF0khN1+ZN+hfV+RGcqHE9fMdNOSEEMi3bTPDMn6t9GlBcgjyVlzsK2gvyhAgiS3hSoQ2W9prTvP7N7wXmhIUuInzRgC"
)
REDACTED_DATA = (
    "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB5URj2pLmN0kF8Crnl"
    "hSKw4KhQ9hZb8xVvF2W9QmXmHkC3lK4mKvC7fH2sYtUaAiZGE="
)

THINKING_TEXT_TOOL_USE = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [
        {
            "type": "thinking",
            "thinking": "The user wants 4821*937. Multiplying 4-digit by 3-digit numbers by hand is error-prone; the calculator tool is available, so I should call it.",
            "signature": SIGNATURE,
        },
        {"type": "text", "text": "I'll compute that with the calculator."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "calculator",
            "input": {"expression": "4821*937"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 512,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2048,
        "output_tokens": 187,
    },
}

TOOL_USE_ONLY = {
    "id": "msg_014XuWbQZoKrvcbnNN3jGJRe",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [
        {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "calculator",
            "input": {"expression": "4821*937"},
        },
        {
            "type": "tool_use",
            "id": "toolu_01K7P2u4JZkSGbqqb5rZ3ZcS",
            "name": "calculator",
            "input": {"expression": "12*12"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 403,
        "cache_creation_input_tokens": None,
        "cache_read_input_tokens": None,
        "output_tokens": 96,
    },
}

MAX_TOKENS = {
    "id": "msg_01HCDu5LRGeP2o7s2xGmxyx8",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [
        {
            "type": "thinking",
            "thinking": "Let me work through the proof by induction. Base case n = 1:",
            "signature": SIGNATURE[::-1],
        },
        {
            "type": "text",
            "text": "We proceed by induction on n. For n = 1 the sum is 1 = 1(1+1)/2. Suppose the claim holds for",
        },
    ],
    "stop_reason": "max_tokens",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 88,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 1024,
    },
}

REFUSAL = {
    "id": "msg_01RefusalXk3v9a8QHz7nPq",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [],
    "stop_reason": "refusal",
    "stop_sequence": None,
    "stop_details": {
        "type": "refusal",
        "category": "cyber",
        "explanation": "The request asks for working exploit code.",
    },
    "usage": {"input_tokens": 61, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 4},
}

REDACTED = {
    "id": "msg_01Redact3dTh1nk1ngXyZ",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [
        {"type": "thinking", "thinking": "First, list what the question asks for.", "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": REDACTED_DATA},
        {"type": "thinking", "thinking": "So the answer is 42.", "signature": SIGNATURE[:80]},
        {"type": "text", "text": "The answer is 42."},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 140,
        "cache_creation_input_tokens": 1200,
        "cache_read_input_tokens": 0,
        "output_tokens": 310,
    },
}

REDACTED_ONLY = {
    **REDACTED,
    "content": [{"type": "redacted_thinking", "data": REDACTED_DATA}, {"type": "text", "text": "42"}],
}
# thinking `display: "omitted"`: the block comes back with no text, only the signature that must go back
OMITTED_THINKING = {
    **REDACTED,
    "content": [{"type": "thinking", "thinking": "", "signature": SIGNATURE}, {"type": "text", "text": "42"}],
}

USER = Message(role="user", content="What is 4821*937?")
RESPONSES = [THINKING_TEXT_TOOL_USE, TOOL_USE_ONLY, MAX_TOKENS, REDACTED, REDACTED_ONLY, OMITTED_THINKING]

REQUEST = TypeAdapter(MessageCreateParamsNonStreaming)
TURN = TypeAdapter(MessageParam)
BLOCK_PARAMS = {
    "text": TextBlockParam,
    "thinking": ThinkingBlockParam,
    "redacted_thinking": RedactedThinkingBlockParam,
    "tool_use": ToolUseBlockParam,
    "tool_result": ToolResultBlockParam,
}


def assert_valid_request(system: str | None, turns: list[dict]) -> None:
    """The request validates against the SDK's param types, and the rules its types cannot state hold."""
    request = {"model": MODEL, "max_tokens": 4096, "messages": turns, **({} if system is None else {"system": system})}
    REQUEST.validate_python(request)
    assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2) + ["user"] * (len(turns) % 2)
    for turn in turns:
        assert turn["content"], "the API rejects a message without content"
        list(TURN.validate_python(turn)["content"])  # an Iterable in the SDK's types: validated as it is read
        for block in turn["content"]:
            param = BLOCK_PARAMS[block["type"]]
            TypeAdapter(param).validate_python(block)  # required keys and their types
            assert set(block) <= param.__required_keys__ | param.__optional_keys__, f"unknown key in {block}"
            assert block["type"] != "text" or block["text"].strip(), "the API rejects empty text blocks"


def parse(response: dict) -> tuple[Message, str]:
    return from_anthropic(response["content"], response["stop_reason"])


def test_the_request_check_can_fail():
    with pytest.raises(ValidationError):  # tool_result without tool_use_id
        assert_valid_request(None, [{"role": "user", "content": [{"type": "tool_result", "content": "144"}]}])
    with pytest.raises(AssertionError):  # a misspelt key the SDK's validation would ignore
        assert_valid_request(
            None, [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "contents": "144"}]}]
        )
    with pytest.raises(AssertionError):
        assert_valid_request(None, [{"role": "user", "content": [{"type": "text", "text": " "}]}])


def test_thinking_text_and_tool_use_are_parsed():
    message, finish = parse(THINKING_TEXT_TOOL_USE)
    assert finish == "tool_calls"
    assert message.reasoning == THINKING_TEXT_TOOL_USE["content"][0]["thinking"]
    assert message.reasoning_signature == SIGNATURE
    assert message.content == "I'll compute that with the calculator."
    assert message.tool_calls == [
        ToolCall(
            id="toolu_01A09q90qw90lq917835lq9",
            function=ToolFunction(name="calculator", arguments='{"expression": "4821*937"}'),
        )
    ]


@pytest.mark.parametrize("response", RESPONSES, ids=lambda r: r["id"] + str(len(r["content"])))
def test_round_trip_gives_back_the_original_blocks(response):
    message, _ = parse(response)
    system, turns = to_anthropic([USER, message])
    assert system is None
    assert turns[1] == {"role": "assistant", "content": response["content"]}
    assert_valid_request(system, turns)


@pytest.mark.parametrize("response", RESPONSES + [REFUSAL], ids=lambda r: r["id"] + str(len(r["content"])))
def test_sdk_objects_parse_like_dicts(response):
    sdk = AnthropicMessage.model_validate(response)
    assert from_anthropic(sdk.content, sdk.stop_reason) == parse(response)


def test_tool_use_only_and_max_tokens():
    message, finish = parse(TOOL_USE_ONLY)
    assert (message.content, message.reasoning, message.reasoning_signature, finish) == ("", None, None, "tool_calls")
    assert [json.loads(c.function.arguments) for c in message.tool_calls] == [
        {"expression": "4821*937"},
        {"expression": "12*12"},
    ]
    message, finish = parse(MAX_TOKENS)
    assert finish == "length"
    assert message.content.endswith("Suppose the claim holds for") and message.tool_calls is None


def test_refusal_has_no_turn_to_send():
    message, finish = parse(REFUSAL)
    assert finish == "refusal"
    assert (message.content, message.reasoning, message.tool_calls) == ("", None, None)
    _, turns = to_anthropic([USER, message, Message(role="user", content="Explain the vulnerability instead.")])
    assert turns == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": USER.content},
                {"type": "text", "text": "Explain the vulnerability instead."},
            ],
        }
    ]


def test_redacted_thinking_is_kept_sendable_but_unreadable():
    message, finish = parse(REDACTED)
    assert finish == "stop"
    assert message.reasoning == "First, list what the question asks for.\n\nSo the answer is 42."
    assert message.reasoning_signature.startswith(BLOCKS_PREFIX)
    assert REDACTED_DATA not in message.reasoning
    only, _ = parse(REDACTED_ONLY)
    assert only.reasoning is None and only.content == "42"


def test_reasoning_edited_after_signing_is_not_sent():
    for response in (REDACTED, THINKING_TEXT_TOOL_USE):
        message, _ = parse(response)
        _, turns = to_anthropic([USER, message.model_copy(update={"reasoning": None})])  # answer-only ablation
        assert {b["type"] for b in turns[1]["content"]} <= {"text", "tool_use"}
    edited = parse(REDACTED)[0].model_copy(update={"reasoning": "a different chain"})
    _, turns = to_anthropic([USER, edited])
    assert turns[1]["content"] == [{"type": "text", "text": "The answer is 42."}]


def test_reasoning_without_signature_is_dropped_not_folded():
    message = Message(role="assistant", reasoning="4821*937: 4821*900 = 4338900, 4821*37 = 178377", content="4517277")
    system, turns = to_anthropic([USER, message])
    assert turns[1] == {"role": "assistant", "content": [{"type": "text", "text": "4517277"}]}
    assert "4338900" not in json.dumps(turns) and "<think>" not in json.dumps(turns)
    assert_valid_request(system, turns)


def test_multi_turn_tool_results_share_one_user_turn():
    assistant, _ = parse(TOOL_USE_ONLY)
    first, second = (c.id for c in assistant.tool_calls)
    conversation = [
        Message(role="system", content="You are a careful assistant. Use the calculator for arithmetic."),
        Message(role="user", content="What is 4821*937, and what is 12*12?"),
        assistant,
        Message(role="tool", tool_call_id=first, content="4517277"),
        Message(role="tool", tool_call_id=second, content="144"),
        Message(role="user", content="Now add the two results."),
    ]
    system, turns = to_anthropic(conversation)
    assert system == "You are a careful assistant. Use the calculator for arithmetic."
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == TOOL_USE_ONLY["content"]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": first, "content": "4517277"},
        {"type": "tool_result", "tool_use_id": second, "content": "144"},
        {"type": "text", "text": "Now add the two results."},
    ]
    assert_valid_request(system, turns)


def test_system_messages_are_joined_into_system():
    messages = [Message(role="system", content="Be brief."), USER, Message(role="system", content="Answer in English.")]
    system, turns = to_anthropic(messages)
    assert system == "Be brief.\n\nAnswer in English."
    assert turns == [{"role": "user", "content": [{"type": "text", "text": USER.content}]}]
    assert to_anthropic([USER])[0] is None
    assert to_anthropic([Message(role="system", content=""), USER])[0] is None


def test_arguments_that_are_not_an_object_are_wrapped_raw():
    calls = [
        ToolCall(id=f"call-{i}", function=ToolFunction(name="calculator", arguments=raw))
        for i, raw in enumerate(["4821*937", "[1, 2]"])
    ]
    _, turns = to_anthropic([USER, Message(role="assistant", content="", tool_calls=calls)])
    assert [b["input"] for b in turns[1]["content"]] == [{RAW_ARGUMENTS_KEY: "4821*937"}, {RAW_ARGUMENTS_KEY: "[1, 2]"}]
    assert_valid_request(None, turns)


def test_empty_text_is_never_sent():
    call = ToolCall(id="toolu_1", function=ToolFunction(name="calculator", arguments='{"expression": "1/0"}'))
    conversation = [
        USER,
        Message(role="assistant", content="  \n", tool_calls=[call]),
        Message(role="tool", tool_call_id="toolu_1", content=""),
        Message(role="user", content=""),
    ]
    system, turns = to_anthropic(conversation)
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {"expression": "1/0"}}
    ]
    assert turns[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_1"}]
    assert_valid_request(system, turns)


def test_what_cannot_be_represented_is_an_error():
    with pytest.raises(WarmstartError, match="tool_call_id"):
        to_anthropic([USER, Message(role="tool", content="144")])
    server_tool = {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {"query": "4821*937"}}
    with pytest.raises(WarmstartError, match="server_tool_use"):
        from_anthropic([server_tool], "end_turn")


@pytest.mark.parametrize(
    "stop_reason, expected",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "refusal"),
        ("pause_turn", "pause_turn"),
        (None, "unknown"),
    ],
)
def test_finish_reasons(stop_reason, expected):
    assert finish_reason(stop_reason) == expected
    assert from_anthropic([], stop_reason)[1] == expected


def test_usage_counts_cached_prompt_tokens_as_input():
    assert usage_from_anthropic(THINKING_TEXT_TOOL_USE["usage"]) == Usage(
        tokens_in=2560, tokens_out=187, tokens_cached=2048
    )
    assert usage_from_anthropic(REDACTED["usage"]) == Usage(tokens_in=1340, tokens_out=310, tokens_cached=0)
    assert usage_from_anthropic(AnthropicMessage.model_validate(TOOL_USE_ONLY).usage) == Usage(
        tokens_in=403, tokens_out=96
    )
    assert usage_from_anthropic(AnthropicUsage(input_tokens=7, output_tokens=3)) == Usage(tokens_in=7, tokens_out=3)
    assert usage_from_anthropic({"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 4}) == Usage(
        tokens_in=9, tokens_out=1, tokens_cached=4
    )
    # No usage, or counts that are not whole numbers: None, and the client refuses the reply (asks again,
    # never prices it: tests/policies/test_api_faults.py).
    assert usage_from_anthropic(None) is None
    assert usage_from_anthropic({"input_tokens": "5", "output_tokens": 1}) is None
