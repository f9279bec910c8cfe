"""Cross-entropy through the output head without the [N, V] logits in fp32: SFT's loss, chunk by chunk.

The plain way (`F.cross_entropy(head(hidden).float(), targets)`) holds the logits, their log-softmax
and the gradient of each, [N, V] fp32 apiece, and runs three memory-bound passes over them (plus the
zero-fill of the gradient and, under bf16, a cast each way). At SmolLM2's 49,152-entry vocabulary
and 2,040 scored tokens those are 400 MB tensors, freshly allocated every step; on CPU that memory
comes from the kernel page by page, and the passes over it cost more than the head's matmul
(a torch.profiler run of SmolLM2-135M bf16 SFT at 8 x 256 rows: ~3 s of a 13 s step).

`head_ce_sum` computes the loss and its gradient in one pass over chunks of tokens: a chunk's logits
(`CHUNK_BYTES` of fp32, small enough that the allocator reuses the same memory chunk after chunk),
its logsumexp, the loss, then softmax - one-hot in place, stored in the compute dtype. After the last
chunk, two matmuls give the gradients of the hidden states and of the head's weight; backward only
scales them. The arithmetic is the same as the plain way's (fp32 softmax, gradients through the
compute dtype); the sums run in another order.

The gradient is computed in the forward (its whole cost) whenever grad mode is on and an input needs
it; under `torch.no_grad()` only the loss is computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .precision import input_grad, weight_grad

CHUNK_BYTES = 16 * 2**20  # fp32 logits per chunk; glibc serves blocks under 32 MB from reused heap memory


def head_ce_sum(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over the N rows of `hidden` ([N, H]) of -log softmax(head(hidden))[target], as a 0-dim fp32 tensor."""
    if type(head) is not torch.nn.Linear:  # an adapter-wrapped head (LoRA on lm_head) adds to its weight's product
        return F.cross_entropy(head(hidden).float(), targets, reduction="sum")
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in (head.weight, head.bias) if p is not None)
    )
    if needs_grad:
        return LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets)
    h, w, b = in_compute_dtype(hidden, head.weight, head.bias)
    with torch.autocast(hidden.device.type, enabled=False):
        return sum((chunk_loss(F.linear(h[rows], w, b).float(), targets[rows]) for rows in chunks(h, w)), zero(h))


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets):
        h, w, b = in_compute_dtype(hidden, weight, bias)  # before autocast is turned off below
        with torch.autocast(hidden.device.type, enabled=False):
            total = zero(h)
            grad_logits = torch.empty(h.shape[0], w.shape[0], dtype=h.dtype, device=h.device)
            for rows in chunks(h, w):
                logits = F.linear(h[rows], w, b).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - chosen(logits, targets[rows])).sum()
                grad_logits[rows] = softmax_minus_one_hot(logits, lse, targets[rows])
            grad_hidden = hidden_grad(grad_logits, w).to(hidden.dtype) if ctx.needs_input_grad[0] else None
            grad_weight = head_weight_grad(grad_logits, h).to(weight.dtype) if ctx.needs_input_grad[1] else None
            grad_bias = (
                grad_logits.float().sum(0).to(bias.dtype) if bias is not None and ctx.needs_input_grad[2] else None
            )
        ctx.grads = (grad_hidden, grad_weight, grad_bias)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        scaled = tuple(None if g is None else g * grad_output.to(g.dtype) for g in ctx.grads)
        ctx.grads = None
        return *scaled, None


def in_compute_dtype(hidden, weight, bias):
    """The inputs in autocast's dtype where autocast is on (as F.linear would run), else as they are."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    return hidden.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def chunks(h: torch.Tensor, w: torch.Tensor) -> list[slice]:
    size = max(1, CHUNK_BYTES // (4 * w.shape[0]))
    return [slice(start, start + size) for start in range(0, h.shape[0], size)]


def zero(h: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float32, device=h.device)


def chosen(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def chunk_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (torch.logsumexp(logits, dim=-1) - chosen(logits, targets)).sum()


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


def head_weight_grad(grad_logits: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return weight_grad(grad_logits, h) if low_precision_cpu(h) else grad_logits.t() @ h
