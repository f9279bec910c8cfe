"""Loading local models: a clear error where a .gguf file cannot be read for want of the `gguf` extra."""

from __future__ import annotations

import importlib.util

import pytest

from warmstart.errors import WarmstartError
from warmstart.lm import models


def test_a_gguf_model_without_the_gguf_extra_is_one_clear_error(tmp_path, monkeypatch):
    gguf = tmp_path / "m.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a)
    )
    with pytest.raises(
        WarmstartError, match=r"sft.student: reading m.Q4_1.gguf needs accelerate: pip install 'warmstart\[gguf\]'"
    ):
        models.load_model_and_tokenizer(gguf, "sft.student")


def tiny(tmp_path, name: str):
    from warmstart.lm.tinymodel import TinyModelConfig, save_tiny_student

    config = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300)
    return save_tiny_student(["What is 1+2? Answer: 3"], tmp_path / name, config, seed=0)


def test_a_model_directory_that_cannot_be_loaded_is_one_error_naming_the_key(tmp_path):
    cut = tiny(tmp_path, "cut")
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:1000])  # a copy cut short
    with pytest.raises(WarmstartError, match=rf"generate.teacher: cannot load the model at {cut} \(\w+"):
        models.load_model_and_tokenizer(cut, "generate.teacher")
    no_tokenizer = tiny(tmp_path, "no-tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(WarmstartError, match=r"grpo.init: cannot load the model at .*no-tokenizer"):
        models.load_model_and_tokenizer(no_tokenizer, "grpo.init")


def test_a_local_teacher_without_a_chat_template_is_refused_as_it_loads(tmp_path):
    from warmstart.envs.arithmetic import Arithmetic
    from warmstart.policies.hf import HFPolicy

    bare = tiny(tmp_path, "bare")
    for template in bare.glob("chat_template*"):
        template.unlink()
    config = bare / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"chat_template"', '"unused_template"'))
    with pytest.raises(WarmstartError, match="generate.teacher: the tokenizer has no chat template"):
        HFPolicy(bare, "generate.teacher", Arithmetic(), max_turns=1)
