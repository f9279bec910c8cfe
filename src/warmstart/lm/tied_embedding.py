"""The input embedding of a model whose output head shares its weight, with one gradient tensor for both.

With tied weights, autograd gives the shared weight two dense gradients and adds them: the head's [V, H]
(lm/linear_ce.py) and the embedding's, a zero-filled [V, H] tensor with the batch's rows added in. For
SmolLM2-135M (49,152 x 576) each is 113 MB of fp32, above glibc's largest mmap threshold, so the second
one comes from the kernel page by page every step, is written with zeros, and is then read again by the
sum. Here the head's function hands its gradient to a `HeadGradient` slot instead of autograd, and the
embedding's backward, which autograd runs after it (the embedding's gradient needs the whole backward
through the decoder, which starts at the head), adds the rows it looked up into that tensor and returns
it as the weight's one gradient. Measured on SmolLM2-135M's SFT step (2 x 256 tokens, 2-core
AVX512-BF16 EPYC, glibc keeping freed memory: train/host_memory.py; interleaved, medians): bf16 1.60 vs
1.64 s per step (10 steps each), fp32 2.80 vs 2.83 s (3 each).

The floats are those of the two-tensor sum: each looked-up token's rows are summed first, in the order
they occur, from zero (as torch's CPU embedding backward does), and added to the head's row once
(tested equal, repeated tokens and the padding index included; the one difference is the sign of a zero:
where the head's gradient holds -0.0 in a row no token looked up, the sum made it +0.0). CPU only: on a
GPU, index_add_ over repeated indices adds atomically, in no fixed order, where torch's embedding
backward sorts; and the fresh-page cost this removes is the CPU allocator's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class HeadGradient:
    """The output head's weight gradient, held from the head's backward until the embedding's."""

    def __init__(self) -> None:
        self.grad: torch.Tensor | None = None

    def take(self) -> torch.Tensor | None:
        grad, self.grad = self.grad, None
        return grad


def tied_embedding(model) -> torch.nn.Embedding | None:
    """The model's input embedding where this module computes its gradient with the head's: a plain
    `nn.Embedding` (no max_norm, frequency scaling or sparse gradient) on the CPU sharing the plain linear
    head's weight, which is trained. None otherwise (untied, a LoRA-wrapped or frozen head, another
    module, a GPU)."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if type(embedding) is not torch.nn.Embedding or type(head) is not torch.nn.Linear:
        return None
    if head.weight is not embedding.weight or not embedding.weight.requires_grad:
        return None
    if embedding.weight.device.type != "cpu":  # module docstring
        return None
    if embedding.max_norm is not None or embedding.scale_grad_by_freq or embedding.sparse:
        return None
    return embedding


class TiedEmbedding(torch.autograd.Function):
    """F.embedding(ids, weight, padding_idx) whose backward adds into the head's gradient (module docstring)."""

    @staticmethod
    def forward(ctx, ids, weight, padding_idx, slot):
        ctx.save_for_backward(ids)
        ctx.vocab, ctx.padding_idx, ctx.slot = weight.shape[0], padding_idx, slot
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, grad_out):
        (ids,) = ctx.saved_tensors
        rows, ids = grad_out.reshape(-1, grad_out.shape[-1]), ids.reshape(-1)
        head = ctx.slot.take()
        if head is None:  # the head computed no weight gradient: the embedding's own, as torch's
            padding = -1 if ctx.padding_idx is None else ctx.padding_idx
            return None, torch.ops.aten.embedding_dense_backward(rows, ids, ctx.vocab, padding, False), None, None
        looked_up = ids != ctx.padding_idx if ctx.padding_idx is not None else torch.ones_like(ids, dtype=torch.bool)
        tokens, occurrence = torch.unique(ids[looked_up], return_inverse=True)
        summed = rows.new_zeros((len(tokens), rows.shape[1])).index_add_(0, occurrence, rows[looked_up])
        return None, head.index_add_(0, tokens, summed.to(head.dtype)), None, None


def embed(embedding: torch.nn.Embedding, ids: torch.Tensor, slot: HeadGradient) -> torch.Tensor:
    """The embedding's output for `ids`; its weight's gradient is `slot`'s plus its own (module docstring)."""
    return TiedEmbedding.apply(ids, embedding.weight, embedding.padding_idx, slot)
