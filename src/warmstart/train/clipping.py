"""Gradient clipping by the global norm, without the multiply where nothing is clipped.

`torch.nn.utils.clip_grad_norm_` always multiplies every gradient by min(max_norm / (norm + 1e-6), 1):
on an accelerator, asking whether the factor is 1 would wait for the device, so it multiplies by 1
instead. On the CPU there is nothing to wait for, and multiplying SmolLM2-135M's 540 MB of fp32
gradients by 1 reads and writes all of them: here the multiply is skipped where the factor is exactly 1.
Measured on SmolLM2-135M's gradients at norm 0.12 (max 1.0): 19.4 vs 39.8 ms per clip, medians of 20
interleaved calls (2-core AMD EPYC, family 25 model 17, CPU flags avx2 avx512_bf16, 2 threads), ~1 % of
a bf16 SFT step of 2 x 256 tokens (~1.6 s). Where the norm is above the limit nothing changes (the
utilisation benchmark's random tokens give norms of ~16-19: no gain there). The gradients come out
bitwise the same as torch's (x * 1.0 == x), a non-finite norm included (its factor is not >= 1, so it
is applied).

`clipped_step` can also hand a clipping factor below 1 to a fused AdamW as its gradient scale (the
protocol torch.amp.GradScaler uses with fused optimizers: the kernel divides each gradient by the scale
as it reads it, and writes it back so), instead of a pass multiplying every gradient first: SmolLM2-135M
bf16 SFT at 2 x 256 tokens (random tokens, norms ~10-19, every step clipped) 1.908 vs 1.960 s per step
(20 interleaved steps each, medians, 2026-12-05) and 1.602 vs 1.648 s (12 each, 2026-12-06; 2-core AMD
EPYC, family 25 model 17, CPU flags avx2 avx512_bf16).
g / (1 / c) rounds differently from g x c in the last bit of some gradients, so `sft` folds only under
bf16 autocast, where the products' own rounding is ~2^16 times coarser; fp32 training (the demo's)
keeps torch's exact clip.
"""

from __future__ import annotations

import torch


def clip_gradients(parameters, max_norm: float) -> torch.Tensor:
    """Scale the gradients of `parameters` in place so that their global 2-norm is at most `max_norm`,
    exactly as `torch.nn.utils.clip_grad_norm_`; returns the norm before clipping."""
    parameters = as_list(parameters)
    grads = cpu_gradients(parameters)
    if grads is None:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)  # sharded (DTensor) or on a device
    total = torch.nn.utils.get_total_norm(grads)
    if not bool(clip_factor(max_norm, total) >= 1.0):
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total


def clipped_step(optimizer: torch.optim.Optimizer, parameters, max_norm: float, fold: bool = False) -> torch.Tensor:
    """`clip_gradients(parameters, max_norm)`, then `optimizer.step()`; returns the norm before clipping.
    With `fold`, a factor below 1 is applied by a fused optimizer as it reads the gradients (module
    docstring) where the gradients are plain CPU tensors; elsewhere, or for another optimizer, the
    clip runs first as without it."""
    parameters = as_list(parameters)
    grads = cpu_gradients(parameters) if fold and fused_optimizer(optimizer) else None
    if grads is None:
        total = clip_gradients(parameters, max_norm)
        optimizer.step()
        return total
    total = torch.nn.utils.get_total_norm(grads)
    factor = clip_factor(max_norm, total)
    if bool(factor >= 1.0):
        optimizer.step()
        return total
    optimizer.grad_scale = (1.0 / factor).to(torch.float32)  # read by torch's fused Adam/AdamW step
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale
    return total


def gradient_norm(parameters) -> torch.Tensor:
    """The global 2-norm of the gradients of `parameters`, as the clip computes it, without clipping."""
    return torch.nn.utils.get_total_norm([p.grad for p in as_list(parameters) if p.grad is not None])


def as_list(parameters) -> list:
    return [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)


def cpu_gradients(parameters: list) -> list[torch.Tensor] | None:
    """The parameters' gradients where there are some and all are plain CPU tensors, else None."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or not all(type(g) is torch.Tensor and g.device.type == "cpu" for g in grads):
        return None
    return grads


def clip_factor(max_norm: float, total: torch.Tensor) -> torch.Tensor:
    """torch's clipping factor, before its clamp to 1."""
    return max_norm / (total + 1e-6)


def fused_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    """A torch Adam/AdamW whose every group runs the fused kernel (the one that takes a gradient scale)."""
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and all(
        g.get("fused") for g in optimizer.param_groups
    )
