"""One gradient tensor for a tied embedding and head (lm/tied_embedding.py): the floats of autograd's sum of
the two, bit for bit, in fp32 and bf16, with repeated tokens, padding and a loss scaled after the head."""

from __future__ import annotations

import pytest
import torch

from helpers import TINY_SHAPE as SHAPE
from warmstart.config import SftConfig
from warmstart.distill.step import scored_hidden
from warmstart.lm.device import autocast
from warmstart.lm.linear_ce import head_ce_sum
from warmstart.lm.tied_embedding import HeadGradient, TiedEmbedding, embed, tied_embedding
from warmstart.lm.tinymodel import build_tiny_llama
from warmstart.train import sft
from warmstart.train.data import Example, collate


def batch_with_repeats_and_padding(tokenizer) -> dict:
    """Two rows: one packs two documents that repeat a few tokens many times, one is short (right padding)."""
    generator = torch.Generator().manual_seed(1)
    repeated = torch.randint(5, 9, (30,), generator=generator).tolist()  # 4 distinct tokens, each many times
    spread = torch.randint(5, len(tokenizer), (17,), generator=generator).tolist()
    examples = [Example(repeated, [1] * 30), Example(spread, [0] * 5 + [1] * 12), Example(spread[:11], [1] * 11)]
    return collate([[0, 1], [2]], examples, 48, tokenizer.pad_token_id)


def loss_and_gradients(model, batch, precision: str, tied: bool) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with autocast(precision, torch.device("cpu"), keep_casts=True) as casts:
        if tied:
            loss = sft.masked_ce_sum(model, batch, casts)
        else:  # the head and the embedding each with their own gradient, summed by autograd
            positions = batch["loss_mask"][:, 1:] > 0
            targets = batch["input_ids"][:, 1:][positions]
            loss = head_ce_sum(model.get_output_embeddings(), scored_hidden(model, batch, positions), targets, casts)
    (loss / 7).backward()
    return [loss.detach(), *(p.grad.clone() for p in model.parameters())]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_tensor_gives_the_floats_of_autograds_sum(arithmetic_tokenizer, precision, monkeypatch):
    batch = batch_with_repeats_and_padding(arithmetic_tokenizer)
    assert (batch["input_ids"] == arithmetic_tokenizer.pad_token_id).any()
    model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0).train()
    assert tied_embedding(model) is model.get_input_embeddings()
    used = []
    monkeypatch.setattr(sft, "embed", lambda *args: used.append(args) or embed(*args))
    tied = loss_and_gradients(model, batch, precision, tied=True)
    assert used  # the tied path ran
    plain = loss_and_gradients(model, batch, precision, tied=False)
    assert len(tied) == len(plain)
    for a, b in zip(tied, plain):
        assert torch.equal(a, b)


def test_without_a_head_gradient_the_embedding_backward_is_torchs(arithmetic_tokenizer):
    weight = torch.randn(len(arithmetic_tokenizer), 8, requires_grad=True)
    ids = torch.tensor([[5, 6, 5, 0, 7, 5]])
    out = TiedEmbedding.apply(ids, weight, 0, HeadGradient())
    (out * torch.arange(48.0).view(1, 6, 8)).sum().backward()
    expected = torch.randn_like(weight, requires_grad=True)
    expected.data.copy_(weight.data)
    (torch.nn.functional.embedding(ids, expected, 0) * torch.arange(48.0).view(1, 6, 8)).sum().backward()
    assert torch.equal(weight.grad, expected.grad)


def test_only_a_plain_trained_tied_pair_takes_this_path(arithmetic_tokenizer):
    model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0)
    assert tied_embedding(model) is not None
    model.get_input_embeddings().weight.requires_grad_(False)  # frozen (a LoRA run)
    assert tied_embedding(model) is None
    model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0)
    model.get_output_embeddings().weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    assert tied_embedding(model) is None  # untied
    model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0)
    model.get_input_embeddings().max_norm = 1.0
    assert tied_embedding(model) is None


def test_a_step_over_several_micro_batches_trains_the_same_weights(arithmetic_tokenizer, monkeypatch):
    """grad_accum = 2: each micro-batch's one tensor accumulates into the weight's gradient as autograd's sum did."""
    generator = torch.Generator().manual_seed(2)
    examples = [Example(torch.randint(5, 9, (20,), generator=generator).tolist(), [1] * 20) for _ in range(8)]
    cfg = SftConfig(steps=2, seq_len=24, rows_per_micro_batch=2, grad_accum=2, warmup_steps=0, lr=1e-2)
    weights = {}
    for tied in (True, False):
        if not tied:
            monkeypatch.setattr(sft, "tied_embedding", lambda model: None)
        model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0).train()
        optimizer, _ = sft.make_optimizer(model, cfg)
        stream = sft.RowStream(examples, cfg, seed=0)
        for _ in range(2):
            sft.train_step(model, optimizer, stream, cfg, arithmetic_tokenizer.pad_token_id)
        weights[tied] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(weights[True], weights[False]):
        assert torch.equal(a, b)


def test_a_model_off_the_cpu_keeps_autograds_sum(arithmetic_tokenizer):
    model = build_tiny_llama(arithmetic_tokenizer, SHAPE, seed=0).to("meta")
    assert tied_embedding(model) is None
