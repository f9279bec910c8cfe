"""`warmstart grpo`: a cold start gets only flat groups and never updates; a killed run resumes as if uninterrupted."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from helpers import curated_run
from warmstart.stages import grpo, sft


def test_a_cold_start_gets_only_flat_groups_and_no_update(tmp_path):
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
    out = grpo.run(recipe)
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
