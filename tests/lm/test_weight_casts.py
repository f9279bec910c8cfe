"""Kept bf16 copies of the weights (lm/weight_casts.py): the same training arithmetic as fresh casts, one
cast per parameter per autocast context, a new cast in every new context, and a loud error (never a
stale weight) where a graph outlives its context's copies."""

from __future__ import annotations

import functools
import random

import pytest
import torch

from helpers import TINY_SHAPE as SHAPE
from helpers import logsumexp_gradients
from warmstart.config import SftConfig
from warmstart.lm.precision import bf16_autocast, enable_activation_checkpointing
from warmstart.lm.tinymodel import build_tiny_llama
from warmstart.lm.weight_casts import BUFFER, WeightCasts
from warmstart.train import sft
from warmstart.train.data import Example


@pytest.mark.parametrize("checkpointing", [False, True])
def test_kept_copies_give_the_gradients_of_fresh_casts(arithmetic_tokenizer, packed_batch, checkpointing):
    results = {}
    for keep in (False, True):
        model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0).train()
        if checkpointing:
            enable_activation_checkpointing(model)
        context = functools.partial(bf16_autocast, keep)
        # The second pass reuses the buffers.
        results[keep] = [logsumexp_gradients(model, packed_batch, context) for _ in range(2)]
        kept = [p for p in model.parameters() if hasattr(p, BUFFER)]
        assert len(kept) == (SHAPE.num_layers * 7 + 1 if keep else 0)  # q k v o gate up down, and the head
    for fresh, kept in zip(results[False], results[True]):
        for fresh_grad, kept_grad in zip(fresh, kept):
            torch.testing.assert_close(kept_grad, fresh_grad, rtol=0, atol=0)


def test_one_cast_per_context_and_a_new_one_in_the_next():
    weight = torch.nn.Parameter(torch.randn(4, 3))
    first = WeightCasts()
    copy = first.cast(weight, torch.bfloat16)
    version = copy._version
    assert first.cast(weight, torch.bfloat16) is copy and copy._version == version  # not written again
    weight.data.mul_(2)  # a write the version counter does not see
    assert first.cast(weight, torch.bfloat16) is copy  # within the context: as cast
    assert torch.equal(WeightCasts().cast(weight, torch.bfloat16), weight.detach().bfloat16())  # next: recast
    assert WeightCasts().cast(weight, torch.bfloat16) is copy  # into the same buffer


def test_a_counted_write_within_the_context_is_cast_again():
    weight = torch.nn.Parameter(torch.randn(4, 3))
    casts = WeightCasts()
    casts.cast(weight, torch.bfloat16)
    with torch.no_grad():
        weight.add_(1)
    assert torch.equal(casts.cast(weight, torch.bfloat16), weight.detach().bfloat16())


def test_only_parameters_are_kept_and_a_changed_shape_gets_a_new_buffer():
    casts = WeightCasts()
    computed = torch.randn(4, 3, requires_grad=True) * 2  # a weight computed per call
    assert torch.equal(casts.cast(computed, torch.bfloat16), computed.detach().bfloat16())
    assert not hasattr(computed, BUFFER)
    weight = torch.nn.Parameter(torch.randn(4, 3))
    casts.cast(weight, torch.bfloat16)
    weight.data = torch.randn(5, 3)
    assert torch.equal(WeightCasts().cast(weight, torch.bfloat16), weight.detach().bfloat16())
    assert getattr(weight, BUFFER).shape == (5, 3)


def test_a_graph_that_outlives_its_copies_raises_instead_of_using_the_new_weights():
    layer = torch.nn.Linear(3, 4, bias=False)
    x = torch.randn(2, 3)
    with bf16_autocast(keep_casts=True):
        old = layer(x)
    with torch.no_grad():
        layer.weight.add_(1)
    with bf16_autocast(keep_casts=True):
        layer(x)  # writes the new weights into the buffer the old graph saved
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        old.float().sum().backward()


def test_sft_keeps_copies_except_for_a_sharded_model(arithmetic_tokenizer, monkeypatch):
    rng = random.Random(0)
    examples = [Example([rng.randrange(5, len(arithmetic_tokenizer)) for _ in range(20)], [1] * 20) for _ in range(4)]
    cfg = SftConfig(steps=2, seq_len=24, rows_per_micro_batch=2, precision="bf16", warmup_steps=0)
    model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0).train()
    optimizer, _ = sft.make_optimizer(model, cfg)
    sft.train_step(model, optimizer, sft.RowStream(examples, cfg, seed=0), cfg, arithmetic_tokenizer.pad_token_id)
    assert sum(hasattr(p, BUFFER) for p in model.parameters()) == SHAPE.num_layers * 7 + 1  # + the head: linear_ce
    monkeypatch.setattr(sft, "is_sharded", lambda model: True)
    model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0).train()
    with sft.autocast(cfg, model, torch.device("cpu")):
        model(input_ids=torch.tensor([[5, 6, 7]]))
    assert not any(hasattr(p, BUFFER) for p in model.parameters())


def test_a_compiled_decoder_takes_the_new_weights_every_step(arithmetic_tokenizer):
    """Under sft.compile the decoder's graph casts its weights itself (the route stands aside inside it:
    lm/precision.py) and the output head's copy is kept outside it: with a learning rate that moves the
    weights far each step, the losses are those of fresh casts exactly (a copy traced as a constant, or
    not written again, would train on stale weights)."""
    from warmstart.lm.compiled import compile_decoder, is_compiled

    rng = random.Random(0)
    examples = [Example([rng.randrange(5, len(arithmetic_tokenizer)) for _ in range(20)], [1] * 20) for _ in range(8)]
    cfg = SftConfig(steps=3, seq_len=24, rows_per_micro_batch=2, precision="bf16", warmup_steps=0, lr=1e-2)
    losses = {}
    for keep in (False, True):
        model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0).train()
        compile_decoder(model, True, "sft.compile")
        optimizer, _ = sft.make_optimizer(model, cfg)
        stream = sft.RowStream(examples, cfg, seed=0)
        context = functools.partial(bf16_autocast, keep)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sft, "autocast", lambda cfg, model, device, context=context: context())
            losses[keep] = [
                sft.train_step(model, optimizer, stream, cfg, arithmetic_tokenizer.pad_token_id)[0] for _ in range(3)
            ]
        assert is_compiled(model)
    assert losses[True] == losses[False]
    assert losses[True][0] != losses[True][2]  # the weights did move


def test_the_sft_heads_kept_copy_gives_the_loss_and_gradients_of_a_fresh_cast(arithmetic_tokenizer, packed_batch):
    """train/sft.masked_ce_sum hands the context's casts to linear_ce, whose head cast is outside F.linear."""
    results = {}
    for keep in (False, True):
        model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0).train()
        runs = []
        for _ in range(2):  # the second step writes the updated weight into the same buffer
            with bf16_autocast(keep) as casts:
                assert (casts is not None) == keep
                loss = sft.masked_ce_sum(model, packed_batch, casts)
            loss.backward()
            runs.append([loss.detach(), *(p.grad.clone() for p in model.parameters())])
            with torch.no_grad():
                for p in model.parameters():
                    p.sub_(0.1 * p.grad)
            model.zero_grad(set_to_none=True)
        head = model.get_output_embeddings().weight
        assert hasattr(head, BUFFER) == keep
        results[keep] = runs
    for fresh, kept in zip(results[False], results[True]):
        for a, b in zip(fresh, kept):
            assert torch.equal(a, b)
