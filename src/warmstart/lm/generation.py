"""Batched, KV-cached sampling from a local transformers model, on token ids.

Prompts are token ids, not text, so a multi-turn rollout continues from exactly the tokens the policy
saw and produced (`rollout.py`); they are left-padded into one batch. The sampled ids are kept as they
are: RL needs them, not a re-tokenization of their text.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..types import Message, Sampling
from .chat import parse_completion
from .decode_step import ForwardDecoder, LeanDecoder, lean_decoding_blocker

log = logging.getLogger(__name__)
# A temperature below this samples greedily (vLLM's `_SAMPLING_EPS`): logits divided by a tiny one overflow
# float32 to inf, the softmax is NaN, and every draw is garbage; it is the argmax it tends to anyway.
GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass
class Sampled:
    prompt_ids: list[int]
    completion_ids: list[int]  # up to and including the stop token, if one came
    stopped: bool  # False: cut by max_new_tokens
    # The sampler's log-prob of each completion token under the model's own distribution (raw logits: no
    # temperature, no top-p), as a server reports it; None where the sampler does not give them (`generate`).
    logprobs: list[float] | None = None


def left_padded(
    prompts: list[list[int]], pad_id: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention[row, width - len(prompt) :] = 1
    return ids.to(device), attention.to(device)


def left_padded_positions(attention: torch.Tensor) -> torch.Tensor:
    """Each token's position in its own sequence (0 at its first real token; padding reads 0)."""
    return (attention.cumsum(dim=1) - 1).clamp(min=0)


def forward_parameters(model) -> set[str]:
    """The names the model's forward takes. A peft model's forward takes **kwargs: the model under it
    names them."""
    forward = model.get_base_model().forward if hasattr(model, "get_base_model") else model.forward
    return set(inspect.signature(forward).parameters)


def cache_argument(model, cache) -> dict:
    """{name: cache} as the model's forward names it: transformers 5.x `cache` (and deprecates
    `past_key_values`); 4.x knows only the old name."""
    return {"cache" if "cache" in forward_parameters(model) else "past_key_values": cache}


def last_logits(model) -> dict:
    """The forward's argument that runs the output head at the last position only (a prefill needs no
    other: SmolLM2's head over 4 prompts of 48 tokens took 84 ms per sampling), where the model takes it."""
    return {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters(model) else {}


def distinct_prompts(prompts: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """The distinct prompts, first seen first, and each prompt's index among them."""
    index: dict[tuple[int, ...], int] = {}
    which = [index.setdefault(tuple(p), len(index)) for p in prompts]
    return [list(p) for p in index], which


def device_of(model) -> torch.device:
    """Where the model's weights are: the tensors a step makes go there too."""
    return next(model.parameters()).device


@torch.inference_mode()
def sample_ids(
    model,
    pad_id: int,
    prompts: list[list[int]],
    sampling: Sampling,
    stop_ids: list[int],
    seed: int,
    keys: list[str] | None = None,
) -> list[Sampled]:
    """Sample one completion per prompt (token ids); generation stops at any of `stop_ids`. `generate`
    draws one random stream for the whole batch from `seed`, so a row's tokens depend on the batch it is
    in; `keys` is not used (it is `sample_ids_pruned`'s: one stream per row)."""
    ids, attention = left_padded(prompts, pad_id, device_of(model))
    torch.manual_seed(seed)
    do_sample = samples(sampling)
    output = model.generate(
        input_ids=ids,
        attention_mask=attention,
        do_sample=do_sample,
        temperature=sampling.temperature if do_sample else None,
        top_p=sampling.top_p if do_sample else None,
        top_k=None,
        max_new_tokens=sampling.max_new_tokens,
        eos_token_id=stop_ids,
        pad_token_id=pad_id,
    )
    out = []
    for prompt, generated in zip(prompts, output[:, ids.shape[1] :].tolist()):
        stop_at = next((i for i, t in enumerate(generated) if t in stop_ids), None)
        completion = generated if stop_at is None else generated[: stop_at + 1]
        out.append(Sampled(list(prompt), completion, stop_at is not None))
    return out


def samples(sampling: Sampling) -> bool:
    """Whether a turn is drawn at random, not greedily: a temperature below GREEDY_BELOW_TEMPERATURE (0
    included) is greedy."""
    return sampling.temperature >= GREEDY_BELOW_TEMPERATURE


def next_token_scores(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Temperature, then nucleus (top-p) filtering as transformers' TopPLogitsWarper does it (the
    most likely token always kept). logits: [B, V] -> [B, V] float."""
    scores = logits.float() / sampling.temperature
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=False)
        drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - sampling.top_p)
        drop[:, -1] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return scores


def draw(scores: torch.Tensor, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row from softmax(scores) [B, V], by inverse CDF: one uniform number per row
    (`uniforms` [B], or drawn from torch's global generator).

    `torch.multinomial` draws an exponential variate for every vocabulary entry, and torch's CPU random
    generator is slow: 128 rows took 1.3 ms at the tiny model's 322-token vocabulary and 220 ms at
    SmolLM2's 49k, per decoding step (measured); this takes 0.14 and 40 ms. Tokens with probability 0
    (top-p's cut) are never drawn: the search returns the first token whose cumulative sum exceeds the
    draw, and a zero-probability token's sum equals the one before it."""
    probs = scores.softmax(dim=-1)
    cdf = probs.cumsum(dim=-1)
    if uniforms is None:
        uniforms = torch.rand(len(cdf), device=cdf.device)
    token = torch.searchsorted(cdf, uniforms[:, None].to(cdf.dtype) * cdf[:, -1:], right=True)[:, 0]
    beyond = (token >= cdf.shape[1]).nonzero()[:, 0]  # the draw rounded up to the total: rare
    if len(beyond):
        token[beyond] = cdf.shape[1] - 1 - (probs[beyond].flip(-1) > 0).to(torch.int8).argmax(dim=-1)
    return token


def row_seed(seed: int, key: str) -> int:
    """A row's own seed, from the batch's seed and what the row is (e.g. task id / sample index): the same
    in any process and any batch (a digest, not Python's per-process salted `hash`)."""
    digest = hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch's seeds are below 2**63


def row_uniforms(seed: int, keys: list[str], steps: int, device: torch.device) -> torch.Tensor:
    """[B, steps] uniform numbers: row b's draw at each decoding step, from its own generator."""
    table = torch.empty((len(keys), steps))
    for row, key in enumerate(keys):
        table[row] = torch.rand(steps, generator=torch.Generator().manual_seed(row_seed(seed, key)))
    return table.to(device)


@torch.inference_mode()
def sample_ids_pruned(
    model,
    pad_id: int,
    prompts: list[list[int]],
    sampling: Sampling,
    stop_ids: list[int],
    seed: int,
    keys: list[str] | None = None,
) -> list[Sampled]:
    """`sample_ids` in a decoding loop of our own, for a batch whose completions vary in length (GRPO's
    rollouts): the model's forward over the prompts, then one decoding step per token (decode_step.py),
    each sequence dropped from the batch (and its cache) as soon as it stops, where `generate` keeps
    stepping finished rows. Same distribution
    (temperature, top-p; greedy at temperature 0 equals `generate`'s, tested), another random stream.
    A prompt given several times (a GRPO group's samples) runs through the prefill once and its KV cache
    is copied to its rows: on the tiny model, 128 rows of 16 prompts, the prefill is ~20 % of sampling.
    Measured on the tiny model, 128 prompts x 128 new tokens: ~1.6x faster than `generate` (before the
    lean step). Each decoding step after the prefill is `decode_step.LeanDecoder`'s for Llama and Qwen2
    models (~1.35x faster sampling on the tiny model), the model's forward for any other.

    Each row draws from its own stream, seeded by `seed` and its key (`keys`, one per prompt; the row's
    index without them), so a row's tokens do not depend on which other rows share its batch: the same
    rollout whichever process of a data-parallel run samples it (train/distributed.py)."""
    device = device_of(model)
    distinct, which = distinct_prompts(prompts)
    ids, attention = left_padded(distinct, pad_id, device)
    uniforms = row_uniforms(seed, keys or [str(i) for i in range(len(prompts))], sampling.max_new_tokens, device)
    stops = torch.tensor(sorted(stop_ids) or [-1], device=device)
    completions: list[list[int]] = [[] for _ in prompts]
    logprobs: list[list[float]] = [[] for _ in prompts]
    stopped = [False] * len(prompts)
    rows = torch.arange(len(prompts), device=device)  # batch position -> prompt index
    positions = left_padded_positions(attention)
    cache = DynamicCache(config=model.config)
    cache_arg = cache_argument(model, cache)
    logits = model(
        input_ids=ids,
        attention_mask=attention,
        position_ids=positions,
        use_cache=True,
        **cache_arg,
        **last_logits(model),
    ).logits[:, -1]
    index = torch.tensor(which, device=device)  # each distinct prompt ran once; now one row per prompt given
    logits, attention, positions = logits[index], attention[index], positions[index]
    decoder = decoder_after_prefill(model, cache, cache_arg, index, attention, sampling.max_new_tokens)
    position = positions[:, -1:]
    for step in range(sampling.max_new_tokens):
        if samples(sampling):
            token = draw(next_token_scores(logits, sampling), uniforms[rows, step])
        else:
            token = logits.argmax(dim=-1)
        chosen = torch.log_softmax(logits.float(), dim=-1).gather(1, token[:, None])[:, 0]
        for row, t, lp in zip(rows.tolist(), token.tolist(), chosen.tolist()):
            completions[row].append(t)
            logprobs[row].append(lp)
        done = torch.isin(token, stops)
        for row in rows[done].tolist():
            stopped[row] = True
        if bool(done.all()) or step == sampling.max_new_tokens - 1:
            break
        if bool(done.any()):
            order = decoder.drop(done)
            rows, token, position = rows[order], token[order], position[order]
        position = position + 1
        logits = decoder.step(token, position)
    return [Sampled(list(p), c, s, lp) for p, c, s, lp in zip(prompts, completions, stopped, logprobs)]


def decoder_after_prefill(model, cache, cache_arg: dict, which: torch.Tensor, attention: torch.Tensor, room: int):
    """The decoding step for this model (decode_step.py): the lean one where it computes what the model
    does, else the model's forward over the prefill's cache expanded to one entry per row."""
    blocker = lean_decoding_blocker(model)
    if blocker is None:
        return LeanDecoder(model, cache, which, attention, room)
    log.debug("decoding through the model's forward: %s", blocker)
    cache.batch_select_indices(which)
    return ForwardDecoder(model, cache, cache_arg, attention)


def produced_ids(completion_ids: list[int], stopped: bool) -> list[int]:
    """The tokens that make the text: the end-of-turn token is not part of it."""
    return completion_ids[:-1] if stopped else completion_ids


def completion_message(tokenizer, sampled: Sampled, tool_call_prefix: str | None = None) -> Message:
    """The sampled turn as a Message (think block and, with a prefix, tool calls parsed out)."""
    produced = produced_ids(sampled.completion_ids, sampled.stopped)
    return parse_completion(tokenizer.decode(produced, skip_special_tokens=True), tool_call_prefix)
