"""`warmstart grpo`: a cold start gets only flat groups and never updates (and says so); a killed run resumes
as if uninterrupted; an output that would replace a model the run reads or another stage wrote is refused;
weights an update made NaN are never checkpointed (the clip's gradient norm stops the step that makes them)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from helpers import curated_run
from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions
from warmstart.envs.base import final_assistant_text
from warmstart.errors import WarmstartError
from warmstart.stages import grpo, sft
from warmstart.types import Verdict


def test_a_cold_start_gets_only_flat_groups_and_no_update(tmp_path, caplog):
    # An untrained model never answers correctly: every group is all-zero reward, so dynamic sampling
    # drops them all and the weights do not move. This is the waste a warm start avoids.
    recipe = curated_run(
        tmp_path,
        "sft.steps=1",
        "grpo.init=base",
        "grpo.steps=2",
        "grpo.tasks_per_step=2",
        "grpo.group_size=2",
        "grpo.max_new_tokens=12",
        "grpo.max_refills=1",
        "grpo.checkpoint_every=1",
    )
    sft.run(recipe)  # builds models/base
    with caplog.at_level(logging.WARNING, logger="warmstart.stages.grpo"):
        out = grpo.run(recipe)
    assert "every group of all 2 steps was flat" in caplog.text  # not a silent copy of grpo.init
    history = json.loads((tmp_path / "manifest.json").read_text())["stages"]["grpo:student-grpo"]["history"]
    assert [h["zero_variance_fraction"] for h in history] == [1.0, 1.0]
    assert [h["groups_used"] for h in history] == [0, 0]
    before, after = load_file(tmp_path / "models" / "base" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_killed_rl_run_resumes_as_if_uninterrupted(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from helpers import write_recipe_file
    from warmstart.runs.checkpoint import MARKER

    child = Path(__file__).with_name("grpo_child.py")
    settings = [
        "sft.steps=1",
        "grpo.init=base",
        "grpo.steps=8",
        "grpo.tasks_per_step=2",
        "grpo.group_size=4",
        "grpo.max_new_tokens=10",
        "grpo.checkpoint_every=2",
        "grpo.keep_checkpoints=5",
        "grpo.lr=1e-2",
    ]
    files = {}
    for name in ("whole", "cut"):
        recipe = curated_run(tmp_path / name, *settings)
        sft.run(recipe)
        files[name] = write_recipe_file(tmp_path / f"{name}.toml", recipe)
    subprocess.run([sys.executable, str(child), str(files["whole"])], check=True, capture_output=True)

    command = [sys.executable, str(child), str(files["cut"])]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "cut" / "checkpoints" / "student-grpo" / "step-4" / MARKER
    deadline = time.time() + 120
    while not marker.exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "cut" / "models" / "student-grpo").exists(), "killed too late"
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr

    a = load_file(tmp_path / "whole" / "models" / "student-grpo" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "models" / "student-grpo" / "model.safetensors")
    base = load_file(tmp_path / "whole" / "models" / "base" / "model.safetensors")
    assert any(not torch.equal(a[k], base[k]) for k in a), "RL never updated the policy: the test would prove nothing"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    history = [
        json.loads(p.read_text())["stages"]["grpo:student-grpo"]["history"]
        for p in (tmp_path / "whole" / "manifest.json", tmp_path / "cut" / "manifest.json")
    ]
    drop_time = [[{k: v for k, v in h.items() if not k.endswith("seconds")} for h in run] for run in history]
    assert drop_time[0] == drop_time[1]  # same rewards, losses and compute step by step


SMALL_RL = [
    "sft.steps=1",
    "grpo.steps=1",
    "grpo.tasks_per_step=2",
    "grpo.group_size=2",
    "grpo.max_new_tokens=12",
    "grpo.max_refills=1",
]


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        (["grpo.output=student"], "models/student is grpo.init"),  # RL from the student, over the student
        (["grpo.init=base", "grpo.output=student"], "the model stage sft:student wrote"),
    ],
)
def test_an_output_naming_the_start_or_another_stages_model_is_refused_before_anything_is_written(
    tmp_path, settings, says
):
    # checkpoints/student are SFT's: a resume read them (a KeyError), or, had they been removed, the
    # published RL model replaced the model it started from.
    recipe = curated_run(tmp_path, *SMALL_RL, *settings)
    sft.run(recipe)
    student = (tmp_path / "models" / "student" / "model.safetensors").read_bytes()
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints" / "student").iterdir())
    with pytest.raises(WarmstartError, match=says):
        grpo.run(recipe)
    assert (tmp_path / "models" / "student" / "model.safetensors").read_bytes() == student
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "student").iterdir()) == checkpoints
    assert list(json.loads((tmp_path / "manifest.json").read_text())["stages"]) == [
        "curate:train",
        "generate:teacher",
        "sft:student",
    ]


class HugeReward(Arithmetic):
    """A reward of 1e38 for an even-length reply, else 0: unscaled advantages that large overflow the
    gradient (an infinite norm; the clip's factor 0; inf x 0 = NaN) under a finite loss."""

    def verify(self, task, trajectory):
        passed = len(final_assistant_text(trajectory) or "") % 2 == 0
        return Verdict(reward=1e38 if passed else 0.0, passed=passed)


def test_weights_an_update_made_nan_are_never_checkpointed_nor_published(tmp_path):
    recipe = curated_run(
        tmp_path, *SMALL_RL, "grpo.scale_by_std=false", "grpo.updates_per_batch=1", "grpo.checkpoint_every=1"
    )
    sft.run(recipe)
    with pytest.raises(WarmstartError, match=r"grpo: the gradient norm is (nan|inf) at step 1: training diverged"):
        grpo.run(recipe, env=HugeReward(ArithmeticOptions()))
    assert not list((tmp_path / "checkpoints" / "student-grpo").glob("step-*"))
    assert not (tmp_path / "models" / "student-grpo").exists()


def test_prompts_with_a_token_the_policy_has_no_embedding_for_are_refused_before_the_first_step(tmp_path):
    """Tokens added to the starting model's tokenizer without resize_token_embeddings: one error line before
    anything runs (sft has refused such data since review 87; grpo had met an IndexError mid-rollout)."""
    import shutil

    from transformers import AutoConfig, AutoTokenizer

    recipe = curated_run(tmp_path / "run", "sft.steps=1", "grpo.steps=1", train=10)
    sft.run(recipe)
    grown = tmp_path / "grown"
    shutil.copytree(tmp_path / "run" / "models" / "student", grown)
    tokenizer = AutoTokenizer.from_pretrained(grown)
    rows = AutoConfig.from_pretrained(grown).vocab_size
    tokenizer.add_tokens([f"<unused{i}>" for i in range(rows)] + ["What"])  # "What" leads every prompt
    tokenizer.save_pretrained(grown)
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(WarmstartError, match=r"grpo.init: the data tokenizes to 'What' .* token embeddings"):
        grpo.run(curated_run(tmp_path / "run", "sft.steps=1", "grpo.steps=1", f"grpo.init='{grown}'", train=10))
    assert not (tmp_path / "run" / "models" / "student-grpo").exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_a_lora_updates_compute_counts_gradients_of_the_adapter_only():
    """An update costs 4 x all parameters (forward, input gradients) + 2 x the trainable ones per token, as
    sft counts it: a LoRA run had been recorded as 6 x base + adapter, more than a full-weight update."""
    from types import SimpleNamespace

    from warmstart.config import GrpoConfig

    cfg = GrpoConfig(updates_per_batch=1)
    full = SimpleNamespace(params=1000, trainable_params=1000, teacher=None, reference=None)
    adapter = SimpleNamespace(params=1010, trainable_params=10, teacher=None, reference=None)
    assert grpo.flops_estimate(full, cfg, 5, 3) == 1000 * 2 * 5 + 6 * 1000 * 3  # as before for full weights
    assert grpo.flops_estimate(adapter, cfg, 5, 3) == 1010 * 2 * 5 + (4 * 1010 + 2 * 10) * 3
    assert grpo.flops_estimate(adapter, cfg, 5, 3) < grpo.flops_estimate(full, cfg, 5, 3) + 10 * 2 * 5
