"""Building OpenAI chat completion responses (and stream chunks) from generated rows, for `warmstart serve`.

A row is decoded, cut at the first stop string, and parsed as an assistant turn: a leading `<think>`
block goes to `reasoning_content` (as vLLM returns it), and, when the request had tools, `<tool_call>`
blocks become OpenAI `tool_calls` with finish_reason "tool_calls".
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field

from ..lm.chat import parse_completion
from ..lm.generation import produced_ids
from ..lm.scoring import TokenLogprob
from ..lm.token_bytes import TokenBytes, token_text
from .engine import Row

WORD_RE = re.compile(r"\S+\s*|\s+")  # stream pieces: a word with the space after it (or leading space)


@dataclass
class Completion:
    """One generated row as the client sees it."""

    text: str  # special tokens removed, cut before the first stop string
    tokens: int  # completion tokens generated up to the cut, end-of-turn token included
    finish_reason: str  # "stop" | "length"
    logprobs: list[dict] | None  # OpenAI `logprobs.content` entries of the tokens kept
    token_ids: list[int] = field(default_factory=list)  # the `tokens` generated, end-of-turn token included


def decode_row(tokenizer, row: Row, stop: list[str]) -> Completion:
    produced = produced_ids(row.completion_ids, row.stopped)
    text = tokenizer.decode(produced, skip_special_tokens=True)
    cut = first_stop(text, stop)
    if cut is None:
        tokens, finish = len(row.completion_ids), "stop" if row.stopped else "length"
    else:
        start, end = cut
        text = text[:start]
        tokens = tokens_through(tokenizer, produced, end)
        finish = "stop"
    # A row scored with its end-of-turn token (`Job.score_stop`) has one log-prob per token counted, else
    # one per token of the text: the first `tokens` are what was kept either way.
    logprobs = None if row.logprobs is None else logprob_entries(tokenizer, row.logprobs[:tokens])
    return Completion(text, tokens, finish, logprobs, row.completion_ids[:tokens])


def first_stop(text: str, stop: list[str]) -> tuple[int, int] | None:
    """(start, end) of the earliest stop string in `text`, or None."""
    hits = [(at, at + len(s)) for s in stop if (at := text.find(s)) >= 0]
    return min(hits) if hits else None


def tokens_through(tokenizer, ids: list[int], end: int) -> int:
    """The fewest leading tokens whose text reaches character `end`: the tokens the model needed to write
    the stop string. Binary search, since the decoded length grows with the number of tokens."""
    low, high = 1, len(ids)
    while low < high:
        middle = (low + high) // 2
        if len(tokenizer.decode(ids[:middle], skip_special_tokens=True)) >= end:
            high = middle
        else:
            low = middle + 1
    return high


def logprob_entries(tokenizer, tokens: list[TokenLogprob]) -> list[dict]:
    """Each token's chat-format entry: its text, log-prob and bytes, and its alternatives'."""
    own_bytes = TokenBytes(tokenizer)  # the tokenizer's decoders read once, not per entry
    return [
        {
            **_token(tokenizer, own_bytes, token.token_id, token.logprob),
            "top_logprobs": [_token(tokenizer, own_bytes, i, lp) for i, lp in token.top],
        }
        for token in tokens
    ]


def _token(tokenizer, own_bytes: TokenBytes, token_id: int, logprob: float) -> dict:
    text, data = token_text(tokenizer, own_bytes, token_id)
    return {"token": text, "logprob": logprob, "bytes": list(data)}


def choice_json(index: int, completion: Completion, tools_given: bool, token_ids: bool = False) -> dict:
    parsed = parse_completion(completion.text, f"call_{secrets.token_hex(8)}" if tools_given else None)
    calls = parsed.tool_calls or []
    if any(not c.function.name for c in calls):  # a call that does not parse stays the text the model wrote
        parsed, calls = parse_completion(completion.text), []
    message: dict = {"role": "assistant", "content": parsed.content if parsed.content or not calls else None}
    if calls:
        message["tool_calls"] = [c.model_dump() for c in calls]
    if parsed.reasoning is not None:
        message["reasoning_content"] = parsed.reasoning
    finish = "tool_calls" if calls and completion.finish_reason == "stop" else completion.finish_reason
    logprobs = None if completion.logprobs is None else {"content": completion.logprobs, "refusal": None}
    choice = {"index": index, "message": message, "finish_reason": finish, "logprobs": logprobs}
    return choice | {"token_ids": completion.token_ids} if token_ids else choice


def response_json(
    model: str,
    completions: list[Completion],
    prompt_tokens: int,
    tools_given: bool,
    prompt_token_ids: list[int] | None = None,
) -> dict:
    """With `prompt_token_ids` (return_token_ids, vLLM's fields): those, and each choice's `token_ids`."""
    produced = sum(c.tokens for c in completions)
    with_ids = prompt_token_ids is not None
    response = {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice_json(i, c, tools_given, with_ids) for i, c in enumerate(completions)],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": produced,
            "total_tokens": prompt_tokens + produced,
        },
    }
    return response | {"prompt_token_ids": prompt_token_ids} if with_ids else response


def stream_chunks(response: dict, include_usage: bool) -> list[dict]:
    """A finished response as `chat.completion.chunk` objects: per choice, the role, the reasoning, the
    content word by word, each tool call, then a last chunk with finish_reason and all the logprobs."""
    head = {
        "id": response["id"],
        "object": "chat.completion.chunk",
        "created": response["created"],
        "model": response["model"],
    }

    def chunk(index: int, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None) -> dict:
        return {
            **head,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}],
        }

    chunks = []
    for choice in response["choices"]:
        index, message = choice["index"], choice["message"]
        chunks.append(chunk(index, {"role": "assistant", "content": ""}))
        if "reasoning_content" in message:
            chunks.append(chunk(index, {"reasoning_content": message["reasoning_content"]}))
        chunks += [chunk(index, {"content": piece}) for piece in WORD_RE.findall(message["content"] or "")]
        chunks += [
            chunk(index, {"tool_calls": [{"index": i, **call}]}) for i, call in enumerate(message.get("tool_calls", []))
        ]
        chunks.append(chunk(index, {}, choice["finish_reason"], choice["logprobs"]))
    if include_usage:
        chunks.append({**head, "choices": [], "usage": response["usage"]})
    return chunks
