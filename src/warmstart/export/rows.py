"""A trajectory as one exported row: the conversation in the OpenAI chat shape, with the verdict and
the provenance as columns (`schema.COLUMNS`).

Messages carry every field of `schema.MESSAGE` on every turn: `content` is always a string (a tool-call
turn's is ""), `tool_calls` always a list (empty where there are none), `reasoning_content` and
`tool_call_id` null where absent. Tool-call `arguments` stay the JSON text the OpenAI schema has (the
column is typed JSON, `schema.JSON`); text that is not JSON (a call the model wrote badly, kept as
written), or that `datasets` cannot decode as written (NaN, Infinity, an integer beyond 64 bits), is
stored as a JSON string holding it, so that every value decodes to what the file holds.
`reasoning_signature` (an opaque token an Anthropic teacher returns with its reasoning) is not data to
train on and is left out.

`think_in_content` puts the reasoning in the content instead, as `<think>...</think>` before the answer,
exactly as warmstart's own SFT renders it (`lm.chat.template_messages`): for a chat template that does
not render `reasoning_content` (the tiny student's, Llama 3's, Qwen2.5's), which would drop the chain.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone

from ..errors import WarmstartError
from ..types import Message, ToolCall, Trajectory


def trajectory_row(trajectory: Trajectory, think_in_content: bool = False) -> dict:
    verdict, provenance = trajectory.verdict, trajectory.provenance
    where = f"task {trajectory.task_id!r}, sample {trajectory.sample_index}"
    if verdict and not math.isfinite(verdict.reward):  # written as NaN: no JSON, read back by `datasets` as null
        raise WarmstartError(f"{where}: its verdict's reward is {verdict.reward}, not a number a dataset can hold")
    return {
        "messages": [message_row(m, think_in_content) for m in trajectory.messages],
        "task_id": trajectory.task_id,
        "sample_index": trajectory.sample_index,
        "reward": verdict.reward if verdict else None,
        "passed": verdict.passed if verdict else None,
        "provider": provenance.provider,
        "model": provenance.model,
        "created": created_time(provenance.created, where),
        "sampling": json.dumps(provenance.sampling, sort_keys=True),
        "seed": provenance.seed,
        "terms": provenance.terms,
    }


def message_row(message: Message, think_in_content: bool = False) -> dict:
    content, reasoning = message.content or "", message.reasoning
    if think_in_content and reasoning:
        content, reasoning = f"<think>\n{reasoning}\n</think>\n{content}", None
    return {
        "role": message.role,
        "content": content,
        "reasoning_content": reasoning,
        "tool_calls": [tool_call_row(c) for c in message.tool_calls or []],
        "tool_call_id": message.tool_call_id,
    }


def tool_call_row(call: ToolCall) -> dict:
    function = {"name": call.function.name, "arguments": json_text(call.function.arguments)}
    return {"id": call.id, "type": call.type, "function": function}


# The integers `datasets` can decode: it reads JSON columns with pandas' ujson, which refuses any number whose
# integer part lies outside int64 and uint64 ("Value is too big!"), failing the whole dataset's load.
DECODABLE = range(-(2**63), 2**64)


def json_text(text: str) -> str:
    """`text` if it is JSON that `datasets` can decode, else `text` as a JSON string."""
    try:
        json.loads(text, parse_constant=not_json, parse_int=decodable_int, parse_float=decodable_float)
    except ValueError:
        return json.dumps(text)
    return text


def not_json(constant: str) -> None:
    """Python's json reads NaN and Infinity, which JSON has not: `datasets` turns NaN into null."""
    raise ValueError(f"{constant} is not JSON")


def decodable_int(digits: str) -> int:
    if int(digits) not in DECODABLE:
        raise ValueError(f"{digits} is out of range")
    return int(digits)


def decodable_float(number: str) -> float:
    decodable_int(re.split("[.eE]", number)[0])  # ujson reads the integer part as an integer first
    return float(number)


def created_time(unix: float, where: str) -> datetime:
    """To the second, in UTC: the column's type (`schema.TIME`). A time no date can hold (NaN, one written in
    milliseconds, as many tools write them) is one error naming the sample."""
    try:
        return datetime.fromtimestamp(int(unix), timezone.utc)
    except (ValueError, OverflowError, OSError):
        hint = " (in milliseconds? provenance.created is in seconds)" if math.isfinite(unix) and unix > 1e11 else ""
        raise WarmstartError(f"{where}: provenance.created = {unix} is no time{hint}") from None
