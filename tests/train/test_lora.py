"""LoRA through peft: SFT and GRPO train an adapter; the published model is the base with it merged in
(the adapter beside it), and both load to the same logits; a resumed LoRA run equals an uninterrupted one;
GRPO's KL reference is the base with the adapter off, not a second model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from helpers import curated_run, write_recipe_file
from warmstart.stages import grpo, sft
from warmstart.stages.grpo import load_learner
from warmstart.train.lora import ADAPTER_DIR, AdapterOff

LORA = ["sft.lora.r=4", "sft.lora.alpha=8", "sft.lr=1e-2"]
LORA_SETTINGS = {"r": 4, "alpha": 8.0}


def sft_summary(root) -> dict:
    return json.loads((root / "manifest.json").read_text())["stages"]["sft:student"]


def test_lora_sft_publishes_a_merged_model_and_its_adapter_with_the_same_logits(tmp_path):
    recipe = curated_run(tmp_path, "sft.steps=6", *LORA)
    out = sft.run(recipe)
    summary = sft_summary(tmp_path)
    base = tmp_path / "models" / "base"
    assert (
        0
        < summary["trainable_parameters"]
        < 0.2 * sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(base).parameters())
    )
    assert summary["final_loss"] < summary["first_loss"]
    assert (out / "model.safetensors").exists() and (out / ADAPTER_DIR / "adapter_model.safetensors").exists()
    ids = torch.tensor([[1, 5, 9, 13, 2, 7, 30, 4]])
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / ADAPTER_DIR).eval()
    untouched = AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        a, b, c = merged(ids).logits, adapted(ids).logits, untouched(ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)  # the adapter did learn something


def test_a_resumed_lora_run_ends_where_an_uninterrupted_one_does(tmp_path):
    steps = ["sft.checkpoint_every=2", "sft.keep_checkpoints=5", *LORA]
    whole = curated_run(tmp_path / "whole", "sft.steps=6", *steps)
    cut = curated_run(tmp_path / "cut", "sft.steps=6", *steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sft.run(whole)
        sft.run(cut)
        # As a kill after step 2 leaves the run: step 2's checkpoint, no later one, no model.
        for later in ("step-4", "step-6"):
            shutil.rmtree(tmp_path / "cut" / "checkpoints" / "student" / later)
        shutil.rmtree(tmp_path / "cut" / "models" / "student")
        sft.run(cut)
    # Wrapping, resuming and publishing the adapter: no deprecation notice from peft reading transformers.
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    adapters = [
        load_file(root / "models" / "student" / ADAPTER_DIR / "adapter_model.safetensors")
        for root in (tmp_path / "whole", tmp_path / "cut")
    ]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


def test_lora_grpo_keeps_no_second_model_for_its_kl_reference(tmp_path):
    recipe = curated_run(
        tmp_path,
        "env.name=even_length_env:EvenLength",  # reward variance in every group: every step updates
        "sft.steps=40",
        "sft.lr=1e-2",
        "grpo.lora.r=4",
        "grpo.kl_weight=0.1",
        "grpo.steps=2",
        "grpo.tasks_per_step=2",
        "grpo.group_size=4",
        "grpo.max_new_tokens=16",
        "grpo.checkpoint_every=1",
    )
    student = sft.run(recipe)
    learner = load_learner(recipe, student, None)
    assert isinstance(learner.reference, AdapterOff)
    assert not isinstance(learner.reference, torch.nn.Module)  # no weights of its own: the policy's base
    trained = sum(p.numel() for p in learner.model.parameters() if p.requires_grad)
    assert 0 < trained < learner.params / 5
    out = grpo.run(recipe)
    assert (out / "model.safetensors").exists() and (out / ADAPTER_DIR / "adapter_config.json").exists()
    history = json.loads((tmp_path / "manifest.json").read_text())["stages"]["grpo:student-grpo"]["history"]
    assert len(history) == 2 and all(h["zero_variance_fraction"] < 1 for h in history)  # updates ran, KL included


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "sft.lora.target_modules=['not_a_layer']",
            "sft.lora.target_modules: not_a_layer not among the model's linear layers",
        ),
        (  # merged, its delta would change the input embedding too: a model nobody trained
            "sft.lora.target_modules=['q_proj', 'lm_head']",
            "sft.lora.target_modules: lm_head is the output head, whose weight the input embedding shares",
        ),
    ],
)
def test_lora_target_modules_that_do_not_exist_are_one_error_and_nothing_is_written(tmp_path, setting, message):
    recipe = curated_run(tmp_path / "run", "sft.steps=2", "sft.lora.r=4")
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    before = sorted(
        p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*")
    )  # the CLI rewrites recipe.toml, as for any command
    result = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "sft", str(recipe_file), "--set", setting],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert message in errors[0]
    after = sorted(
        p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*") if p.name not in (".lock", "recipe.toml")
    )
    assert [p for p in after if p not in before] == []


def test_resuming_with_other_lora_settings_is_one_error_naming_the_checkpoints(tmp_path):
    from warmstart.errors import WarmstartError

    recipe = curated_run(tmp_path, "sft.steps=2", "sft.checkpoint_every=1", *LORA)
    sft.run(recipe)
    for change, message in (
        ({"steps": 4, "lora": {"r": 8, "alpha": 8.0}}, r"was trained with r 4 \(now 8\):"),
        ({"steps": 4, "lora": {**LORA_SETTINGS, "target_modules": ["v_proj"]}}, r"was trained with target_modules \["),
        ({"steps": 4, "lora": {"r": 0}}, "holds a LoRA adapter but sft.lora is off"),
    ):
        # Validated whole, so the new lora settings are LoraSettings (a dict put in by model_copy is not).
        changed = recipe.model_copy(
            update={"sft": type(recipe.sft).model_validate({**recipe.sft.model_dump(), **change})}
        )
        with pytest.raises(WarmstartError, match=message):
            sft.run(changed)


def test_a_fresh_adapter_is_the_same_in_every_run_of_a_seed(tmp_path):
    """Its random init comes from run.seed, not from whatever the process drew before (under torchrun each
    process had started from an adapter of its own)."""
    first = curated_run(tmp_path, "sft.steps=2", "sft.lora.r=4")
    sft.run(first)  # builds models/base too, which draws from the generator
    again = first.model_copy(update={"sft": first.sft.model_copy(update={"output": "again"})})
    sft.run(again)  # the base is there: nothing seeded the generator since the first run trained
    adapters = [
        load_file(tmp_path / "models" / name / ADAPTER_DIR / "adapter_model.safetensors")
        for name in ("student", "again")
    ]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])
