"""The legacy text completions endpoint of `warmstart serve` (POST /v1/completions): request and response.

What it is for: scoring. `prompt` as token ids, `echo: true`, `logprobs: N` and `max_tokens: 0` returns the
log-prob of every prompt token given the tokens before it, from one forward pass, as vLLM and the original
OpenAI completions API return it. That is how on-policy distillation has a served teacher score the
student's own tokens (`policies/openai_scoring.py`). With max_tokens > 0 the model continues the prompt as
it is (no chat template), and stops at its end-of-turn / eos token as the chat endpoint does.

The `logprobs` object is the legacy one: `tokens`, `token_logprobs`, `top_logprobs` (a {token text:
log-prob} object per token, most likely first, where two ids of one text, e.g. halves of a character that
both decode to U+FFFD, are one key, the likelier; null for the first prompt token, which nothing predicts)
and `text_offset` (where each listed token's text starts, counting the texts of the listed tokens before
it). With echo the lists cover the prompt's tokens, then the generated ones.

With `return_token_ids: true` (vLLM's extension) the choice also has `token_ids` (every generated token,
the end-of-turn token included when generation stopped on it) and `prompt_token_ids`, and the generated
part of `logprobs` has one entry per token id, the end-of-turn token scored like the others.

Left out (a 400 that names the parameter): several prompts in one request (send several requests; the
engine batches them), `n` > 1, `best_of`, `suffix`, `logit_bias`, streaming.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..types import Sampling
from .engine import Row
from .request import MAX_TOP_LOGPROBS, bad, check_params, flag, integer, stop_strings, temperature_top_p
from .response import decode_row, logprob_entry

# Accepted without effect: `user` only labels the caller, a zero penalty is none, and the others ask for
# what the server does anyway.
HARMLESS = {"user": None, "frequency_penalty": 0, "presence_penalty": 0, "n": 1, "best_of": 1, "stream": False}
KNOWN = {
    *"model prompt max_tokens echo logprobs temperature top_p seed stop return_token_ids".split(),
    *HARMLESS,
}
DEFAULT_MAX_TOKENS = 16  # OpenAI's


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | list[int]  # text (tokenized without special tokens or chat template) or token ids
    sampling: Sampling  # max_new_tokens 0: score the prompt only (echo)
    echo: bool
    logprobs: int | None  # alternatives per token (0..20); None: no logprobs
    stop: list[str]
    seed: int | None
    model: str = ""  # the name asked: the base model's or a loaded adapter's
    return_token_ids: bool = False  # vLLM's extension: token ids out, the end-of-turn token's log-prob listed


def parse_completion_request(body: dict, models: Sequence[str], vocab_size: int) -> CompletionRequest:
    check_params(body, KNOWN, HARMLESS, models)
    echo = flag(body, "echo")
    max_tokens = integer(body, "max_tokens", DEFAULT_MAX_TOKENS, 0, 2**31)
    if max_tokens == 0 and not echo:
        raise bad("max_tokens", "0 is allowed only with echo: true (to score the prompt)")
    return CompletionRequest(
        prompt=parse_prompt(body.get("prompt"), vocab_size),
        sampling=Sampling(**temperature_top_p(body), max_new_tokens=max_tokens),
        echo=echo,
        logprobs=integer(body, "logprobs", None, 0, MAX_TOP_LOGPROBS),
        stop=stop_strings(body.get("stop")),
        seed=integer(body, "seed", None, -(2**63), 2**63 - 1),
        model=body["model"],
        return_token_ids=flag(body, "return_token_ids"),
    )


def parse_prompt(value, vocab_size: int) -> str | list[int]:
    """A string or a list of token ids, or a list of one of these (a batch of one)."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]
    if isinstance(value, str):
        if not value:
            raise bad("prompt", "must not be empty")
        return value
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise bad(
            "prompt", "must be a string or a list of token ids (several prompts in one request are not supported)"
        )
    if not value:
        raise bad("prompt", "must not be empty")
    wrong = next((t for t in value if not 0 <= t < vocab_size), None)
    if wrong is not None:
        raise bad("prompt", f"token id {wrong} is out of the vocabulary (0 to {vocab_size - 1})")
    return value


def completion_json(tokenizer, request: CompletionRequest, prompt_ids: list[int], row: Row) -> dict:
    completion = decode_row(tokenizer, row, request.stop)  # stop strings apply to the generated text only
    text = completion.text
    if request.echo:
        # A text prompt comes back as sent; token ids as their text, special tokens included (they are in it).
        text = (request.prompt if isinstance(request.prompt, str) else tokenizer.decode(prompt_ids)) + text
    logprobs = None
    if request.logprobs is not None:
        entries = prompt_entries(tokenizer, prompt_ids, row) if request.echo else []
        logprobs = legacy_logprobs(entries + (completion.logprobs or []))
    choice = {"index": 0, "text": text, "finish_reason": completion.finish_reason, "logprobs": logprobs}
    if request.return_token_ids:
        choice |= {"token_ids": row.completion_ids[: completion.tokens], "prompt_token_ids": list(prompt_ids)}
    return {
        "id": f"cmpl-{secrets.token_hex(12)}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": completion.tokens,
            "total_tokens": len(prompt_ids) + completion.tokens,
        },
    }


def prompt_entries(tokenizer, prompt_ids: list[int], row: Row) -> list[dict]:
    """The prompt's tokens as chat-format logprob entries; the first has no log-prob and no alternatives."""
    first = {
        "token": tokenizer.decode([prompt_ids[0]]),
        "logprob": None,
        "top_logprobs": None,
    }  # as response._token decodes
    return [first, *(logprob_entry(tokenizer, t) for t in row.prompt_logprobs or [])]


def legacy_logprobs(entries: list[dict]) -> dict:
    """Chat-format entries ({token, logprob, top_logprobs: [{token, logprob}]}) as the legacy logprobs object."""
    offsets, at = [], 0
    for entry in entries:
        offsets.append(at)
        at += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [None if e["top_logprobs"] is None else _top(e["top_logprobs"]) for e in entries],
        "text_offset": offsets,
    }


def _top(alternatives: list[dict]) -> dict[str, float]:
    # Two ids can decode to the same text (e.g. halves of one character, both U+FFFD): the likelier one stays.
    top: dict[str, float] = {}
    for a in alternatives:
        top.setdefault(a["token"], a["logprob"])
    return top
