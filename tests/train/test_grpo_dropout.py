"""GRPO's policy runs its passes without dropout: with it on, the update's ratio to the old log-probs was not
1 before any weight moved (a GPT-2 student, dropout 0.1: 13 % of tokens outside the clip range, a k3 KL of
29 nats to a reference with the same weights)."""

from __future__ import annotations

import logging

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from warmstart.stages.grpo import quiet_policy
from warmstart.train.dropout import disable_dropout, forward_is_repeatable


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32))


def test_a_gpt2_policy_is_random_in_training_mode_until_its_dropout_is_off():
    model = gpt2()
    assert not forward_is_repeatable(model, 64)  # GPT-2's defaults: 0.1 everywhere
    turned_off = disable_dropout(model)
    assert "Dropout(p=0.1)" in turned_off and forward_is_repeatable(model, 64) and model.training


def test_a_rate_an_attention_module_keeps_as_a_float_is_turned_off_too():
    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2, vocab_size=64
    )
    config.attention_dropout = 0.3
    model = LlamaForCausalLM(config)
    assert disable_dropout(model) == ["attention_dropout=0.3"]
    assert forward_is_repeatable(model, 64) and model.config.attention_dropout == 0.3  # the saved config keeps it


def test_the_policy_says_what_it_turned_off_and_what_stays_random(caplog):
    model = gpt2()
    with caplog.at_level(logging.INFO, logger="warmstart.stages.grpo"):
        quiet_policy(model)
    assert "the policy's dropout is off (Dropout(p=0.1))" in caplog.text and "random" not in caplog.text
    noisy = gpt2()
    disable_dropout(noisy)
    forward = noisy.transformer.forward

    def jittered(*args, **kwargs):  # a router's jitter noise, say: random whatever the dropout
        out = forward(*args, **kwargs)
        out.last_hidden_state = out.last_hidden_state + 1e-3 * torch.randn_like(out.last_hidden_state)
        return out

    noisy.transformer.forward = jittered
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="warmstart.stages.grpo"):
        quiet_policy(noisy)
    assert "the policy's forward is random in training mode" in caplog.text
