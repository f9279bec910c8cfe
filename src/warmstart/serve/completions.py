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

Several prompts in one request (`prompt` a list of strings or of token-id lists, as vLLM takes them, up to
`MAX_PROMPTS`): each is its own job, all queued at once so the engine batches them into the same slices,
and choice i answers prompt i; `usage` sums them. This is how a GRPO trainer sends a whole turn's rollouts
(policies/rollout_server.py): one request, not one per row, so they start in one slice rather than as
the requests happen to arrive.

Left out (a 400 that names the parameter): `n` > 1, `best_of`, `suffix`, `logit_bias`, streaming.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..lm.token_bytes import TokenBytes, token_text
from ..types import Sampling
from .engine import Row
from .request import (
    MAX_TOP_LOGPROBS,
    bad,
    check_params,
    flag,
    integer,
    stop_strings,
    temperature_top_p,
    without_nulls,
)
from .response import decode_row, logprob_entries

# Accepted without effect: `user` only labels the caller, a zero penalty is none, and the others ask for
# what the server does anyway.
HARMLESS = {"user": None, "frequency_penalty": 0, "presence_penalty": 0, "n": 1, "best_of": 1, "stream": False}
KNOWN = {
    *"model prompt max_tokens echo logprobs temperature top_p seed stop return_token_ids".split(),
    *HARMLESS,
}
DEFAULT_MAX_TOKENS = 16  # OpenAI's
MAX_PROMPTS = 1024  # prompts in one request: a bound on what one body can queue
# Prompt plus completion tokens of all the prompts of one request: the work one body can queue (a GRPO
# trainer's turn of 256 rollouts of 4k tokens is 1M). 1024 prompts of a full context could ask far more.
MAX_REQUEST_TOKENS = 4 * 2**20
# Log-prob entries of one answer: tokens listed (the prompt's with echo, then the generated ones) times
# (alternatives + 1). Each costs ~150 bytes of Python objects and ~20 of JSON (measured on the tiny model),
# so this bounds an answer to ~150 MB while being built; unbounded, 1024 echoed prompts with 20
# alternatives asked for 1.5 GB.
MAX_LOGPROB_ENTRIES = 2**20


@dataclass(frozen=True)
class CompletionRequest:
    prompts: list[str | list[int]]  # each text (tokenized without special tokens or chat template) or token ids
    sampling: Sampling  # max_new_tokens 0: score the prompt only (echo)
    echo: bool
    logprobs: int | None  # alternatives per token (0..20); None: no logprobs
    stop: list[str]
    seed: int | None
    model: str = ""  # the name asked: the base model's or a loaded adapter's
    return_token_ids: bool = False  # vLLM's extension: token ids out, the end-of-turn token's log-prob listed


def parse_completion_request(body: dict, models: Sequence[str], vocab_size: int) -> CompletionRequest:
    body = without_nulls(body)
    check_params(body, KNOWN, HARMLESS, models)
    echo = flag(body, "echo")
    max_tokens = integer(body, "max_tokens", DEFAULT_MAX_TOKENS, 0, 2**31)
    if max_tokens == 0 and not echo:
        raise bad("max_tokens", "0 is allowed only with echo: true (to score the prompt)")
    return CompletionRequest(
        prompts=parse_prompts(body.get("prompt"), vocab_size),
        sampling=Sampling(**temperature_top_p(body), max_new_tokens=max_tokens),
        echo=echo,
        logprobs=integer(body, "logprobs", None, 0, MAX_TOP_LOGPROBS),
        stop=stop_strings(body.get("stop")),
        seed=integer(body, "seed", None, -(2**63), 2**63 - 1),
        model=body["model"],
        return_token_ids=flag(body, "return_token_ids"),
    )


def parse_prompts(value, vocab_size: int) -> list[str | list[int]]:
    """A string or a list of token ids, or a list of these (several prompts)."""
    if isinstance(value, list) and value and all(isinstance(v, (str, list)) for v in value):
        if len(value) > MAX_PROMPTS:
            raise bad("prompt", f"{len(value)} prompts in one request; at most {MAX_PROMPTS}")
        return [parse_prompt(v, vocab_size, f"prompt[{i}]") for i, v in enumerate(value)]
    return [parse_prompt(value, vocab_size)]


def parse_prompt(value, vocab_size: int, where: str = "prompt") -> str | list[int]:
    """A string or a list of token ids."""
    if isinstance(value, str):
        if not value:
            raise bad(where, "must not be empty")
        return value
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise bad(where, "must be a string, a list of token ids, or a list of these")
    if not value:
        raise bad(where, "must not be empty")
    wrong = next((t for t in value if not 0 <= t < vocab_size), None)
    if wrong is not None:
        raise bad(where, f"token id {wrong} is out of the vocabulary (0 to {vocab_size - 1})")
    return value


def check_request_size(request: CompletionRequest, prompt_ids: list[list[int]]) -> None:
    """A 400 naming the limit for a request that asks for more work, or a larger answer, than one request may:
    checked once the prompts are tokenized, before any is queued."""
    max_tokens = request.sampling.max_new_tokens
    tokens = sum(len(ids) for ids in prompt_ids) + len(prompt_ids) * max_tokens
    if tokens > MAX_REQUEST_TOKENS:
        raise bad(
            "prompt",
            f"{len(prompt_ids)} prompts of {max_tokens} max_tokens ask for {tokens} prompt and completion tokens; "
            f"at most {MAX_REQUEST_TOKENS} in one request: send fewer prompts per request",
        )
    if request.logprobs is None:
        return
    listed = (sum(len(ids) for ids in prompt_ids) if request.echo else 0) + len(prompt_ids) * max_tokens
    entries = listed * (request.logprobs + 1)
    if entries > MAX_LOGPROB_ENTRIES:
        raise bad(
            "logprobs",
            f"{listed} tokens listed with {request.logprobs} alternatives each ask for {entries} log-probs; at "
            f"most {MAX_LOGPROB_ENTRIES} in one answer: send fewer prompts per request, or ask fewer alternatives",
        )


def completion_json(tokenizer, request: CompletionRequest, prompt_ids: list[list[int]], rows: list[Row]) -> dict:
    """The response: choice i for prompt i (its ids `prompt_ids[i]`, its generated row `rows[i]`)."""
    choices, generated = [], 0
    for index, (prompt, ids, row) in enumerate(zip(request.prompts, prompt_ids, rows)):
        choice, tokens = completion_choice(tokenizer, request, index, prompt, ids, row)
        choices.append(choice)
        generated += tokens
    prompt_tokens = sum(len(ids) for ids in prompt_ids)
    return {
        "id": f"cmpl-{secrets.token_hex(12)}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": generated,
            "total_tokens": prompt_tokens + generated,
        },
    }


def completion_choice(
    tokenizer, request: CompletionRequest, index: int, prompt: str | list[int], prompt_ids: list[int], row: Row
) -> tuple[dict, int]:
    """One prompt's choice, and the tokens it generated."""
    completion = decode_row(tokenizer, row, request.stop)  # stop strings apply to the generated text only
    text = completion.text
    if request.echo:
        # A text prompt comes back as sent; token ids as their text, special tokens included (they are in it).
        text = (prompt if isinstance(prompt, str) else tokenizer.decode(prompt_ids)) + text
    logprobs = None
    if request.logprobs is not None:
        entries = prompt_entries(tokenizer, prompt_ids, row) if request.echo else []
        logprobs = legacy_logprobs(entries + (completion.logprobs or []))
    choice = {"index": index, "text": text, "finish_reason": completion.finish_reason, "logprobs": logprobs}
    if request.return_token_ids:
        choice |= {"token_ids": row.completion_ids[: completion.tokens], "prompt_token_ids": list(prompt_ids)}
    return choice, completion.tokens


def prompt_entries(tokenizer, prompt_ids: list[int], row: Row) -> list[dict]:
    """The prompt's tokens as chat-format logprob entries; the first has no log-prob and no alternatives."""
    first = {
        "token": token_text(tokenizer, TokenBytes(tokenizer), prompt_ids[0])[0],
        "logprob": None,
        "top_logprobs": None,
    }
    return [first, *logprob_entries(tokenizer, row.prompt_logprobs or [])]


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
