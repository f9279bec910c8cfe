"""SFT trains a real tiny model, checkpoints atomically, and a killed run resumes exactly."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import curated_run, write_recipe_file
from warmstart.config import PolicySpec
from warmstart.errors import WarmstartError
from warmstart.runs.checkpoint import MARKER, complete_checkpoints
from warmstart.stages import grpo, sft

STEPS = ["sft.steps=150", "sft.checkpoint_every=5", "sft.keep_checkpoints=3"]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def test_training_lowers_the_loss_and_writes_a_loadable_student(tmp_path):
    recipe = curated_run(tmp_path, "sft.steps=40", "sft.lr=1e-2")
    out = sft.run(recipe)
    stats = json.loads((tmp_path / "manifest.json").read_text())["stages"]["sft:student"]
    assert stats["first_loss"] > 0.9 * math.log(300)  # an untrained model is about uniform over the vocabulary
    assert stats["final_loss"] < 0.7 * stats["first_loss"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(out) is not None
    assert AutoTokenizer.from_pretrained(out).chat_template
    # A rerun of the finished stage does no work: the student is untouched.
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    sft.run(recipe)
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_a_killed_run_resumes_as_if_uninterrupted(tmp_path):
    whole = curated_run(tmp_path / "whole", *STEPS)
    sft.run(whole)

    cut = curated_run(tmp_path / "cut", *STEPS)
    recipe_file = write_recipe_file(tmp_path / "cut.toml", cut)
    command = [sys.executable, "-m", "warmstart.cli", "sft", str(recipe_file)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "cut" / "checkpoints" / "student"
    deadline = time.time() + 120
    while not (checkpoints / "step-10" / MARKER).exists():
        assert process.poll() is None, "the training process ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "cut" / "models" / "student").exists(), "killed too late: training had finished"
    killed_at = int(complete_checkpoints(checkpoints)[-1].name[5:])
    assert killed_at < 150

    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr

    a, b = weights(tmp_path / "whole" / "models" / "student"), weights(tmp_path / "cut" / "models" / "student")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    state_a = torch.load(
        complete_checkpoints(tmp_path / "whole" / "checkpoints" / "student")[-1] / "trainer_state.pt",
        weights_only=False,
    )
    state_b = torch.load(complete_checkpoints(checkpoints)[-1] / "trainer_state.pt", weights_only=False)
    # Same data order, same place in it, same tokens trained (wall seconds naturally differ).
    assert (
        state_a["position"]["epoch"] == state_b["position"]["epoch"]
        and state_a["position"]["row"] == state_b["position"]["row"]
    )
    assert state_a["position"]["totals"]["tokens"] == state_b["position"]["totals"]["tokens"]
    assert state_a["step"] == state_b["step"] == 150


def test_a_checkpoint_without_its_marker_is_ignored(tmp_path):
    recipe = curated_run(tmp_path, "sft.steps=10", "sft.checkpoint_every=5")
    sft.run(recipe)
    root = tmp_path / "checkpoints" / "student"
    assert [p.name for p in complete_checkpoints(root)] == ["step-5", "step-10"]
    (root / "step-10" / MARKER).unlink()
    (root / "step-15").mkdir()  # a half-written directory, as a kill would leave it
    assert [p.name for p in complete_checkpoints(root)] == ["step-5"]


def test_gradient_accumulation_gives_the_update_of_one_big_batch(tmp_path):
    """Loss is summed over the whole step and divided by its target tokens, so 2x1 rows == 1x2 rows."""
    common = ["sft.steps=3", "sft.warmup_steps=0"]
    one = curated_run(tmp_path / "one", *common, "sft.rows_per_micro_batch=2", "sft.grad_accum=1")
    two = curated_run(tmp_path / "two", *common, "sft.rows_per_micro_batch=1", "sft.grad_accum=2")
    a, b = weights(sft.run(one)), weights(sft.run(two))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=2e-5)


def test_a_diverged_loss_stops_sft_before_it_is_saved_or_published(tmp_path):
    # At lr 1e39 step 1's update (its gradient finite) overflows the weights to infinity: step 2's loss is NaN.
    recipe = curated_run(tmp_path / "run", "sft.lr=1e39", "sft.steps=6", "sft.checkpoint_every=4", train=40)
    with pytest.raises(WarmstartError, match=r"sft: the loss is (nan|inf) at step \d: training diverged"):
        sft.run(recipe)
    assert not (tmp_path / "run" / "models" / "student").exists()
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "NaN" not in metrics and "Infinity" not in metrics  # every line is still valid JSON
    for line in metrics.splitlines():
        json.loads(line)


def test_weights_a_step_made_nan_under_a_finite_loss_are_neither_checkpointed_nor_published(tmp_path):
    """A step's loss is computed before its update: at lr 1e30 step 2's loss is finite, its gradient
    overflows and its update would write NaN weights, which the last step's checkpoint would publish. The
    check of step 1's update before its checkpoint already computes that gradient: its norm stops the run
    there, and step-1, from which a rerun would only reach the same NaN, is not saved."""
    recipe = curated_run(tmp_path / "run", "sft.lr=1e30", "sft.steps=2", "sft.checkpoint_every=1", train=40)
    with pytest.raises(
        WarmstartError, match=r"sft: the gradient norm is (nan|inf) after the update of step 1: training diverged"
    ):
        sft.run(recipe)
    assert not (tmp_path / "run" / "models" / "student").exists()
    assert complete_checkpoints(tmp_path / "run" / "checkpoints" / "student") == []


def test_sft_output_naming_a_model_another_stage_wrote_is_refused_before_it_is_replaced(tmp_path):
    grpo_keys = ["grpo.steps=1", "grpo.tasks_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=8"]
    recipe = curated_run(tmp_path, "sft.steps=2", *grpo_keys, "grpo.drop_zero_variance=false", train=40)
    sft.run(recipe)
    grpo.run(recipe)
    rl_model = tmp_path / "models" / "student-grpo"
    before = weights(rl_model)
    shutil.rmtree(tmp_path / "checkpoints" / "student-grpo")  # what the checkpoints' own refusal advises
    clash = recipe.model_copy(update={"sft": recipe.sft.model_copy(update={"output": "student-grpo"})})
    with pytest.raises(WarmstartError, match=r"models/student-grpo is the model stage grpo:student-grpo wrote"):
        sft.run(clash)
    for name, tensor in weights(rl_model).items():
        assert torch.equal(tensor, before[name])


def test_sft_output_naming_its_own_dense_kd_teacher_is_refused(tmp_path):
    recipe = curated_run(tmp_path, "sft.steps=2", train=40)
    student = sft.run(recipe)
    before = weights(student)
    update = {"teacher": PolicySpec.parse("run:student"), "distill": "logits"}
    self_taught = recipe.model_copy(update={"sft": recipe.sft.model_copy(update=update)})
    shutil.rmtree(tmp_path / "checkpoints" / "student")  # else its checkpoints' fingerprint refuses it
    with pytest.raises(WarmstartError, match=r"models/student is sft.teacher, a model this run reads"):
        sft.run(self_taught)
    for name, tensor in weights(student).items():
        assert torch.equal(tensor, before[name])
