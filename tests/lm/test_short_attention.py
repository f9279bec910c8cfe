"""short_attention computes torch's scaled_dot_product_attention (masks, causality, grouped heads, queries
that see no key), as accurately in bf16 as torch's own kernel; bf16_autocast sends short training rows to it."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from helpers import TINY_SHAPE as SHAPE
from helpers import logsumexp_gradients
from warmstart.lm import precision, short_attention
from warmstart.lm.precision import bf16_autocast, enable_activation_checkpointing
from warmstart.lm.short_attention import routable
from warmstart.lm.short_attention import short_attention as attention
from warmstart.lm.tinymodel import build_tiny_llama


def packed_mask(batch: int, length: int, cuts: list[int]) -> torch.Tensor:
    """[B, 1, T, T] bool: causal within each of the row's documents (starting at `cuts`)."""
    doc = torch.zeros(length, dtype=torch.long)
    for cut in cuts:
        doc[cut:] += 1
    same = (doc[:, None] == doc[None, :]) & torch.ones(length, length, dtype=torch.bool).tril()
    return same.expand(batch, 1, length, length)


def dead_rows_mask(batch: int, length: int) -> torch.Tensor:
    """Causal, with queries 0 and 5 of the first row allowed no key (a padding row's queries)."""
    mask = torch.ones(batch, 1, length, length, dtype=torch.bool).tril().clone()
    mask[0, 0, [0, 5]] = False
    return mask


def additive(mask: torch.Tensor) -> torch.Tensor:
    return torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))


CASES = {
    "causal": dict(heads=4, kv_heads=4, length=24, kv_length=24, is_causal=True),
    "causal, more keys than queries": dict(heads=4, kv_heads=4, length=9, kv_length=24, is_causal=True),
    "grouped heads": dict(heads=6, kv_heads=2, length=24, kv_length=24, is_causal=True),
    "no mask": dict(heads=2, kv_heads=2, length=7, kv_length=24),
    "packed rows": dict(heads=6, kv_heads=3, length=24, kv_length=24, mask=packed_mask(2, 24, [9, 17])),
    "additive mask": dict(heads=4, kv_heads=4, length=24, kv_length=24, mask=additive(packed_mask(2, 24, [11]))),
    "query with no key": dict(heads=4, kv_heads=2, length=24, kv_length=24, mask=dead_rows_mask(2, 24)),
    "query with no key, additive": dict(
        heads=4, kv_heads=4, length=24, kv_length=24, mask=additive(dead_rows_mask(2, 24))
    ),
    "per-head mask": dict(heads=2, kv_heads=2, length=12, kv_length=12, mask=torch.rand(2, 2, 12, 12) > 0.3),
}


def inputs(case: dict, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [
        (2, case["heads"], case["length"], 16),
        (2, case["kv_heads"], case["kv_length"], 16),
        (2, case["kv_heads"], case["kv_length"], 16),
        (2, case["heads"], case["length"], 16),
    ]
    q, k, v, grad = (torch.randn(s, generator=generator).to(dtype) for s in shapes)
    return q, k, v, grad


def run(fn, q, k, v, grad, dtype):
    leaves = [t.detach().to(dtype, copy=True).requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    out.backward(grad.to(dtype))
    return [out.detach().double()] + [t.grad.double() for t in leaves]


def torch_sdpa(case):
    def fn(q, k, v):
        mask = case.get("mask")
        mask = mask.to(q.dtype) if mask is not None and mask.dtype != torch.bool else mask
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=case.get("is_causal", False),
            enable_gqa=case["heads"] != case["kv_heads"],
        )

    return fn


def ours(case):
    return lambda q, k, v: attention(q, k, v, case.get("mask"), case.get("is_causal", False))


def relative_errors(results, reference):
    return [float((r - e).norm() / e.norm().clamp(min=1e-12)) for r, e in zip(results, reference)]


@pytest.mark.parametrize("name", list(CASES))
def test_float32_equals_torch_sdpa(name):
    case = CASES[name]
    q, k, v, grad = inputs(case, torch.float32)
    expected = run(torch_sdpa(case), q, k, v, grad, torch.float64)
    for got, want in zip(run(ours(case), q, k, v, grad, torch.float32), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("logit_scale", [1.0, 6.0, 10.0])
@pytest.mark.parametrize("name", list(CASES))
def test_bf16_is_as_accurate_as_torch_bf16_kernel(name, logit_scale):
    """On bf16 inputs, our output and gradients are as close to the float64 result as torch's own bf16
    attention's are (within 1.5x plus 1e-3): the same class of error, not a new one, also for the large
    logits (std up to ~10) where scores rounded to bf16 would not be."""
    case = CASES[name]
    q, k, v, grad = inputs(case, torch.float32, seed=1)
    q, k = ((t * logit_scale**0.5).bfloat16() for t in (q, k))  # the scores' std ~ logit_scale
    exact = run(torch_sdpa(case), q, k, v, grad, torch.float64)
    theirs = relative_errors(run(torch_sdpa(case), q, k, v, grad, torch.bfloat16), exact)
    mine = relative_errors(run(ours(case), q, k, v, grad, torch.bfloat16), exact)
    for m, t in zip(mine, theirs):
        assert m <= 1.5 * t + 1e-3, (mine, theirs)


@pytest.mark.parametrize("name", ["query with no key", "query with no key, additive"])
def test_query_with_no_key_gets_zero_output_and_finite_gradients(name):
    case = CASES[name]
    q, k, v, grad = inputs(case, torch.bfloat16)
    out, *grads = run(ours(case), q, k, v, grad, torch.bfloat16)
    assert torch.equal(out[0, :, [0, 5]], torch.zeros_like(out[0, :, [0, 5]]))
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(grads[0][0, :, [0, 5]], torch.zeros_like(grads[0][0, :, [0, 5]]))


def test_only_calls_it_computes_as_sdpa_does_are_routable(monkeypatch):
    q, k = torch.zeros(2, 6, 8, 4, dtype=torch.bfloat16), torch.zeros(2, 3, 8, 4, dtype=torch.bfloat16)
    causal = torch.ones(8, 8, dtype=torch.bool).tril()

    def takes(query=q, key=k, value=k, mask=None, dropout=0.0, is_causal=False, gqa=True):
        return routable(query, key, value, mask, dropout, is_causal, gqa)

    assert takes() and takes(is_causal=True) and takes(mask=causal) and takes(mask=additive(causal).bfloat16())
    assert not takes(gqa=False)  # SDPA itself refuses these heads
    assert not takes(dropout=0.1)
    assert not takes(q[0], k[0], k[0])  # 3-D
    assert not takes(key=k[:1], value=k[:1])  # a broadcast batch
    assert not takes(value=torch.zeros(2, 3, 8, 5, dtype=torch.bfloat16))  # a value head of its own width
    assert not takes(mask=torch.ones(8, 9, dtype=torch.bool))  # a mask of other keys
    assert not takes(mask=torch.ones(8, dtype=torch.bool))  # 1-D: SDPA refuses it
    assert not takes(mask=causal, is_causal=True)  # both: SDPA applies both
    assert not takes(mask=causal.long())  # integers: SDPA refuses them
    assert not takes(mask=additive(causal).double())
    assert not takes(mask=additive(causal).requires_grad_())  # a learned bias: its gradient is SDPA's
    many_keys = torch.zeros(2, 3, short_attention.MAX_KEYS + 1, 4, dtype=torch.bfloat16)
    assert not takes(key=many_keys, value=many_keys)  # flash is faster there
    monkeypatch.setattr(short_attention, "PROBS_BYTES", 2 * 6 * 8 * 8 * 2 - 1)  # one byte short of these probs
    assert not takes()


def test_a_second_backward_raises_instead_of_being_wrong():
    q, k, v = (torch.randn(1, 2, 6, 4, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    (grad_q,) = torch.autograd.grad(attention(q, k, v, None, True).float().pow(2).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad_q.float().sum(), (q, k, v))


def test_a_float32_mask_is_cast_as_autocast_casts_it(monkeypatch):
    """Under autocast SDPA gets the mask in bf16, where float32's lowest value is -inf: a query so masked
    attends to nothing and gets 0, in torch's kernel and through the route alike (not NaN)."""
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: True)
    q, k, v = (torch.randn(1, 2, 4, 8, requires_grad=True) for _ in range(3))
    mask = torch.zeros(4, 4)
    mask[2] = torch.finfo(torch.float32).min
    results = []
    for context in (lambda: torch.autocast("cpu", dtype=torch.bfloat16), bf16_autocast):
        with context():
            results.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    theirs, routed = results
    assert type(routed.grad_fn).__name__ == "ShortAttentionBackward"
    assert torch.equal(routed[0, :, 2], torch.zeros_like(routed[0, :, 2]))
    torch.testing.assert_close(routed, theirs, rtol=2e-2, atol=2e-2)


@pytest.fixture(scope="module")
def model_and_batch(arithmetic_tokenizer, packed_batch):
    return build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0), packed_batch, arithmetic_tokenizer


def gradients(model, batch, context=bf16_autocast):
    return logsumexp_gradients(model, batch, context)


def test_bf16_training_rows_run_through_it_with_the_gradients_of_torch_kernel(model_and_batch, monkeypatch):
    model, batch, _ = model_and_batch
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: True)
    calls = []
    real = short_attention.ShortAttention.apply
    monkeypatch.setattr(short_attention.ShortAttention, "apply", lambda *a: calls.append(a[3]) or real(*a))
    routed = gradients(model, batch)
    assert len(calls) == model.config.num_hidden_layers
    assert all(mask is not None and mask.dtype == torch.bool for mask in calls)  # the packed rows' mask
    monkeypatch.setattr(short_attention, "PROBS_BYTES", 0)
    flash = gradients(model, batch)
    assert len(calls) == model.config.num_hidden_layers  # not routed: too long for the budget
    for ours_grad, torch_grad in zip(routed, flash):
        assert (ours_grad - torch_grad).norm() <= 0.02 * torch_grad.norm() + 1e-6


def test_not_routed_without_native_bf16_or_without_a_backward(model_and_batch, monkeypatch):
    model, batch, _ = model_and_batch
    calls = []
    monkeypatch.setattr(short_attention.ShortAttention, "apply", lambda *a: calls.append(a) or 1 / 0)
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: False)
    gradients(model, batch)
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: True)
    with torch.no_grad(), bf16_autocast():
        model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    assert calls == []


@pytest.mark.parametrize("run_precision, native", [("bf16", True), ("bf16", False), ("fp32", False)])
def test_gradient_checkpointing_recomputes_through_the_same_route(model_and_batch, monkeypatch, run_precision, native):
    """sft/grpo's checkpointing recomputes each layer in backward, after bf16_autocast has exited; the
    recomputation must take the forward's kernels (checkpoint compares what they save) and give its
    gradients, in bf16 (with native bf16 matmul or not) and in fp32."""
    _, batch, tokenizer = model_and_batch
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: native)
    context = bf16_autocast if run_precision == "bf16" else contextlib.nullcontext
    plain = gradients(build_tiny_llama(tokenizer, SHAPE, seed=0).train(), batch, context)
    checkpointed = build_tiny_llama(tokenizer, SHAPE, seed=0).train()
    enable_activation_checkpointing(checkpointed)
    for ours_grad, plain_grad in zip(gradients(checkpointed, batch, context), plain):
        torch.testing.assert_close(ours_grad, plain_grad)


def test_checkpointing_recomputes_under_the_route_only_after_a_bf16_forward():
    assert isinstance(precision.recompute_contexts()[1], contextlib.nullcontext)  # fp32 (or GPU): no mode
    with bf16_autocast():
        assert isinstance(precision.recompute_contexts()[1], precision._RouteBf16)
