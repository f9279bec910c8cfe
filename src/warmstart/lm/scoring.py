"""Log-probs a model gives to tokens it is shown (no sampling): for training losses, and for reporting.

Two shapes of the same question, "how likely is each of these tokens, given the ones before it":

- `sequence_logprobs(model, batch)`: a right-padded [B, L] batch -> [B, L-1] tensor with gradients,
  what GRPO's update, its reference model and a local teacher scoring the student's tokens need;
  `chunked_sequence_logprobs` the same tensor of a whole batch, with one chunk of its rows in a pass;
- `score_tokens(model, pad_id, sequences, starts, ks)`: plain lists with each token's k likeliest
  alternatives (`TokenLogprob`), what `warmstart serve` returns as `logprobs` and a local teacher records
  for sparse KD. The model's own distribution: raw logits, no temperature, no top-p.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .generation import device_of, left_padded
from .shared_prefix import PrefixPass, shared_prefix_hidden


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), most likely first


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position. logits: [B, T, V], targets: [B, T] -> [B, T]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


# Config settings by which a model's logits are more than its output head applied to the last hidden state
# (Gemma's softcap, Cohere's scale, Granite's scaling, Falcon-H1's head multiplier).
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier")


def logit_transforms(model) -> list[str]:
    """The model's settings among LOGIT_TRANSFORMS that change its logits (none for Llama-like models)."""
    return [name for name in LOGIT_TRANSFORMS if getattr(model.config, name, None) not in (None, 1, 1.0)]


def sequence_logprobs(
    model,
    batch: dict[str, torch.Tensor],
    scored: torch.Tensor | None = None,
    share_prefixes: bool = True,
    prefix_pass: PrefixPass | None = None,
) -> torch.Tensor:
    """log p of each next token of a right-padded batch: [B, L-1] (position t scores token t+1).

    `scored` ([B, L-1] bool): only these positions are needed (GRPO's policy tokens). The output head and
    the softmax then run at those N positions alone ([N, V] logits, not [B, L, V]: the prompt's positions
    are most of a row, and the head most of a small model's FLOPs at a large vocabulary), and the other
    positions read 0. The log-prob is the chosen logit minus the logsumexp, without a [N, V] log-softmax.
    Rows that share the tokens before their first scored position (a GRPO group's prompt) run that prefix
    once (`shared_prefix.py`) unless `share_prefixes` is off; with a `prefix_pass` started on a whole
    batch, the prefixes of this chunk of it (its rows' indices in `batch["rows"]`) come from that pass.
    A model whose config transforms its logits gets the whole forward pass."""
    ids = batch["input_ids"]
    attention = torch.ones_like(ids)
    if scored is None or logit_transforms(model):
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits
        full = token_logprobs(logits[:, :-1], ids[:, 1:])
        return full if scored is None else full * scored
    at_scored = None
    if prefix_pass is not None:
        at_scored = prefix_pass.hidden(model, ids, scored, batch["rows"].tolist())
    if at_scored is None and share_prefixes:
        at_scored = shared_prefix_hidden(model, ids, scored)
    if at_scored is None:
        hidden = model.get_decoder()(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
        at_scored = hidden[:, :-1][scored]
    logits = model.get_output_embeddings()(at_scored).float()  # [N, V]
    chosen = logits.gather(-1, ids[:, 1:][scored].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return torch.zeros(scored.shape, dtype=chosen.dtype, device=chosen.device).masked_scatter(scored, chosen)


def chunked_sequence_logprobs(
    model, ids: torch.Tensor, scored: torch.Tensor, lengths: list[int], chunks: list[list[int]]
) -> torch.Tensor:
    """`sequence_logprobs(model, {"input_ids": ids}, scored)` of a right-padded [B, L] batch, one chunk of
    its rows at a time: each of `chunks` (row indices) cut to its longest row (`lengths`) and run alone, its
    log-probs written into one [B, L-1] tensor. A pass then holds one chunk's activations, K/V and [N, V]
    logits, not the whole batch's (at a 152k vocabulary a GRPO batch's logits alone are tens of GiB); rows in
    no chunk read 0, as unscored positions do. Rows of a chunk that share a prefix run it once within the
    chunk. The floats differ from one pass over the whole batch at rounding level: each position's value is
    the same function of its row, computed in matmuls and attention of other shapes (2-layer Llama, h128,
    128 rows of 16 prompts, chunks of 256-4,096 tokens or of one row: at most 1.4e-6 nats at vocabulary 322,
    1.9e-6 at 4,096, on log-probs of -6 to -8: 2-3 fp32 ulps). One chunk of every row is the same call."""
    out = torch.zeros(scored.shape, dtype=torch.float32, device=ids.device)
    for rows in chunks:
        width = max(lengths[r] for r in rows)  # the chunk's positions: 0 .. width - 2 predict its tokens
        index = torch.tensor(rows, dtype=torch.long, device=ids.device)
        if scored[index, max(width - 1, 0) :].any():
            raise ValueError(f"chunked_sequence_logprobs: a row of {rows} is scored past its length in `lengths`")
        chunk = {"input_ids": ids[index, :width]}
        out[index, : width - 1] = sequence_logprobs(model, chunk, scored[index, : width - 1])
    return out


@torch.inference_mode()
def score_tokens(
    model, pad_id: int, sequences: list[list[int]], starts: list[int], ks: list[int]
) -> list[list[TokenLogprob]]:
    """Per sequence: every token from index `start` on, scored given the tokens before it, with its k best
    alternatives. One forward pass over the (left-padded) batch."""
    ids, attention = left_padded(sequences, pad_id, device_of(model))
    # Left padding shifts positions; as generate() does, each row's tokens sit at 0, 1, ... (RoPE models do
    # not care about a shift, models with absolute position embeddings such as GPT-2 do).
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits  # [B, T, V]
    scored = [s[start:] for s, start in zip(sequences, starts)]
    width = max(len(t) for t in scored)
    # Sequences are right-aligned: the logits at T-width-1 .. T-2 predict the last `width` tokens.
    logp = torch.log_softmax(logits[:, ids.shape[1] - width - 1 : -1].float(), dim=-1)  # [B, width, V]
    return [_row_logprobs(logp[b, width - len(t) :], t, k) for b, (t, k) in enumerate(zip(scored, ks))]


def _row_logprobs(logp: torch.Tensor, tokens: list[int], k: int) -> list[TokenLogprob]:
    """logp: [len(tokens), V] log-probs at the positions that produced `tokens`."""
    chosen = (
        logp.gather(-1, torch.tensor(tokens, dtype=torch.long, device=logp.device).unsqueeze(-1)).squeeze(-1).tolist()
    )
    top_values, top_ids = logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long())
    return [
        TokenLogprob(token, value, list(zip(alt_ids, alt_values)))
        for token, value, alt_ids, alt_values in zip(tokens, chosen, top_ids.tolist(), top_values.tolist())
    ]
