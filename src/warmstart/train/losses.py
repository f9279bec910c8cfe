"""Token-level objectives as small pure functions (shapes in the comments).

B = sequences, T = tokens, V = vocabulary, G = groups, n = samples per group. `mask` is the loss
mask: 1 on tokens the policy produced, 0 on prompts, tool results and padding.

So far: the pieces of GRPO. Its variants are arguments with defaults, not separate losses:
`clip_low`/`clip_high` (clip-higher when high > low), `normalization` ("token": mean over all
tokens of the batch; "sequence": mean over sequences of their token mean, as in the original GRPO;
"constant": sum over tokens divided by B * a fixed length, as in Dr. GRPO, which removes the
length bias), `scale_by_std` (False: Dr. GRPO's unscaled advantages), a KL-to-reference term.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Normalization = Literal["token", "sequence", "constant"]


def group_advantages(rewards: torch.Tensor, scale_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages. rewards: [G, n] -> [G, n]; (r - mean) / (std + eps) per group."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)


def zero_variance_groups(rewards: torch.Tensor) -> torch.Tensor:
    """[G, n] -> [G] bool: groups whose samples all got the same reward (no learning signal)."""
    return (rewards == rewards[:, :1]).all(dim=1)


def reduce_tokens(
    per_token: torch.Tensor, mask: torch.Tensor, normalization: Normalization, length: int | None = None
) -> torch.Tensor:
    """Reduce a [B, T] per-token loss over the masked tokens to a scalar."""
    mask = mask.to(per_token.dtype)
    if normalization == "token":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if normalization == "sequence":
        per_sequence = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_sequence.mean()
    if normalization == "constant":
        if length is None:
            raise ValueError("normalization='constant' needs the fixed length (e.g. max new tokens)")
        return (per_token * mask).sum() / (per_token.shape[0] * length)
    raise ValueError(f"unknown normalization {normalization!r}")


def clipped_policy_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    normalization: Normalization = "token",
    length: int | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """PPO-style clipped surrogate, negated for minimisation.

    logp, logp_old, mask: [B, T]; advantages: [B] (one per sequence, broadcast over its tokens) or
    [B, T] (one per token, as on-policy distillation's); weights: [B, T] per-token importance weights
    (truncated importance sampling, train/mismatch.py), None: 1.
    per token: -w * min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A), ratio = exp(logp - logp_old).
    """
    ratio = torch.exp(logp - logp_old)
    a = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    per_token = -torch.minimum(ratio * a, ratio.clamp(1 - clip_low, 1 + clip_high) * a)
    if weights is not None:
        per_token = per_token * weights
    return reduce_tokens(per_token, mask, normalization, length)


def kl_to_reference(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from sampled tokens (the non-negative "k3" form).

    logp, logp_ref: [B, T] -> [B, T]; exp(ref - logp) - (ref - logp) - 1, unbiased for the KL when
    tokens are sampled from the policy, and >= 0 for every sample. Past a log-ratio of K3_TANGENT_FROM
    (a token the policy made ~12x less likely than the reference) it goes on along its tangent: the term
    grows as exp(ref - logp), so one such token (7.7e6 after one large step, measured) outweighed every
    other token's clipped objective, and past 709 nats it was inf with a nan gradient. Along the tangent
    its gradient stays that of the bound (e^2.5 - 1, ~11) and still pulls the token back, where a clamp of
    the value (verl's "low_var_kl") gives such a token no gradient at all. Below the bound: unchanged.
    """
    delta = logp_ref - logp
    bounded = delta.clamp(max=K3_TANGENT_FROM)
    k3 = torch.exp(bounded) - bounded - 1
    return k3 + (math.exp(K3_TANGENT_FROM) - 1) * (delta - bounded)


K3_TANGENT_FROM = 2.5  # log-ratio (reference over policy) past which k3 is linear


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int) -> torch.Tensor:
    """Soft penalty for responses that run into the length limit. lengths: [B] -> [B] in [-1, 0].

    0 up to max_length - buffer, then falling linearly to -1 at max_length.
    """
    over = (lengths.float() - (max_length - buffer)).clamp(min=0.0)
    return -(over / max(buffer, 1)).clamp(max=1.0)
