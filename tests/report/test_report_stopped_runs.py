"""A training run stopped part-way by an exception (Ctrl-C at the terminal, a divergence, a rollout server
gone) records what it spent: as the stage's failed run where it had no finished one, else beside the
finished run, whose record still describes the model in models/ (it is kept: the stage stays done for its
recipe). costs.json counts its seconds and the report lists it, its curve said to be that run's. It had
recorded nothing: its seconds were in no total, and its curve was drawn as the stage's without a word."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_report_killed_and_copied import cost_cells, known_cost, manifest, page_of, recipe, sft_steps, trained_run

from helpers import curated_run, small_recipe, write_recipe_file
from warmstart.report.attempts import curves_caption, failed_attempts
from warmstart.runs.directory import RunDir, recipe_when_worked
from warmstart.stages import grpo, sft

CTRL_C = "interrupted (KeyboardInterrupt: Ctrl-C, or a SIGTERM generate takes as one)"
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


def test_an_sft_retrain_stopped_by_ctrl_c_is_recorded_beside_the_finished_run_it_leaves_in_place(tmp_path):
    """models/student is still the finished run's: its record stays (the stage still done for its recipe, the
    eval's row still of known cost), and the stopped run's seconds are beside it, in every total."""
    root = trained_run(tmp_path / "run")
    before = manifest(root)["stages"]["sft:student"]
    RunDir(recipe(root)).write_recipe()  # what `warmstart sft` writes once the finished run recorded itself
    finished_recipe = (root / "recipe.toml").read_text()
    stopped = interrupted_retrain(root)
    assert stopped.returncode not in (0, -9), stopped.stderr[-2000:]
    assert sft_steps(root) == [1, 2, 1, 2, 3]
    entry = dict(manifest(root)["stages"]["sft:student"])
    [run] = entry.pop("stopped_runs")
    assert entry == before and "running" not in manifest(root)
    assert run["error"] == CTRL_C and run["seconds"] > 0 and run["sequence"] > before["sequence"]
    # Its own training: 3 steps of 4 (flops per token x tokens), within its wall seconds.
    assert 0 < run["this_run"]["train_seconds"] < run["seconds"]
    assert run["this_run"]["flops_estimate"] > before["flops_estimate"]
    # models/student is still the finished run's model: the run's recipe stays the one that made it.
    assert (root / "recipe.toml").read_text() == finished_recipe
    total = costs(root)["total"]
    assert total["seconds_failed"] == pytest.approx(run["seconds"], abs=0.01)
    assert costs(root)["stages"]["sft:student"]["seconds_stopped"] == pytest.approx(run["seconds"], abs=0.001)
    page = page_of(root)
    assert "The last run of sft:student stopped part-way (above): its curve is of that run" in page
    assert "sft:student (stopped part-way)" in page and CTRL_C in page
    assert cost_cells(page)[:2] == known_cost(before)  # the row's model is still the finished run's
    sft.run(recipe(root))  # the finished run's recipe: still done, nothing trained
    assert sft_steps(root) == [1, 2, 1, 2, 3]
    sft.run(recipe(root, "sft.steps=4"))  # the new recipe to its end: the stopped run's seconds carried on
    entry = manifest(root)["stages"]["sft:student"]
    assert "stopped_runs" not in entry and entry["seconds_failed_before"] == pytest.approx(run["seconds"], abs=0.001)
    assert entry["started_sequence"] > run["sequence"]  # records keep their order past a stopped run
    assert costs(root)["total"]["seconds_failed"] == pytest.approx(run["seconds"], abs=0.01)
    assert "stopped part-way" not in page_of(root)


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


def test_a_stage_run_again_since_its_stopped_run_is_said_of_its_last_run_only():
    stopped = {"sft:student": {"sequence": 3, "stopped_runs": [{"started": 1.0, "finished": 2.0, "seconds": 1.0}]}}
    assert "stopped part-way" in curves_caption(stopped)
    later = curves_caption(stopped, {"sft:student": {"sequence": 5, "pid": 1}})  # killed, or running, since
    assert "never finished" in later and "stopped part-way" not in later


def stopped_at(module, name: str, stop: int, step_of):
    """`module.name` (a step function) raising KeyboardInterrupt on its step `stop`, as a Ctrl-C there would."""
    step = getattr(module, name)

    def stopped(*args, **kwargs):
        if step_of(args) == stop:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    return stopped


def test_a_resumed_grpo_run_that_stops_records_its_own_part_of_the_training(tmp_path, monkeypatch):
    """A failed run that had resumed from a checkpoint spent only its own steps: those are the report's
    train s and FLOPs in the table of failed runs, not the whole training's (which the record's totals keep)."""
    run = curated_run(
        tmp_path / "run",
        "sft.steps=4",
        "grpo.steps=4",
        "grpo.tasks_per_step=2",
        "grpo.group_size=2",
        "grpo.checkpoint_every=1",
    )
    sft.run(run)
    step_number = lambda args: args[4]  # noqa: E731 (grpo_step's step)
    monkeypatch.setattr(grpo, "grpo_step", stopped_at(grpo, "grpo_step", 3, step_number))
    with pytest.raises(KeyboardInterrupt):
        grpo.run(run)
    monkeypatch.undo()
    monkeypatch.setattr(grpo, "grpo_step", stopped_at(grpo, "grpo_step", 4, step_number))
    with pytest.raises(KeyboardInterrupt):
        grpo.run(run)  # resumes from step 2's checkpoint, takes step 3, stops at 4
    entry = manifest(tmp_path / "run")["stages"]["grpo:student-grpo"]
    assert (entry["status"], entry["steps"]) == ("failed", 3)
    third = entry["history"][2]
    assert entry["this_run"] == {"train_seconds": third["seconds"], "flops_estimate": third["flops_estimate"]}
    assert entry["train_seconds"] > third["seconds"]
    table = failed_attempts({"grpo:student-grpo": entry})
    assert f"<td>{third['seconds']:,.1f}</td><td>{third['flops_estimate']:.2e}</td>" in table


def test_a_resumed_sft_run_that_stops_records_its_own_part_of_the_training(tmp_path, monkeypatch):
    run = curated_run(tmp_path / "run", "sft.steps=5", "sft.checkpoint_every=2")
    calls = []

    def step_number(args):
        calls.append(1)
        return len(calls)

    monkeypatch.setattr(sft, "train_step", stopped_at(sft, "train_step", 3, step_number))
    with pytest.raises(KeyboardInterrupt):
        sft.run(run)  # steps 1 and 2 (a checkpoint), stopped at 3
    checkpointed_tokens = manifest(tmp_path / "run")["stages"]["sft:student"]["tokens_this_run"]
    calls.clear()
    monkeypatch.undo()
    monkeypatch.setattr(sft, "train_step", stopped_at(sft, "train_step", 3, step_number))
    with pytest.raises(KeyboardInterrupt):
        sft.run(run)  # resumes at step 2, takes steps 3 and 4, stopped at 5
    entry = manifest(tmp_path / "run")["stages"]["sft:student"]
    assert entry["status"] == "failed" and entry["tokens_this_run"] > 0
    own = entry["this_run"]
    # FLOPs per token x this run's tokens; the totals add the checkpoint's tokens.
    per_token = own["flops_estimate"] // entry["tokens_this_run"]
    assert own["flops_estimate"] == per_token * entry["tokens_this_run"]
    assert entry["flops_estimate"] == per_token * (checkpointed_tokens + entry["tokens_this_run"])
    assert 0 < own["train_seconds"] < entry["train_seconds"]


def test_a_killed_runs_start_record_does_not_make_a_stopped_run_rewrite_the_recipe(tmp_path):
    """A retrain killed -9 leaves its start record; the next one, stopped beside the finished run, takes it
    away: that had counted as work done, and recipe.toml took the stopped run's settings."""
    finished = small_recipe(tmp_path, "sft.lr=0.001")
    run_dir, stage = RunDir(finished), "sft:student"
    run_dir.manifest_path.write_text(
        json.dumps(
            {
                "stages": {stage: {"status": "done", "sequence": 1, "seconds": 5.0, "fingerprint": "A"}},
                "running": {stage: {"started": 1.0, "pid": 999999, "host": "h", "sequence": 2}},
            }
        )
    )
    run_dir.write_recipe()
    before = (tmp_path / "recipe.toml").read_text()
    retrain = small_recipe(tmp_path, "sft.lr=0.003")
    with pytest.raises(KeyboardInterrupt), recipe_when_worked(retrain):
        RunDir(retrain).mark_running(stage)
        RunDir(retrain).add_stopped_run(stage, 2.0, CTRL_C, {"train_seconds": 1.0, "flops_estimate": 1.0})
        raise KeyboardInterrupt
    assert (tmp_path / "recipe.toml").read_text() == before
