"""Attention of short bf16 training rows as batched matrix products, for CPUs with native bf16 matmul.

torch's CPU flash attention runs its bf16 tiles at ~110 GFLOP/s on SmolLM2-135M's shape (2 rows x 9
heads x 256 positions x 64, causal, 3 key/value heads) on a 2-core AVX512-BF16 EPYC, no faster than its
own fp32 tiles, while torch.bmm multiplies bf16 there at ~400 GFLOP/s: attention took ~15 % of a bf16
SFT step for ~3 % of its FLOPs. Here the scores are one bmm per key/value head (its query heads
stacked: [G*T, D] x [D, S]), the softmax is torch's, the probabilities are kept for the backward, whose
four products are bmm too and whose softmax gradient is torch's own fused kernel.

Forward + backward per layer, ms, torch's flash vs this (SmolLM2's heads, causal, bf16, same machine,
medians of 12): 2 x 128 positions 3.9 vs 1.3-1.9; 2 x 256 9.2-9.4 vs 7.6-7.8; 4 x 256 18.0-18.8 vs
14.7-15.0; 2 x 512 30.8-31.4 vs 28.4-29.4; 4 x 512 61.6-62.5 vs 55.5-56.2; 1 x 1024 42.8-43.0 vs
55.4-55.9; 1 x 2048 140 vs 218. Past ~512 keys flash's skipping of the masked half wins; and the [T, S]
probabilities of every head are kept for the backward (flash keeps only the output and a logsumexp).
So rows come here only up to `MAX_KEYS` keys and `PROBS_BYTES` of probabilities per layer; others keep
flash. The arithmetic is bf16 products with fp32 accumulation, as flash's; the difference to it is bf16
rounding (tests/lm/test_short_attention.py). A query that may attend to no key gets output 0 and no
gradient, as torch's kernels give it.
"""

from __future__ import annotations

import torch

MAX_KEYS = 512  # past it flash is faster (module docstring)
PROBS_BYTES = 16 * 2**20  # one layer's saved [B, H, T, S] probabilities (SmolLM2, 4 x 256 in bf16: 4.5 MB)


def fits(query: torch.Tensor, key: torch.Tensor) -> bool:
    batch, heads, length, _ = query.shape
    kv_length = key.shape[-2]
    return kv_length <= MAX_KEYS and batch * heads * length * kv_length * query.element_size() <= PROBS_BYTES


def routable(query, key, value, attn_mask, dropout_p: float, enable_gqa: bool) -> bool:
    """Whether `ShortAttention` computes this call as torch's SDPA would: 4-D tensors of one batch, no
    dropout, a boolean or additive mask, heads that divide (grouped only where `enable_gqa`), short rows."""
    if dropout_p != 0.0 or not all(t.dim() == 4 for t in (query, key, value)):
        return False
    (batch, heads, _, dim), (k_batch, kv_heads, kv_length, k_dim) = query.shape, key.shape
    if value.shape[:3] != key.shape[:3] or (k_batch, k_dim) != (batch, dim):
        return False
    if heads != kv_heads and not (enable_gqa and heads % kv_heads == 0):
        return False
    if attn_mask is not None and (attn_mask.dim() > 4 or attn_mask.shape[-1] != kv_length):
        return False
    return fits(query, key)


def short_attention(query, key, value, attn_mask=None, is_causal=False, scale=None) -> torch.Tensor:
    """softmax(Q K^T * scale + mask) V as torch's SDPA defines it ([B, H, T, D]; key, value [B, Hkv, S, D]).
    `is_causal`: query t attends to keys 0..t (aligned top-left, as SDPA's). A boolean mask is True where
    attention is allowed; a floating one is added to the scores."""
    length, kv_length = query.shape[-2], key.shape[-2]
    if is_causal:
        attn_mask = torch.ones(length, kv_length, dtype=torch.bool, device=query.device).tril()
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return ShortAttention.apply(query, key, value, attn_mask, scale)


class ShortAttention(torch.autograd.Function):
    """The module docstring's attention. Key/value head h's products hold its G query heads stacked:
    rows g*T..(g+1)*T are query head h*G + g, as SDPA's `enable_gqa` pairs them."""

    @staticmethod
    def forward(ctx, query, key, value, attn_mask, scale):
        batch, heads, length, dim = query.shape
        kv_heads, kv_length = key.shape[1], key.shape[2]
        groups = heads // kv_heads
        q = (query * scale).reshape(batch * kv_heads, groups * length, dim)
        k = key.reshape(batch * kv_heads, kv_length, dim)
        v = value.reshape(batch * kv_heads, kv_length, dim)
        scores = torch.bmm(q, k.transpose(1, 2)).view(batch, kv_heads, groups, length, kv_length)
        probs = masked_softmax(scores, attn_mask).view(batch * kv_heads, groups * length, kv_length)
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale, ctx.query_shape = scale, query.shape
        return torch.bmm(probs, v).view(batch, heads, length, dim)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, probs = ctx.saved_tensors
        grad_out = grad_out.reshape(q.shape).to(q.dtype)
        grad_v = torch.bmm(probs.transpose(1, 2), grad_out)
        grad_scores = torch._softmax_backward_data(torch.bmm(grad_out, v.transpose(1, 2)), probs, -1, probs.dtype)
        grad_q = torch.bmm(grad_scores, k).mul_(ctx.scale)  # q was scaled: d(q*scale)/dq
        grad_k = torch.bmm(grad_scores.transpose(1, 2), q)
        batch, kv_heads = ctx.query_shape[0], k.shape[0] // ctx.query_shape[0]
        kv_shape = (batch, kv_heads, *k.shape[1:])
        return grad_q.view(ctx.query_shape), grad_k.view(kv_shape), grad_v.view(kv_shape), None, None


def grouped(mask: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """A [.., T, S]-broadcastable mask as a view of the scores' [B, Hkv, G, T, S] (last size may be 1)."""
    batch, kv_heads, groups = scores.shape[:3]
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    full = mask.expand(batch, kv_heads * groups, *mask.shape[-2:])
    return full.reshape(batch, kv_heads, groups, *mask.shape[-2:])


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dimension after the mask (written into the scores); a query whose every key
    is masked out gets zeros, as torch's kernels give it (softmax alone would give NaN)."""
    if mask is None:
        return torch.softmax(scores, dim=-1)
    if mask.dtype == torch.bool:
        scores.masked_fill_(grouped(~mask, scores), float("-inf"))
        dead = ~mask.any(dim=-1, keepdim=True)
    else:
        scores.add_(grouped(mask.to(scores.dtype), scores))
        dead = (mask == float("-inf")).all(dim=-1, keepdim=True)
    probs = torch.softmax(scores, dim=-1)
    return probs.masked_fill_(grouped(dead, probs), 0.0) if dead.any() else probs
