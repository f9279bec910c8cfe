"""Tool calls written as text by a local model, in the `<tool_call>{json}</tool_call>` format.

This is the format most open chat templates render a tool call in (Hermes, Qwen2.5, and the tiny
student's template), so parsing it back out of generated text gives the canonical ToolCall:

    <tool_call>
    {"name": "calculator", "arguments": {"expression": "4821*937"}}
    </tool_call>

A call that cannot be parsed (bad JSON, no name, a tag never closed) is kept with an empty name and
the text as written, so that the rollout loop answers it with an error the policy sees (`call_error`)
rather than crashing or dropping it. `tool_results` gives a turn's calls their answers, for local and
API rollouts alike (here, not in the local rollout loop, so that an API rollout never imports torch).
"""

from __future__ import annotations

import json
import re

from ..types import Message, Task, ToolCall, ToolFunction

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
OPEN_TAG = "<tool_call>"
FORMAT_HINT = 'write <tool_call>{"name": TOOL, "arguments": {...}}</tool_call>'


def split_tool_calls(text: str, id_prefix: str) -> tuple[str, list[ToolCall]]:
    """(the text without its tool calls, the calls in order). Ids are `<id_prefix>-<n>`."""
    calls: list[ToolCall] = []

    def take(match: re.Match) -> str:
        calls.append(_parse_one(match.group(1), f"{id_prefix}-{len(calls)}"))
        return ""

    content = TOOL_CALL_RE.sub(take, text)
    head, opened, tail = content.partition(OPEN_TAG)
    if opened:  # a call that was never closed: cut off, or malformed
        calls.append(_unparsed(tail.strip(), f"{id_prefix}-{len(calls)}"))
        content = head
    return content.strip(), calls


def _unparsed(raw: str, call_id: str) -> ToolCall:
    return ToolCall(id=call_id, function=ToolFunction(name="", arguments=raw))


def _parse_one(raw: str, call_id: str) -> ToolCall:
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
            return _unparsed(raw, call_id)
        arguments = json.dumps(data.get("arguments", {}))
    except (ValueError, RecursionError):  # nested past the recursion limit: as unparsable as bad JSON
        return _unparsed(raw, call_id)
    return ToolCall(id=call_id, function=ToolFunction(name=data["name"], arguments=arguments))


def call_arguments(call: ToolCall) -> dict | None:
    """The arguments as a dict, or None when they are not a JSON object (or nest past the recursion
    limit, which `json` raises as RecursionError: such a call is unparsable, not a crash)."""
    try:
        arguments = json.loads(call.function.arguments)
    except (ValueError, RecursionError):
        return None
    return arguments if isinstance(arguments, dict) else None


def call_error(call: ToolCall, tools: list[dict]) -> str | None:
    """What is wrong with a call before any tool runs, as the message the policy will read; None if fine."""
    names = [t["function"]["name"] for t in tools]
    if not call.function.name:
        return f"error: could not parse the tool call; {FORMAT_HINT}"
    if call.function.name not in names:
        return f"error: unknown tool {call.function.name!r}; available: {', '.join(names)}"
    if call_arguments(call) is None:
        return f"error: the arguments of {call.function.name} must be a JSON object"
    return None


def template_tool_calls(calls: list[ToolCall]) -> list[dict]:
    """Calls as chat templates expect them: arguments as a dict where they parse, else the raw text."""
    out = []
    for c in calls:
        arguments = call_arguments(c)
        out.append(
            {
                "id": c.id,
                "type": "function",
                "function": {
                    "name": c.function.name,
                    "arguments": c.function.arguments if arguments is None else arguments,
                },
            }
        )
    return out


def tool_results(env, task: Task, messages: list[Message]) -> list[Message]:
    """One tool message per call of the last (assistant) message: the environment's answer, or the
    error the call had. The environment sees the conversation so far (its state, e.g. earlier writes)."""
    results = []
    for call in messages[-1].tool_calls or []:
        error = call_error(call, list(env.tools))
        content = error if error is not None else env.step(task, call, messages)
        results.append(Message(role="tool", tool_call_id=call.id, content=content))
    return results
