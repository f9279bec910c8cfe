"""The SFT step's speed knobs compute what they say: precision, row width, logits only where scored."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from warmstart.config import SftConfig, TinyModelConfig
from warmstart.lm.tinymodel import build_tiny_llama, train_tokenizer
from warmstart.train import sft
from warmstart.train.clipping import clipped_step
from warmstart.train.data import Example, collate, row_width
from warmstart.train.sft import RowStream, make_optimizer, masked_ce_sum, train_step


@pytest.fixture(scope="module")
def setup():
    tokenizer = train_tokenizer(["user\nWhat is 12+3?", "assistant\n2+3=5 carry 0, so far 5\nAnswer: 15"] * 20, 300)
    model = build_tiny_llama(
        tokenizer, TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2), seed=0
    )
    rng = random.Random(0)
    examples = []
    for n in (9, 23, 14, 30, 7, 18):
        ids = [rng.randrange(5, len(tokenizer)) for _ in range(n)]
        examples.append(Example(ids, [0] * (n // 2) + [1] * (n - n // 2)))
    return model, tokenizer, examples


def test_scored_positions_loss_equals_the_full_logits_loss(setup):
    model, tokenizer, examples = setup
    batch = collate([[0, 1], [2, 3]], examples, 64, tokenizer.pad_token_id)
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    full = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["input_ids"][:, 1:].flatten(), reduction="none")
    expected = (full * batch["loss_mask"][:, 1:].flatten()).sum()
    torch.testing.assert_close(masked_ce_sum(model, batch), expected, rtol=1e-5, atol=1e-4)


def test_collating_to_the_fullest_row_drops_only_padding(setup):
    model, tokenizer, examples = setup
    rows = [[0, 1], [2]]
    assert row_width(rows, examples) == 32
    wide, narrow = (
        collate(rows, examples, 64, tokenizer.pad_token_id),
        collate(rows, examples, 32, tokenizer.pad_token_id),
    )
    for key in ("input_ids", "position_ids", "loss_mask"):
        assert torch.equal(wide[key][:, :32], narrow[key])
    assert wide["loss_mask"][:, 32:].sum() == 0
    torch.testing.assert_close(masked_ce_sum(model, wide), masked_ce_sum(model, narrow), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_the_matmul_dtype_and_keeps_fp32_weights(setup, precision, dtype):
    model, tokenizer, examples = setup
    model = build_tiny_llama(
        tokenizer, TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2), seed=0
    )
    cfg = SftConfig(seq_len=64, rows_per_micro_batch=2, precision=precision, kd_weight=0.0)
    seen = set()
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss, tokens = train_step(model, optimizer, RowStream(examples, cfg, seed=0), cfg, tokenizer.pad_token_id)
    hook.remove()
    assert seen == {dtype}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.isfinite(torch.tensor(loss)) and tokens > 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_clipped_step_folds_the_clip_into_adamw_under_bf16_only(setup, monkeypatch, precision):
    """bf16: the clip factor goes into the fused AdamW's step (train/clipping.py), the same step to
    rounding as clip then step; fp32 clips first, as torch does."""
    _, tokenizer, examples = setup
    cfg = SftConfig(seq_len=64, rows_per_micro_batch=2, precision=precision, kd_weight=0.0, grad_clip=1e-3)
    folds, params = [], []
    for fold in (None, False):  # as train_step asks, then forced to clip first
        model = build_tiny_llama(
            tokenizer, TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2), seed=0
        )
        optimizer, _ = make_optimizer(model, cfg)

        def spy(optimizer, parameters, max_norm, fold=False, forced=fold):
            folds.append(fold)
            norm = clipped_step(optimizer, parameters, max_norm, fold=fold if forced is None else forced)
            assert float(norm) > max_norm  # clipped: the case the fold changes
            return norm

        monkeypatch.setattr(sft, "clipped_step", spy)
        for _ in range(2):
            train_step(model, optimizer, RowStream(examples, cfg, seed=0), cfg, tokenizer.pad_token_id)
        params.append([p.detach().clone() for p in model.parameters()])
    assert folds == [precision == "bf16"] * 4
    for a, b in zip(*params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
