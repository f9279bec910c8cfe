"""Tool-call JSON nested past the recursion limit is an unparsable call, never a RecursionError out of
the rollout loop, an environment's step or its verify (json raises RecursionError, not ValueError)."""

from __future__ import annotations

from warmstart.envs.swe.tools import replay
from warmstart.lm.toolcalls import call_arguments, call_error, split_tool_calls, template_tool_calls
from warmstart.types import Message, ToolCall, ToolFunction

DEEP = "[" * 100_000 + "]" * 100_000
TOOLS = [{"type": "function", "function": {"name": "write_file", "parameters": {}}}]


def deep_call() -> ToolCall:
    arguments = '{"path": "a.py", "content": ' + DEEP + "}"
    return ToolCall(id="c1", function=ToolFunction(name="write_file", arguments=arguments))


def test_deeply_nested_arguments_are_not_a_json_object():
    call = deep_call()
    assert call_arguments(call) is None
    assert call_error(call, TOOLS) == "error: the arguments of write_file must be a JSON object"
    assert template_tool_calls([call])[0]["function"]["arguments"] == call.function.arguments


def test_a_deeply_nested_call_in_model_text_is_kept_unparsed():
    text = 'fix <tool_call>{"name": "run", "arguments": ' + DEEP + "}</tool_call>"
    content, calls = split_tool_calls(text, "x")
    assert content == "fix" and len(calls) == 1 and calls[0].function.name == ""


def test_the_swe_replay_ignores_a_deeply_nested_write():
    messages = [Message(role="assistant", content="", tool_calls=[deep_call()])]
    files, refused = replay({"a.py": "x = 1\n"}, messages)
    assert files == {"a.py": "x = 1\n"} and len(refused) == 1
