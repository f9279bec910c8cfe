"""A trajectory as a row: every message has every field with one type, tool calls in the OpenAI shape,
the reasoning where the option puts it (warmstart's own rendering, for --think-in-content)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from helpers import make_trajectory
from warmstart.export.rows import trajectory_row
from warmstart.export.schema import COLUMNS, MESSAGE, TOOL_CALL
from warmstart.lm.chat import template_messages
from warmstart.types import Message, ToolCall, ToolFunction


def test_every_row_and_message_has_exactly_the_schemas_fields():
    row = trajectory_row(make_trajectory())
    assert list(row) == list(COLUMNS)
    for message in row["messages"]:
        assert list(message) == list(MESSAGE)
        assert isinstance(message["content"], str) and isinstance(message["tool_calls"], list)
        for call in message["tool_calls"]:
            assert list(call) == list(TOOL_CALL) and list(call["function"]) == list(TOOL_CALL["function"])


def test_messages_in_the_openai_shape():
    row = trajectory_row(make_trajectory())
    system, user, call_turn, tool, answer = row["messages"]
    assert user == {
        "role": "user",
        "content": 'What is 2+2? ünïcødé "quotes" \n newline',
        "reasoning_content": None,
        "tool_calls": [],
        "tool_call_id": None,
    }
    assert call_turn["content"] == "" and call_turn["reasoning_content"] == "2+2=4"
    assert call_turn["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"x": "2+2"}'}}
    ]
    assert tool["tool_call_id"] == "c1" and tool["content"] == "4"
    assert answer["content"] == "Answer: 4" and answer["tool_calls"] == []


def test_verdict_and_provenance_columns():
    t = make_trajectory()
    provenance = t.provenance.model_copy(update={"created": 1767225600.7, "terms": "https://example.com/terms"})
    row = trajectory_row(t.model_copy(update={"provenance": provenance}))
    assert (row["reward"], row["passed"]) == (1.0, True)
    assert (row["provider"], row["model"], row["seed"]) == ("reference", "m", 3)
    assert row["created"] == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert json.loads(row["sampling"]) == {"temperature": 0.7}
    assert row["terms"] == "https://example.com/terms"


def test_arguments_that_are_not_json_are_kept_as_a_json_string():
    bad = ToolCall(id="c", function=ToolFunction(name="", arguments='{"x": 2+'))  # as toolcalls.py keeps a bad call
    t = make_trajectory()
    t = t.model_copy(update={"messages": [*t.messages[:2], Message(role="assistant", tool_calls=[bad])]})
    arguments = trajectory_row(t)["messages"][-1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == '{"x": 2+'


def test_think_in_content_is_warmstarts_own_rendering_of_the_reasoning():
    t = make_trajectory()
    rows = trajectory_row(t, think_in_content=True)["messages"]
    assert [m["content"] for m in rows] == [d["content"] for d in template_messages(t.messages)]
    assert all(m["reasoning_content"] is None for m in rows)


def exported_arguments(text: str):
    call = ToolCall(id="c", function=ToolFunction(name="calc", arguments=text))
    t = make_trajectory()
    t = t.model_copy(update={"messages": [*t.messages[:2], Message(role="assistant", tool_calls=[call])]})
    return trajectory_row(t)["messages"][-1]["tool_calls"][0]["function"]["arguments"]


def test_arguments_datasets_cannot_decode_are_kept_as_a_json_string():
    """NaN and Infinity (Python's json reads them, JSON has none) and integers beyond 64 bits (pandas' ujson,
    which `datasets` decodes with, refuses them): as text, so that they load as the teacher wrote them."""
    for text in ['{"x": NaN}', "Infinity", '{"n": 18446744073709551616}', "[-9223372036854775809]", "1" + "0" * 25]:
        assert json.loads(exported_arguments(text)) == text
    for text in ['{"n": 18446744073709551615, "m": -9223372036854775808}', '{"x": -0.5e300}', "null"]:
        assert exported_arguments(text) == text
