"""FSDP's units: a decoder's layer list is found; a model laid out otherwise is one error naming its class."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from helpers import tiny_model
from warmstart.errors import WarmstartError
from warmstart.train.sharding import check_wrappable, decoder_layers


def test_a_llama_decoders_layers_are_the_units():
    model, _ = tiny_model()
    assert decoder_layers(model) is model.model.layers


def test_a_model_without_a_layer_list_is_one_error_naming_it():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    with pytest.raises(WarmstartError, match="cannot wrap GPT2LMHeadModel"):
        decoder_layers(gpt2)


def test_the_check_before_the_run_needs_only_the_config():
    with pytest.raises(WarmstartError, match="cannot wrap GPT2LMHeadModel"):
        check_wrappable(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
