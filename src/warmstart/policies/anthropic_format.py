"""Anthropic Messages API payloads <-> warmstart's canonical Message (pure functions, no network).

`to_anthropic` turns a conversation into the `system` string and `messages` list that
`client.messages.create` takes; `from_anthropic` turns a response's content blocks into the canonical
assistant Message and a finish reason; `usage_from_anthropic` maps the response's token counts.

The API's rules this module follows, each of which is a 400 error when broken:
- roles alternate: all results of one assistant turn's tool calls go back in ONE user message, and a user
  message that follows them joins that same user turn (as a text block after the tool_result blocks);
- no empty (or whitespace-only) text blocks, and no message without content blocks;
- a thinking block is sent back only with its signature, unchanged, and in its original order.

Choices, and why:
- **Reasoning without a signature is dropped** on the way out (not folded into the text as
  `<think>...</think>`). The API refuses a thinking block without a valid signature, and text shown to
  Claude as its own earlier output is text it imitates: folded reasoning would teach the teacher, in
  context, to write its chain into visible text, and that would leak into the `content` of the very turns
  we distil from. The API strips earlier turns' thinking from the model's context anyway, so dropping
  unsigned reasoning (e.g. from another policy's turn) shows Claude what it would see of its own.
- **Arguments that are not a JSON object** (only another policy's malformed call can have them: Claude's
  `input` is always an object) are sent as `{"raw_arguments": <the text as written>}`, since `input` must
  be an object. Sending `{}` would show Claude a call that looks valid next to a tool result that says it
  was malformed; the wrapped text keeps what was actually written. `from_anthropic` does not unwrap it:
  a real tool may have a parameter of that name.
- **Several reasoning blocks, redacted_thinking blocks, or thinking with no visible text** (the
  `display: "omitted"` setting) cannot be carried by one `reasoning` string and one signature. For these
  `reasoning_signature` holds `anthropic-blocks:` + the JSON list of the turn's reasoning blocks exactly as
  received, and `to_anthropic` sends them back verbatim, so the turn stays sendable. (A signature from the
  API is base64 and never contains `:`, so the two forms cannot be confused.) The common case — one
  thinking block with text — keeps its plain signature. What is lost: the content of redacted blocks is
  encrypted, so `reasoning` (the training text) holds only the readable thinking, joined by blank lines.
  If `reasoning` was changed after the fact, the blocks no longer match it and are dropped like unsigned
  reasoning rather than sent with signatures the API would reject; but for reasoning added after them (a
  chain the model also wrote in `<think>` tags into its text, `reasoning_tags.py`): that is the reply's own,
  unsigned, and the signed blocks still go back exactly as they were signed (`signed_apart`).

Also lost on the way in: citations on text blocks, and the order of text relative to tool_use blocks
(the canonical Message has one `content` and then its `tool_calls`; text blocks are concatenated, as the
API splits one text into several blocks around citations). Block types the canonical Message cannot hold
(server tools: web search, code execution, ...) are an error, not silently dropped: `from_anthropic` raises,
and `anthropic_api.py` refuses such a reply as invalid and asks again.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from ..errors import WarmstartError
from ..lm.toolcalls import call_arguments
from ..types import Message, ToolCall, ToolFunction, Usage
from .backend import ReplyShape, require_kind

BLOCKS_PREFIX = "anthropic-blocks:"  # marks a reasoning_signature that holds whole reasoning blocks
RAW_ARGUMENTS_KEY = "raw_arguments"
REASONING_TYPES = ("thinking", "redacted_thinking")
THINKING_SEPARATOR = "\n\n"


# ---- canonical -> request ----------------------------------------------------------------------------


def to_anthropic(messages: list[Message]) -> tuple[str | None, list[dict]]:
    """(the `system` string, or None without system messages; the `messages` list for messages.create).

    System messages, wherever they stand, are joined by blank lines into `system`: the API has no system
    role inside `messages`. Consecutive messages of the same API role (tool results and user messages are
    both `user`) are merged into one turn; a message with nothing sendable is left out, and its
    neighbours merge.
    """
    system = [m.content for m in messages if m.role == "system" and _has_text(m.content)]
    turns: list[dict] = []
    for m in messages:
        if m.role == "system":
            continue
        blocks = _blocks(m)
        if not blocks:  # the API rejects a message without content
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return THINKING_SEPARATOR.join(system) or None, turns


def _blocks(m: Message) -> list[dict]:
    if m.role == "assistant":
        return _reasoning_blocks(m) + _text_blocks(m.content) + [_tool_use(c) for c in m.tool_calls or []]
    if m.role == "tool":
        return [_tool_result(m)]
    return _text_blocks(m.content)


def _has_text(text: str | None) -> bool:
    return bool(text and text.strip())


def _text_blocks(text: str | None) -> list[dict]:
    # the text is sent as written (not stripped) so that a response's text block round-trips unchanged
    return [{"type": "text", "text": text}] if _has_text(text) else []


def _reasoning_blocks(m: Message) -> list[dict]:
    """The thinking blocks to send back: only what carries a signature that still matches `reasoning`."""
    signature = m.reasoning_signature
    if signature is None:
        return []  # unsigned reasoning is dropped: see the module docstring
    if signature.startswith(BLOCKS_PREFIX):
        blocks = json.loads(signature[len(BLOCKS_PREFIX) :])
        return blocks if _still_signed(_readable_reasoning(blocks), m.reasoning) else []
    if not m.reasoning:
        return []
    return [{"type": "thinking", "thinking": m.reasoning, "signature": signature}]


def _still_signed(signed: str | None, reasoning: str | None) -> bool:
    """Whether `reasoning` still holds the signed blocks' text unchanged: all of it, or first, with unsigned
    reasoning added after it (`signed_apart`)."""
    if signed is None or reasoning == signed:
        return True
    return reasoning is not None and reasoning.startswith(signed + THINKING_SEPARATOR)


def signed_apart(message: Message) -> str | None:
    """The message's reasoning_signature in the form that keeps its signed thinking as it was signed (the
    blocks, verbatim), for reasoning about to be added to (`reasoning_tags.split_reasoning`): a plain signature
    would be sent back with the reasoning as it then is, which the API refuses (400: invalid signature)."""
    signature = message.reasoning_signature
    if signature is None or signature.startswith(BLOCKS_PREFIX) or not message.reasoning:
        return signature
    return BLOCKS_PREFIX + json.dumps([{"type": "thinking", "thinking": message.reasoning, "signature": signature}])


def _tool_use(call: ToolCall) -> dict:
    arguments = call_arguments(call)
    tool_input = arguments if arguments is not None else {RAW_ARGUMENTS_KEY: call.function.arguments}
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": tool_input}


def _tool_result(m: Message) -> dict:
    if m.tool_call_id is None:
        raise WarmstartError("a tool message has no tool_call_id: Anthropic needs it to pair the result with its call")
    block = {"type": "tool_result", "tool_use_id": m.tool_call_id}
    if _has_text(m.content):  # `content` is optional; an empty one is left out rather than sent empty
        block["content"] = m.content
    return block


# ---- response -> canonical ---------------------------------------------------------------------------


def from_anthropic(content_blocks: list[Any], stop_reason: str | None) -> tuple[Message, str]:
    """(the assistant Message, the finish reason) of one response.

    Blocks may be plain dicts (a recorded JSON response) or the SDK's pydantic block objects. Thinking
    becomes `reasoning` with its signature, text blocks are concatenated into `content`, tool_use blocks
    become ToolCalls with `arguments = json.dumps(input)`. redacted_thinking blocks have no readable text:
    they are absent from `reasoning` and kept, sendable, in `reasoning_signature` (module docstring).
    """
    blocks = [_read_block(b, f"content[{i}]") for i, b in enumerate(content_blocks)]
    require_kind(stop_reason, (str, type(None)), "stop_reason", "text")
    unsupported = sorted({b["type"] for b in blocks} - {"text", "tool_use", *REASONING_TYPES})
    if unsupported:
        raise WarmstartError(
            f"Anthropic response has content blocks warmstart cannot represent: {', '.join(unsupported)}"
        )
    reasoning = [_reasoning_block(b) for b in blocks if b["type"] in REASONING_TYPES]
    message = Message(
        role="assistant",
        content="".join(b["text"] for b in blocks if b["type"] == "text"),
        reasoning=_readable_reasoning(reasoning),
        reasoning_signature=_signature(reasoning),
        tool_calls=[_tool_call(b) for b in blocks if b["type"] == "tool_use"] or None,
    )
    return message, finish_reason(stop_reason)


# The fields of each block type warmstart reads, and what each must be: the SDK builds its blocks from the
# body unchecked, and a block missing one would be read as a KeyError (or a tool call whose input is null).
# A thinking block's signature may be missing (a compatible server that signs nothing): such reasoning is
# kept, unsigned, and never sent back (the module docstring).
TEXT, OBJECT, OPTIONAL_TEXT = ((str,), "text"), ((dict,), "an object"), ((str, type(None)), "text")
BLOCK_FIELDS = {
    "text": {"text": TEXT},
    "tool_use": {"id": TEXT, "name": TEXT, "input": OBJECT},
    "thinking": {"thinking": TEXT, "signature": OPTIONAL_TEXT},
    "redacted_thinking": {"data": TEXT},
}


def _read_block(block: Any, where: str) -> dict:
    """A content block as a dict, its type and the fields warmstart reads checked (`ReplyShape` naming
    the first that is not what the API says it is)."""
    # No serializer warning for a field of the wrong type: it is checked, and named, here
    fields = block.model_dump(warnings=False) if isinstance(block, BaseModel) else block
    require_kind(fields, (dict,), where, "a block")
    if not isinstance(fields.get("type"), str):
        raise ReplyShape(f"{where} has no type")
    for name, (kinds, wanted) in BLOCK_FIELDS.get(fields["type"], {}).items():
        require_kind(fields.get(name), kinds, f"{where}.{name}", wanted)
    return fields


def _reasoning_block(block: dict) -> dict:
    """Only the fields the API takes back: SDK objects carry more (None-valued) fields."""
    if block["type"] == "thinking":
        return {"type": "thinking", "thinking": block["thinking"], "signature": block.get("signature")}
    return {"type": "redacted_thinking", "data": block["data"]}


def _readable_reasoning(blocks: list[dict]) -> str | None:
    texts = [b["thinking"] for b in blocks if b["type"] == "thinking" and b["thinking"]]
    return THINKING_SEPARATOR.join(texts) or None


def _signature(blocks: list[dict]) -> str | None:
    if not blocks:
        return None
    if len(blocks) == 1 and blocks[0]["type"] == "thinking" and blocks[0]["thinking"]:
        return blocks[0]["signature"]  # the common case: one readable thinking block
    return BLOCKS_PREFIX + json.dumps(blocks)


def _tool_call(block: dict) -> ToolCall:
    return ToolCall(id=block["id"], function=ToolFunction(name=block["name"], arguments=json.dumps(block["input"])))


def finish_reason(stop_reason: str | None) -> str:
    """Anthropic's stop_reason in the OpenAI vocabulary the rest of warmstart uses.

    Unknown reasons (e.g. `pause_turn`) pass through as they are. None — which only a streaming
    `message_start` event has — becomes "unknown", so that it is never mistaken for a clean stop.
    """
    match stop_reason:
        case "end_turn" | "stop_sequence":
            return "stop"
        case "max_tokens" | "model_context_window_exceeded":  # both: the turn hit a token limit
            return "length"
        case "tool_use":
            return "tool_calls"
        case None:
            return "unknown"
        case _:  # "refusal" maps to itself, as does anything this module does not know
            return stop_reason


def usage_from_anthropic(usage: Any, model: str | None = None) -> Usage | None:
    """Token counts of one response (the SDK's Usage or its dict); None where the server sent none.

    Anthropic's `input_tokens` excludes cached tokens, so the prompt's total is the sum of the three input
    counts; the cache fields may be missing or None. Counts are taken as sent, negative ones included:
    `api.reply_problem` refuses a reply whose counts are impossible.
    """
    if usage is None:
        return None
    fields = usage.model_dump(warnings=False) if isinstance(usage, BaseModel) else dict(usage)  # checked below
    uncached, tokens_out = fields.get("input_tokens"), fields.get("output_tokens")
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in (uncached, tokens_out)):
        return None
    written, read = (fields.get(k) or 0 for k in ("cache_creation_input_tokens", "cache_read_input_tokens"))
    return Usage(tokens_in=uncached + written + read, tokens_out=tokens_out, tokens_cached=read, model=model)
