"""A training run stopped part-way by an exception (Ctrl-C at the terminal, a divergence, a rollout server
gone) records what it spent: the stage's entry says "failed", with the error and the run's seconds and
FLOPs, which costs.json counts and the report shows with the run's curve said to be that run's. It had
recorded nothing: its seconds were in no total, and its curve was drawn as the stage's without a word."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_report_killed_and_copied import manifest, page_of, recipe, sft_steps, trained_run

from helpers import curated_run, write_recipe_file
from warmstart.stages import grpo, sft

CTRL_C = "stopped by Ctrl-C (KeyboardInterrupt)"
# Code run before `warmstart sft` in the interrupted process: a Ctrl-C (SIGINT) once step 3 is logged.
INTERRUPTED_AT_STEP_3 = (
    "import os, signal\n"
    "from warmstart.runs import tracking\n"
    "log = tracking.Tracker.log\n"
    "def interrupted(self, step, scalars):\n"
    "    log(self, step, scalars)\n"
    "    if step == 3:\n"
    "        os.kill(os.getpid(), signal.SIGINT)\n"
    "tracking.Tracker.log = interrupted\n"
    "from warmstart.cli import main\n"
    "main()\n"
)


def interrupted_retrain(root: Path) -> subprocess.CompletedProcess:
    """`warmstart sft` again from scratch (4 steps), Ctrl-C'd at step 3, as a user at the terminal would."""
    shutil.rmtree(root / "checkpoints" / "student", ignore_errors=True)
    path = write_recipe_file(root.parent / "retrain.toml", recipe(root, "sft.steps=4"))
    command = [sys.executable, "-c", INTERRUPTED_AT_STEP_3, "sft", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def costs(root: Path) -> dict:
    return json.loads((root / "costs.json").read_text())


def test_an_sft_run_stopped_by_ctrl_c_records_what_it_spent_and_the_page_says_whose_curve_it_is(tmp_path):
    root = trained_run(tmp_path / "run")
    stopped = interrupted_retrain(root)
    assert stopped.returncode not in (0, -9), stopped.stderr[-2000:]
    assert sft_steps(root) == [1, 2, 1, 2, 3]
    entry = manifest(root)["stages"]["sft:student"]
    assert (entry["status"], entry["error"]) == ("failed", CTRL_C)
    assert entry["train_seconds"] > 0 and entry["flops_estimate"] > 0 and entry["final_loss"] is not None
    assert "running" not in manifest(root)
    assert entry["seconds"] > 0 and costs(root)["total"]["seconds_failed"] == pytest.approx(entry["seconds"], abs=0.01)
    page = page_of(root)
    assert "The last run of sft:student failed: its curve is of that run." in page
    assert CTRL_C in page  # in the table of runs that failed, beside what it spent
    sft.run(recipe(root, "sft.steps=4"))  # run again to its end: the spent seconds stay in the totals
    entry = manifest(root)["stages"]["sft:student"]
    assert entry.get("status", "done") == "done" and entry["seconds_failed_before"] > 0
    assert "The last run of sft:student failed" not in page_of(root)


def test_a_grpo_run_stopped_part_way_records_the_steps_it_took(tmp_path, monkeypatch):
    run = curated_run(tmp_path / "run", "sft.steps=4", "grpo.steps=3", "grpo.tasks_per_step=2", "grpo.group_size=2")
    sft.run(run)
    step = grpo.grpo_step

    def stopped_at_step_3(*args, **kwargs):
        if args[4] == 3:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(grpo, "grpo_step", stopped_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        grpo.run(run)
    entry = manifest(tmp_path / "run")["stages"]["grpo:student-grpo"]
    assert (entry["status"], entry["error"], entry["steps"]) == ("failed", CTRL_C, 2)
    assert entry["train_seconds"] > 0 and entry["flops_estimate"] > 0 and len(entry["history"]) == 2


def test_a_run_stopped_before_its_first_step_records_nothing(tmp_path, monkeypatch):
    """Nothing was trained: the stage's manifest is as it found it (no failed entry, no start record)."""
    run = curated_run(tmp_path / "run", "sft.steps=4", "grpo.steps=3", "grpo.tasks_per_step=2", "grpo.group_size=2")
    sft.run(run)
    before = manifest(tmp_path / "run")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grpo, "grpo_step", stopped)
    with pytest.raises(KeyboardInterrupt):
        grpo.run(run)
    assert manifest(tmp_path / "run") == before
