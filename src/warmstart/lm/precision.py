"""bf16 autocast on CPU, with linear layers' backward computed in the layouts CPU kernels run fast.

Under plain `torch.autocast("cpu", bfloat16)`, `nn.Linear`'s backward computes the input gradient as
dy @ W with both operands row-major. On CPUs without native bf16 matmul (AVX2 only: no AVX512-BF16 or
AMX) that product takes a path 7-19x slower than the forward's y = x @ W^T on the same shapes
(bench/matmul_layouts.py), and the weight gradient dy^T @ x slows ~4x once W has many rows (the
49k-row LM head): the backward of a bf16 step ran ~13x its forward (bench/utilisation.py).

`bf16_autocast()` keeps autocast for everything else and sends each linear product it would run in
bf16 through `Bf16Linear`, whose backward computes the same products as
  dx = F.linear(dy, W^T made contiguous)   (the forward's kernel and layout)
  dW = dy^T @ x                            (fast while W's row block stays small)
over blocks of at most `ROW_BLOCK` rows of W: measured on SmolLM2-135M's shapes, every product then
runs at 10-23 GFLOP/s in bf16 against 0.8-4.7 before. The arithmetic is the same products and sums
in bf16; only the order of the head's row blocks differs.

On a CPU with native bf16 matmul, the attention of training rows short enough that their [T, S]
probabilities can be kept runs through `short_attention.py` instead of torch's flash kernel, whose bf16
tiles ran no faster than its fp32 ones there: a bf16 SmolLM2 SFT step of 2 x 256 tokens took 1.70 s
instead of 1.82 s (medians of 10 steps each, interleaved, 2-core AVX512-BF16 EPYC).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .short_attention import routable, short_attention
from .weight_casts import WeightCasts

# Rows of W (output features) per backward product: 4096 x 576 bf16 is ~4.7 MB, which the products
# above keep fast; 8192 and more fell back to 5-7 GFLOP/s on the head (measured, 2-core EPYC).
ROW_BLOCK = 4096


class Bf16Linear(torch.autograd.Function):
    """y = x @ W^T + b on bf16 x and b, with a backward in the fast layouts (module docstring). W comes in
    its own dtype (fp32 master weights) and is cast here (into a kept buffer where `casts` is given:
    lm/weight_casts.py), its gradient computed straight into that dtype: a cast outside (`weight.to(bf16)`,
    autograd's ToCopy) costs a bf16 gradient on fresh memory and a second pass casting it back, every
    linear layer, every step."""

    @staticmethod
    def forward(ctx, x, weight, bias, casts=None):
        compute_weight = weight.to(x.dtype) if casts is None else casts.cast(weight, x.dtype)
        ctx.save_for_backward(x, compute_weight)
        ctx.weight_dtype = weight.dtype
        ctx.has_bias = bias is not None
        return F.linear(x, compute_weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        dy = grad_out.reshape(-1, grad_out.shape[-1]).contiguous()
        grad_x = input_grad(dy, weight).reshape(x.shape) if ctx.needs_input_grad[0] else None
        rows = x.reshape(-1, x.shape[-1])
        grad_w = weight_grad(dy, rows, ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        grad_b = dy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def row_blocks(rows: int) -> list[slice]:
    return [slice(start, start + ROW_BLOCK) for start in range(0, rows, ROW_BLOCK)]


def input_grad(dy: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dx = dy @ W [tokens, in]. Without native bf16 matmul, through the forward's kernel (F.linear against
    W^T made contiguous, by row block); with it, dy @ W runs as fast as that (bench/matmul_layouts.py,
    AVX512-BF16) and the copy of W^T, ~6 % of a SmolLM2 step, is left out."""
    if native_bf16_matmul():
        return dy @ weight
    return sum(F.linear(dy[:, rows], weight[rows].t().contiguous()) for rows in row_blocks(weight.shape[0]))


def native_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), as torch's CPU dispatch sees it."""
    cpu = torch.cpu
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def weight_grad(dy: torch.Tensor, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """dW = dy^T @ x [out, in] in `dtype` (default: dy's), by row block of W, each block's product written
    straight into the result: no concatenation, and a cast to the weight's dtype costs no tensor of its own
    (the 49k-row head's gradient is 113 MB in fp32, fresh memory every step). One block in dy's dtype: its
    product as it is."""
    blocks = row_blocks(dy.shape[1])
    if len(blocks) == 1 and dtype in (None, dy.dtype):
        return dy.t() @ x
    out = torch.empty(dy.shape[1], x.shape[1], dtype=dtype or dy.dtype, device=dy.device)
    for rows in blocks:
        out[rows] = dy[:, rows].t() @ x
    return out


class _RouteBf16(TorchFunctionMode):
    """Where CPU autocast is on (not in regions that turn it off): F.linear through Bf16Linear, and on a
    CPU with native bf16 matmul, the attention of short rows that a backward will follow through
    lm/short_attention.py (batched products: faster there than torch's flash kernel in bf16). With
    `casts`, the weights' bf16 copies are written into buffers kept between steps (lm/weight_casts.py).

    Inside a graph torch.compile traces (`sft.compile`: lm/compiled.py) the route stands aside and the graph
    runs plain autocast's operations, whose products Inductor lays out itself. Traced, the route's kept
    casts are Python state that changes every call: Dynamo split the decoder into dozens of graphs and
    recompiled Bf16Linear's forward per call up to its limit, then ran it eager with a multi-line warning
    (SmolLM2 bf16 SFT compiled ran 7-11 % slower than eager: bench/utilisation.py's history). Standing
    aside, the decoder is one graph, and a compiled SmolLM2 bf16 step runs at least as fast as an eager
    one (bench/compile.py: 1.16x after 187 s of compiling, one repetition; in alternating processes of
    10 steps, 1.54 and 1.57 s against 1.56 and 1.64; 2-core AMD EPYC, family 25 model 17, CPU flags
    avx2 avx512_bf16)."""

    def __init__(self, casts: WeightCasts | None = None):
        super().__init__()
        self.casts = casts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.compiler.is_compiling() or not torch.is_autocast_enabled("cpu"):
            return func(*args, **kwargs)
        if func is F.linear:
            return routed_linear(func, args, kwargs, self.casts)
        if func is F.scaled_dot_product_attention and torch.is_grad_enabled() and native_bf16_matmul():
            return routed_attention(func, args, kwargs)
        return func(*args, **kwargs)


def routed_linear(func, args, kwargs, casts: WeightCasts | None = None):
    x, weight, bias = bound_linear_args(*args, **kwargs)
    if not (x.is_floating_point() and weight.is_floating_point()):
        return func(*args, **kwargs)
    dtype = torch.get_autocast_dtype("cpu")
    cast_bias = bias.to(dtype) if bias is not None else None
    return Bf16Linear.apply(x.to(dtype), weight, cast_bias, casts)


def bound_linear_args(input, weight, bias=None):
    return input, weight, bias


def routed_attention(func, args, kwargs):
    call = bound_attention_args(*args, **kwargs)
    query, key, value = (call[name] for name in ("query", "key", "value"))
    if not all(t.is_floating_point() for t in (query, key, value)):
        return func(*args, **kwargs)
    # As autocast casts SDPA's floating inputs, the mask included (a float32 -3.4e38 becomes bf16's -inf).
    dtype = torch.get_autocast_dtype("cpu")
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    mask, causal = call["attn_mask"], call["is_causal"]
    if not routable(query, key, value, mask, call["dropout_p"], causal, call["enable_gqa"]):
        return func(*args, **kwargs)
    mask = mask.to(dtype) if mask is not None and mask.is_floating_point() else mask
    return short_attention(query, key, value, mask, causal, call["scale"])


def bound_attention_args(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
) -> dict:
    return locals()


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward, with `checkpointing_kwargs`:
    transformers' `activation_checkpointing_enable` where it has it (5.x; its old name,
    `gradient_checkpointing_enable`, warns of removal in v6 there), the old name before it."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=checkpointing_kwargs())
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs())


def checkpointing_kwargs() -> dict:
    """transformers' `gradient_checkpointing_kwargs`: non-reentrant (gradients reach a LoRA adapter even
    though the inputs need none), recomputing under `_RouteBf16` as the forward ran. torch restores the
    forward's autocast state for the recomputation but not its torch-function modes: without this the
    recomputation takes torch's own linear and attention kernels, saves other tensors than the forward
    did, and checkpoint raises."""
    return {"use_reentrant": False, "context_fn": recompute_contexts}


def recompute_contexts():
    """(forward, recomputation) contexts, taken when the forward runs: the route where that forward ran
    under CPU autocast (warmstart enters it only through `bf16_autocast`), else nothing (fp32, GPU)."""
    recompute = _RouteBf16() if torch.is_autocast_enabled("cpu") else contextlib.nullcontext()
    return contextlib.nullcontext(), recompute


@contextlib.contextmanager
def bf16_autocast(keep_casts: bool = False):
    """CPU bf16 autocast whose linear layers backpropagate through `Bf16Linear` (and whose short rows'
    attention runs as batched products: `_RouteBf16`). `keep_casts`: the weights' bf16 copies go into
    buffers their parameters keep (lm/weight_casts.py: not for a sharded model); the context yields its
    `WeightCasts` (or None), for a weight cast outside F.linear (the output head's in lm/linear_ce.py)."""
    casts = WeightCasts() if keep_casts else None
    with torch.autocast("cpu", dtype=torch.bfloat16), _RouteBf16(casts):
        yield casts
