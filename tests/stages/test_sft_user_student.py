"""A user's own student in sft: its files are part of what the stage was made from (a model replaced at the
same path, or a .gguf overwritten, is not taken as already trained), and a refused resume names what changed."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import curated_run
from warmstart.errors import WarmstartError
from warmstart.lm.tinymodel import TinyModelConfig, save_tiny_student
from warmstart.runs.checkpoint import what_changed
from warmstart.stages import sft

SMALL = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300)
TEXTS = ["user\nWhat is 12+3?", "assistant\n2+3=5 carry 0, so far 5\nAnswer: 15"] * 20


def test_a_student_replaced_at_its_path_is_not_taken_as_already_trained(tmp_path):
    student = save_tiny_student(TEXTS, tmp_path / "student", SMALL, seed=0)
    recipe = curated_run(tmp_path / "run", f"sft.student='{student}'", "sft.steps=2", train=40)
    sft.run(recipe)
    shutil.rmtree(student)
    save_tiny_student(TEXTS, student, SMALL, seed=1)  # another model, the same path
    with pytest.raises(WarmstartError, match=r"checkpoints of another config or other input data \(input .*changed"):
        sft.run(recipe)


def test_a_refused_resume_names_the_setting_that_changed(tmp_path):
    recipe = curated_run(tmp_path, "sft.steps=2", train=40)
    sft.run(recipe)
    longer = recipe.model_copy(update={"sft": recipe.sft.model_copy(update={"steps": 4})})
    with pytest.raises(WarmstartError, match=r"other input data \(sft\.steps 2 \(now 4\)\); remove that directory"):
        sft.run(longer)


def test_what_changed_lists_settings_and_inputs_in_words():
    then = {"config": {"sft": {"steps": 2, "lr": 0.1}, "seed": 0}, "inputs": {"/d.jsonl": "aa", "/m/w": "bb"}}
    now = {"config": {"sft": {"steps": 4, "lr": 0.1}, "seed": 0}, "inputs": {"/d.jsonl": "ab", "/m/x": "cc"}}
    assert what_changed(then, now) == ("sft.steps 2 (now 4), input /d.jsonl changed, input /m/w gone, input /m/x added")
    assert what_changed(None, now) == ""


def test_a_gguf_overwritten_since_its_conversion_is_converted_again(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF one")
    converted_from = []

    def fake_conversion(path, out, key="sft.student"):  # the real one needs the gguf extra and a real file
        out.mkdir(parents=True)
        (out / "weights").write_bytes(path.read_bytes())
        converted_from.append(path.read_bytes())
        return out

    monkeypatch.setattr(sft, "gguf_to_pretrained", fake_conversion)
    recipe = curated_run(tmp_path / "run", f"sft.student='{gguf}'", train=10)
    base = sft.prepare_user_base(recipe)
    assert sft.prepare_user_base(recipe) == base and converted_from == [b"GGUF one"]  # once per content
    gguf.write_bytes(b"GGUF two")
    assert (sft.prepare_user_base(recipe) / "weights").read_bytes() == b"GGUF two"
    assert json.loads((base / sft.BASE_INFO).read_text())["gguf"] == str(gguf)
