"""`warmstart report` after a training run stopped by Ctrl-C or by an error before it had anything to
record: such a run takes its start record away (it was not killed) and writes no record, but its rows are
in metrics.jsonl, and the page's curve is that run's. Each row carries its run's start-record number, so
the page says the curve is not of a model the stage recorded (it said nothing)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from test_report_killed_and_copied import manifest, page_of, recipe, sft_steps, trained_run

from helpers import write_recipe_file
from warmstart.report.attempts import stopped_unrecorded
from warmstart.stages import sft

STOPPED = "The last run of sft:student stopped before it finished and recorded nothing (Ctrl-C, or an error"
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


def test_a_retrain_stopped_by_ctrl_c_has_its_curve_said_to_be_of_no_recorded_model(tmp_path):
    root = trained_run(tmp_path / "run")
    before = manifest(root)["stages"]["sft:student"]
    stopped = interrupted_retrain(root)
    assert stopped.returncode not in (0, -9), stopped.stderr[-2000:]
    assert sft_steps(root) == [1, 2, 1, 2, 3]  # the stopped run's rows: the curve drawn is theirs
    assert "running" not in manifest(root) and manifest(root)["stages"]["sft:student"] == before
    page = page_of(root)
    assert STOPPED in page
    assert "never finished (above)" not in page  # not a killed run: nothing says so
    sft.run(recipe(root, "sft.steps=4"))  # run again to its end: the curve is the recorded run's
    assert STOPPED.split(" (")[0] not in page_of(root)


def test_each_row_names_its_run_and_the_recorded_runs_curve_needs_no_note(tmp_path):
    root = trained_run(tmp_path / "run")
    entry = manifest(root)["stages"]["sft:student"]
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert {row["run"] for row in rows if row["stage"] == "sft:student"} == {entry["started_sequence"]}
    assert "stopped before it finished" not in page_of(root)


def test_rows_without_run_numbers_and_runs_still_standing_are_not_called_stopped():
    """Rows written before runs were numbered say nothing either way; a run whose start record stands is the
    killed (or still running) case, said elsewhere; a first run stopped with no record at all is stopped."""
    stages = {"sft:a": {"started_sequence": 3}, "sft:b": {"started_sequence": 5}}
    rows = [
        {"stage": "sft:a", "step": 1},  # before numbering
        {"stage": "sft:b", "step": 1, "run": 5},
        {"stage": "sft:b", "step": 2, "run": 7},  # a later run: its start record standing, or gone
        {"stage": "sft:c", "step": 1, "run": 9},  # never recorded
        {"stage": "eval", "pass@1/x": 0.5},  # no step: no curve
    ]
    assert stopped_unrecorded(rows, stages, {"sft:b": {"sequence": 7}}) == ["sft:c"]
    assert stopped_unrecorded(rows, stages, {}) == ["sft:b", "sft:c"]
