"""Cross-entropy through the output head without the [N, V] logits in fp32: SFT's loss, chunk by chunk.

The plain way (`F.cross_entropy(head(hidden).float(), targets)`) holds the logits, their log-softmax
and the gradient of each, [N, V] fp32 apiece, and runs three memory-bound passes over them (plus the
zero-fill of the gradient and, under bf16, a cast each way). At SmolLM2's 49,152-entry vocabulary
and 2,040 scored tokens those are 400 MB tensors, freshly allocated every step; on CPU that memory
comes from the kernel page by page, and the passes over it cost more than the head's matmul
(a torch.profiler run of SmolLM2-135M bf16 SFT at 8 x 256 rows: ~3 s of a 13 s step).

`head_ce_sum` computes the loss and its gradient in one pass over chunks of tokens: every row's logits
in one product, in the compute dtype, into the tensor their gradient will take; then chunk by chunk
(`CHUNK_BYTES` of fp32: in bf16 cast into a buffer written chunk after chunk, `ChunkScratch`), its
logsumexp, the loss, then softmax - one-hot in place, stored back. After the last chunk, two matmuls
give the gradients of the hidden states and of the head's weight; backward only scales them. The one
product: SmolLM2's head at 510 rows ran ~77 ms in bf16 against ~96 ms as six products of a chunk's 85
rows (~157 ms inside a training step under torch.profiler), fp32 ~173 against ~225 ms (2-core
AVX512-BF16 EPYC, family 25 model 17, 2 threads). The arithmetic is the same as the plain way's (fp32
softmax, gradients through the compute dtype); the sums run in another order.

The gradient is computed in the forward (its whole cost) whenever grad mode is on and an input needs
it; under `torch.no_grad()` only the loss is computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .precision import input_grad, weight_grad
from .tied_embedding import HeadGradient
from .weight_casts import WeightCasts

CHUNK_BYTES = 16 * 2**20  # fp32 logits per chunk
# Head rows per fp32 logits product. One product of a chunk's 85 rows against SmolLM2's whole 49,152 x 576
# head ran at ~113 GFLOP/s, by blocks of 2,048-4,096 rows at ~132 (the same sums: bitwise equal
# results), its loss with both gradients 0.60-0.61 s instead of 0.66-0.71 s for 510 rows (2-core
# AVX512-BF16 EPYC, 2 threads). bf16 products gained nothing from blocks there.
VOCAB_BLOCK = 4096


def head_ce_sum(
    head: torch.nn.Linear,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    casts: WeightCasts | None = None,
    slot: HeadGradient | None = None,
) -> torch.Tensor:
    """Sum over the N rows of `hidden` ([N, H]) of -log softmax(head(hidden))[target], as a 0-dim fp32 tensor.
    `casts`: the autocast context's kept weight casts (lm/precision.bf16_autocast), where the head's
    compute-dtype copy is written (SmolLM2's 49k-row head: 56 MB of bf16 a step, else on fresh memory).
    `slot`: where the weight's gradient goes instead of autograd, for a tied input embedding's backward
    to complete and return (lm/tied_embedding.py)."""
    if type(head) is not torch.nn.Linear:  # an adapter-wrapped head (LoRA on lm_head) adds to its weight's product
        return F.cross_entropy(head(hidden).float(), targets, reduction="sum")
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in (head.weight, head.bias) if p is not None)
    )
    if needs_grad:
        return LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, casts, slot)
    h, w, b = in_compute_dtype(hidden, head.weight, head.bias, casts)
    with torch.autocast(hidden.device.type, enabled=False):
        scratch, total = ChunkScratch(h, w), zero(h)
        for rows in chunks(h, w):
            logits = scratch.logits(h[rows], w, b)
            total += (scratch.logsumexp(logits) - chosen(logits, targets[rows])).sum()
        return total


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, casts, slot):
        h, w, b = in_compute_dtype(hidden, weight, bias, casts)  # before autocast is turned off below
        with torch.autocast(hidden.device.type, enabled=False):
            total = zero(h)
            # Every row's logits in one product, where their gradient goes (module docstring). Chunk by chunk
            # gave the same floats on this machine (both kernel paths, AVX-512 and AVX2, at SmolLM2's head);
            # a BLAS may pick another kernel for fewer rows, so the no-grad path (chunk by chunk) is only
            # guaranteed equal to rounding (tested).
            grad_logits = head_logits(h, w, b, torch.empty(h.shape[0], w.shape[0], dtype=h.dtype, device=h.device))
            scratch = ChunkScratch(h, w)
            for rows in chunks(h, w):
                chunk = grad_logits[rows]
                logits = scratch.as_fp32(chunk)  # fp32: the chunk itself, its gradient written over it
                lse = scratch.logsumexp(logits)
                total += (lse - chosen(logits, targets[rows])).sum()
                grad = softmax_minus_one_hot(logits, lse, targets[rows])
                if grad is not chunk:
                    chunk.copy_(grad)
            del scratch  # its 32 MB are not needed by the products below
            grad_hidden = hidden_grad(grad_logits, w).to(hidden.dtype) if ctx.needs_input_grad[0] else None
            grad_weight = head_weight_grad(grad_logits, h, weight.dtype) if ctx.needs_input_grad[1] else None
            grad_bias = (
                grad_logits.float().sum(0).to(bias.dtype) if bias is not None and ctx.needs_input_grad[2] else None
            )
        ctx.grads, ctx.slot = (grad_hidden, grad_weight, grad_bias), slot
        return total

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.grads is None:  # the gradients were computed in forward and handed out by the first backward
            raise RuntimeError(
                "head_ce_sum's loss backpropagates once: its gradients are computed with the loss (compute the "
                "loss again for a second backward)"
            )
        # In place: the gradients are this function's own tensors, and a fresh [V, H] one every step comes
        # from the kernel page by page (SmolLM2's head, 113 MB: 34 ms on fresh memory, 7 ms in place).
        grad_hidden, grad_weight, grad_bias = (
            None if g is None else g.mul_(grad_output.to(g.dtype)) for g in ctx.grads
        )
        ctx.grads = None
        if ctx.slot is not None:  # the tied embedding's backward, later, adds its rows and returns it
            ctx.slot.grad, grad_weight = grad_weight, None
        return grad_hidden, grad_weight, grad_bias, None, None, None


class ChunkScratch:
    """Two fp32 chunk buffers, allocated once per call and written chunk after chunk. A fresh 16 MB
    tensor per operation (the cast to fp32, logsumexp's temporaries) came from the kernel page by page
    inside a training step: torch.profiler, SmolLM2-135M bf16 SFT at 2 x 256 tokens (2-core AVX512-BF16
    EPYC), ~0.32 s of a 3.0 s step in those operations before, ~0.08 s on these buffers."""

    def __init__(self, h: torch.Tensor, w: torch.Tensor):
        rows = min(chunk_rows(w), h.shape[0])
        self.values = torch.empty(rows, w.shape[0], dtype=torch.float32, device=h.device)
        self.work = torch.empty_like(self.values)

    def logits(self, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """The chunk's fp32 logits, in the first buffer (the product in the compute dtype, as F.linear's)."""
        out = self.values[: h.shape[0]]
        if w.dtype != torch.float32:
            return out.copy_(F.linear(h, w, b))
        return head_logits(h, w, b, out)

    def as_fp32(self, logits: torch.Tensor) -> torch.Tensor:
        """fp32 logits as they are; others cast into the first buffer."""
        if logits.dtype == torch.float32:
            return logits
        return self.values[: logits.shape[0]].copy_(logits)

    def logsumexp(self, logits: torch.Tensor) -> torch.Tensor:
        """torch.logsumexp(logits, -1), the same operations in the same order, its temporary in the second
        buffer: log(sum(exp(logits - max))) + max, an infinite max taken as 0."""
        top = logits.amax(dim=-1, keepdim=True)
        top.masked_fill_(top.abs() == float("inf"), 0)
        work = torch.sub(logits, top, out=self.work[: logits.shape[0]]).exp_()
        return work.sum(dim=-1).log_().add_(top.squeeze(-1))


def head_logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """h @ w.T (+ b) written into `out`, in h's dtype: F.linear's product (addmm with a bias). fp32: by
    blocks of `VOCAB_BLOCK` rows of the head, each product written into its columns."""
    for cols in vocab_blocks(w) if w.dtype == torch.float32 else [slice(None)]:
        if b is None:
            torch.mm(h, w[cols].t(), out=out[:, cols])
        else:
            torch.addmm(b[cols], h, w[cols].t(), out=out[:, cols])
    return out


def in_compute_dtype(hidden, weight, bias, casts: WeightCasts | None = None):
    """The inputs in autocast's dtype where autocast is on (as F.linear would run), else as they are; the
    weight's copy through `casts` where given (the same values, in a buffer kept between steps)."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    w = weight.to(dtype) if casts is None else casts.cast(weight, dtype)
    return hidden.to(dtype), w, None if bias is None else bias.to(dtype)


def chunk_rows(w: torch.Tensor) -> int:
    return max(1, CHUNK_BYTES // (4 * w.shape[0]))


def vocab_blocks(w: torch.Tensor) -> list[slice]:
    return [slice(start, start + VOCAB_BLOCK) for start in range(0, w.shape[0], VOCAB_BLOCK)]


def chunks(h: torch.Tensor, w: torch.Tensor) -> list[slice]:
    size = chunk_rows(w)
    return [slice(start, start + size) for start in range(0, h.shape[0], size)]


def zero(h: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float32, device=h.device)


def chosen(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def softmax_minus_one_hot(logits: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d(sum of cross-entropy)/d(logits), written over the (fp32) logits."""
    grad = logits.sub_(lse.unsqueeze(-1)).exp_()
    grad[torch.arange(len(targets), device=grad.device), targets] -= 1
    return grad


def low_precision_cpu(t: torch.Tensor) -> bool:
    """bf16/fp16 on CPU: products go through lm/precision's layouts (fast without native bf16 matmul)."""
    return t.device.type == "cpu" and t.dtype != torch.float32


def hidden_grad(grad_logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return input_grad(grad_logits, w) if low_precision_cpu(w) else grad_logits @ w


def head_weight_grad(grad_logits: torch.Tensor, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """dW = grad_logits^T @ h, in `dtype` (the weight's)."""
    return weight_grad(grad_logits, h, dtype) if low_precision_cpu(h) else (grad_logits.t() @ h).to(dtype)
