"""Packing relies on a model turning restarted position ids into a block-diagonal mask: Llama-like models do,
OPT, BLOOM or MPT do not (a packed example saw the ones before it in its row: its logits moved by up to 0.07),
and `warmstart sft` had trained them packed without a word. Such a model gets one example per row."""

from __future__ import annotations

import logging
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, BloomConfig, LlamaConfig, OPTConfig

from warmstart.config import SftConfig
from warmstart.stages.sft import packable
from warmstart.train.data import Example
from warmstart.train.packing import keeps_examples_apart
from warmstart.train.sft import RowStream

CONFIGS = {
    "llama": (LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4), True),
    "opt": (
        OPTConfig(num_hidden_layers=2, hidden_size=32, ffn_dim=64, num_attention_heads=4, word_embed_proj_dim=32),
        False,
    ),
    "bloom": (BloomConfig(n_layer=2, hidden_size=32, n_head=4), False),
}


def tiny(name: str):
    config, _ = CONFIGS[name]
    config.vocab_size = 96
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_whether_a_model_keeps_packed_examples_apart_is_measured(name):
    model = tiny(name).train()
    assert keeps_examples_apart(model, 96) is CONFIGS[name][1]
    assert model.training  # its mode as it was


def test_a_model_that_leaks_is_said_and_trained_one_example_a_row(caplog):
    cfg = SftConfig(seq_len=64, rows_per_micro_batch=2)
    with caplog.at_level(logging.WARNING, logger="warmstart.stages.sft"):
        assert packable(cfg, tiny("llama"), None) and not caplog.text
        assert not packable(cfg, tiny("llama"), tiny("opt"))  # a dense-KD teacher scores the same rows
    assert "OPTForCausalLM lets packed examples see each other" in caplog.text
    rng = random.Random(0)
    examples = [Example([rng.randrange(96) for _ in range(rng.randint(2, 20))], [1] * 20) for _ in range(30)]
    one_a_row = RowStream(examples, cfg, seed=0, packed=False)
    rows = one_a_row.next_rows(45)  # past an epoch's end
    assert all(len(row) == 1 for row in rows) and sorted(i for row in rows[:30] for i in row) == list(range(30))
    assert len(RowStream(examples, cfg, seed=0).rows) < 30  # packed, as before
