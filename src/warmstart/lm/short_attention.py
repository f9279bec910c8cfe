"""Attention of short bf16 training rows as batched matrix products, for CPUs with native bf16 matmul.

torch's CPU flash attention ran SmolLM2-135M's bf16 attention (2 rows x 9 heads x 256 positions x 64,
causal, 3 key/value heads) no faster than its fp32 on a 2-core AVX512-BF16 EPYC, ~110 GFLOP/s, while
torch.bmm multiplies bf16 there at ~400 GFLOP/s: attention took ~15 % of a bf16 SFT step for ~3 % of
its FLOPs. Here the scores are one product per key/value head (its query heads stacked: [G*T, D] x
[D, S]), in fp32 as flash keeps them (rounded to bf16, a logit of 30 would be off by ~0.06 and its
probability by ~6 %); their softmax is torch's, the probabilities are kept in bf16 for the backward,
whose four products are bf16 bmm and whose softmax gradient is torch's own fused kernel. Errors
against float64 are those of torch's bf16 kernel (tests/lm/test_short_attention.py, logits up to std 10).

Measured in the SFT step (bf16, SmolLM2, medians of interleaved steps, same machine): 2 x 256 positions
1.70 vs 1.82 s per step, 2 x 512 3.78 vs 4.03 s. Timed alone, forward + backward of one layer, the two
kernels' order depends on the harness (2 x 256: flash 8.1-9.3 ms, this 4.4-8.1), but past ~512 keys
flash's skipping of the masked half wins clearly (1 x 1024: 41-42 vs 75-78 ms), and the [T, S]
probabilities of every head are kept for the backward (flash keeps only the output and a logsumexp).
So rows come here only up to `MAX_KEYS` keys and `PROBS_BYTES` of probabilities per layer; others keep
flash. A query that may attend to no key gets output 0 and no gradient, as torch's kernels give it.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

MAX_KEYS = 512  # past it flash is faster (module docstring)
PROBS_BYTES = 16 * 2**20  # one layer's saved [B, H, T, S] probabilities (SmolLM2, 4 x 256 in bf16: 4.5 MB)


def fits(query: torch.Tensor, key: torch.Tensor) -> bool:
    batch, heads, length, _ = query.shape
    kv_length = key.shape[-2]
    return kv_length <= MAX_KEYS and batch * heads * length * kv_length * query.element_size() <= PROBS_BYTES


def routable(query, key, value, attn_mask, dropout_p: float, is_causal: bool, enable_gqa: bool) -> bool:
    """Whether `ShortAttention` computes this call as torch's SDPA would: 4-D tensors of one batch, no
    dropout, heads that divide (grouped only where `enable_gqa`), a value head as wide as the query's,
    either `is_causal` or a mask (boolean, or additive in a floating dtype, needing no gradient), short
    rows. Anything else goes to torch, which computes it or says why not."""
    if dropout_p != 0.0 or not all(t.dim() == 4 for t in (query, key, value)):
        return False
    (batch, heads, _, dim), (k_batch, kv_heads, kv_length, k_dim) = query.shape, key.shape
    if value.shape[:3] != key.shape[:3] or (k_batch, k_dim, value.shape[-1]) != (batch, dim, dim):
        return False
    if heads != kv_heads and not (enable_gqa and heads % kv_heads == 0):
        return False
    return plain_mask(attn_mask, is_causal, kv_length) and fits(query, key)


def plain_mask(attn_mask, is_causal: bool, kv_length: int) -> bool:
    if attn_mask is None:
        return True
    if is_causal or attn_mask.requires_grad or not 2 <= attn_mask.dim() <= 4 or attn_mask.shape[-1] != kv_length:
        return False
    return attn_mask.dtype in (torch.bool, torch.float32, torch.bfloat16, torch.float16)


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
        # The scores in fp32 (module docstring): this product runs at the fp32 rate, the other four in bf16.
        scores = torch.bmm(q.float(), k.float().transpose(1, 2)).view(batch, kv_heads, groups, length, kv_length)
        probs = masked_softmax(scores, attn_mask).to(query.dtype).view(batch * kv_heads, groups * length, kv_length)
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale, ctx.query_shape = scale, query.shape
        return torch.bmm(probs, v).view(batch, heads, length, dim)

    @staticmethod
    @once_differentiable  # its backward's own gradient is not derived: a second backward raises
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
    is masked out gets zeros, as torch's kernels give it (softmax alone would give NaN). A floating mask
    counts as masking out where it is -inf."""
    if mask is None:
        return torch.softmax(scores, dim=-1)
    if mask.dtype == torch.bool:
        scores.masked_fill_(grouped(~mask, scores), float("-inf"))
        dead = ~mask.any(dim=-1, keepdim=True)
    else:
        scores.add_(grouped(mask, scores))
        dead = (mask == float("-inf")).all(dim=-1, keepdim=True)
    probs = torch.softmax(scores, dim=-1)
    return probs.masked_fill_(grouped(dead, probs), 0.0) if dead.any() else probs
