"""`sft.distill = "auto"` with a student or teacher whose config soft-caps or scales its logits (Gemma 2,
Cohere, Granite): chunked KD does not reproduce those logits, so auto takes the next signal, said, instead of
announcing KD and then refusing the run."""

from __future__ import annotations

import json

import pytest

from helpers import small_recipe
from warmstart.config import with_section
from warmstart.distill.signal_choice import choose
from warmstart.errors import WarmstartError
from warmstart.lm.models import load_tokenizer
from warmstart.lm.tinymodel import TinyModelConfig, save_tiny_student

SMALL = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300)


@pytest.fixture(scope="module")
def soft_capped(tmp_path_factory):
    """A tiny local model whose config soft-caps its logits, as Gemma 2's does."""
    path = save_tiny_student(
        ["user\nWhat is 1+1?", "assistant\nAnswer: 2"] * 10, tmp_path_factory.mktemp("m"), SMALL, 0
    )
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "final_logit_softcapping": 30.0}))
    return path


def test_auto_with_a_soft_capped_student_trains_on_tokens_and_says_why(tmp_path, soft_capped):
    recipe = with_section(small_recipe(tmp_path), "sft", teacher=f"hf:{soft_capped}", distill="auto", kd_weight=0.5)
    signal = choose(recipe, load_tokenizer(soft_capped, "sft.student"), None, ["final_logit_softcapping"])
    assert signal.kind == "tokens" and "final_logit_softcapping" in signal.reason and "student" in signal.reason


def test_auto_with_a_soft_capped_local_teacher_does_not_pick_its_logits(tmp_path, soft_capped):
    recipe = with_section(small_recipe(tmp_path), "sft", teacher=f"hf:{soft_capped}", distill="auto", kd_weight=0.5)
    signal = choose(recipe, load_tokenizer(soft_capped, "sft.student"), None, [])
    assert signal.kind == "tokens" and "teacher's config transforms its logits" in signal.reason


def test_forced_logits_from_a_soft_capped_teacher_is_refused(tmp_path, soft_capped):
    recipe = with_section(small_recipe(tmp_path), "sft", teacher=f"hf:{soft_capped}", distill="logits", kd_weight=0.5)
    with pytest.raises(WarmstartError, match=r"sft.distill = logits: the teacher's config transforms its logits"):
        choose(recipe, load_tokenizer(soft_capped, "sft.student"), None, [])
