"""`warmstart report` on runs whose history no clock or exception recorded: a retrain killed (SIGKILL: no
failed record) during training or after publishing its model, a run copied elsewhere whose original was
trained again since, and stages run on machines whose clocks differ. The page says what a killed run left,
a row's cost is that of the training that made the model it scored (or said unknown), and a copy needs
nothing of its original."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import curated_run, small_recipe, write_recipe_file
from warmstart.cli import app
from warmstart.errors import WarmstartError
from warmstart.runs import directory
from warmstart.stages import evaluate, sft

RUN = ["sft.steps=2", "eval.k=1", "eval.max_new_tokens=16", "tasks.eval=6", "eval.policies={student='student'}"]
# Code run before `warmstart sft` in the killed process: SIGKILL itself at a chosen point, as the OOM killer
# or a power loss would (no exception, so no failed record).
KILLED_AT = {
    "step 3": (
        "from warmstart.runs import tracking\n"
        "log = tracking.Tracker.log\n"
        "def killed(self, step, scalars):\n"
        "    log(self, step, scalars)\n"
        "    if step == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "tracking.Tracker.log = killed\n"
    ),
    "publish": (  # its model published, its record not written yet
        "from warmstart.runs import directory\n"
        "directory.RunDir.mark_done = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)\n"
    ),
}


def trained_run(root: Path) -> Path:
    """A real run: reference-teacher data curated, a 2-step student, eval of the student."""
    recipe = curated_run(root, *RUN, train=24)
    sft.run(recipe)
    evaluate.run(recipe)
    return root


def recipe(root: Path, *overrides: str):
    return small_recipe(root, *RUN, *overrides, train=24)


def killed_retrain(root: Path, at: str) -> int:
    """`warmstart sft` again from scratch (4 steps) in a process killed with SIGKILL at `at`; its pid."""
    shutil.rmtree(root / "checkpoints" / "student", ignore_errors=True)
    path = write_recipe_file(root.parent / "retrain.toml", recipe(root, "sft.steps=4"))
    code = f"import os, signal\n{KILLED_AT[at]}from warmstart.cli import main\nmain()\n"
    process = subprocess.Popen([sys.executable, "-c", code, "sft", str(path)], stderr=subprocess.PIPE, text=True)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == -9, stderr[-2000:]
    return process.pid


def page_of(root: Path) -> str:
    result = CliRunner().invoke(app, ["report", str(root)])
    assert result.exit_code == 0, result.output
    return (root / "report.html").read_text()


def cost_cells(page: str, row: str = "student") -> list[str]:
    cells = re.search(rf"<tr><td>{re.escape(row)}</td>(.*?)</tr>", page).group(1)
    return re.findall(r"<td>(.*?)</td>", cells)[-5:]


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def known_cost(entry: dict) -> list[str]:
    return [f"{entry['train_seconds']:,.0f}", f"{entry['flops_estimate']:.2e}"]


def sft_steps(root: Path) -> list[int]:
    lines = (root / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if '"sft:student"' in line]


def test_a_retrain_killed_during_training_is_said_and_its_curve_is_marked_as_that_runs(tmp_path):
    """Killed at step 3 of 4: models/student is still the 2-step model the eval scored, so the row keeps its
    cost; but the sft curve is the killed run's, which the page had shown as the stage's without a word."""
    root = trained_run(tmp_path / "run")
    before = manifest(root)["stages"]["sft:student"]
    pid = killed_retrain(root, "step 3")
    assert sft_steps(root) == [1, 2, 1, 2, 3]  # what the killed run left: its curve
    start = manifest(root)["running"]["sft:student"]
    assert start["pid"] == pid and manifest(root)["stages"]["sft:student"] == before
    page = page_of(root)
    assert "sft:student: a run started at " in page
    assert f"(pid {pid}, now gone) never finished and recorded no error: it was killed" in page
    assert "The last run of sft:student never finished (above): its curve is of that run" in page
    assert cost_cells(page)[:2] == known_cost(before)  # the model scored is the one its record is of
    assert "is not the model the eval scored" not in page
    sft.run(recipe(root, "sft.steps=4"))  # the rerun's record replaces the start record
    entry = manifest(root)["stages"]["sft:student"]
    assert "running" not in manifest(root) and entry["started_sequence"] > start["sequence"]
    assert "never finished" not in page_of(root)


def test_a_retrain_killed_after_publishing_is_no_rows_cost(tmp_path):
    """Killed between publishing models/student and writing its record: the page says the model's files are
    no longer the scored ones; an eval run since scored the killed run's model, whose training no record
    holds, so its cost is unknown (it had been the 2-step record's, silently)."""
    root = trained_run(tmp_path / "run")
    before = manifest(root)["stages"]["sft:student"]
    killed_retrain(root, "publish")
    page = page_of(root)
    assert cost_cells(page)[:2] == known_cost(before)  # the eval's row is still the 2-step model's
    assert "student: models/student is not the model the eval scored: its files changed after" in page
    evaluate.run(recipe(root))  # the new files: eval scores the killed run's model
    page = page_of(root)
    assert cost_cells(page) == ["unknown"] * 5
    assert "sft:student&#x27;s record is of another models/student than the one the eval read" in page
    assert f"{before['flops_estimate']:.2e}" not in page


def test_a_copy_whose_original_was_trained_again_keeps_its_own_costs(tmp_path):
    """results.json of the copy names the original's models/student; the original was trained again and
    evaluated since, so neither its records nor its files are the copy's any more. The eval's digests of the
    files it scored are the copy's model's: the copy's cost cells (blank before) come from the copy alone."""
    original = trained_run(tmp_path / "original")
    copy = Path(shutil.copytree(original, tmp_path / "copy"))
    shutil.rmtree(original / "checkpoints" / "student")
    sft.run(recipe(original, "sft.steps=4"))
    evaluate.run(recipe(original, "sft.steps=4"))
    page = page_of(copy)
    assert cost_cells(page)[:2] == known_cost(manifest(copy)["stages"]["sft:student"])
    assert "pass@1 versus training compute" in page
    shutil.rmtree(original)  # nothing of the original is read
    assert cost_cells(page_of(copy))[:2] == known_cost(manifest(copy)["stages"]["sft:student"])


def test_a_copy_with_results_of_an_older_eval_says_why_its_cost_cells_are_blank(tmp_path):
    """Results written before evals recorded their files' digests: the copy cannot tell the original's model
    from its own, and says so rather than leaving the cells blank without a word."""
    original = trained_run(tmp_path / "original")
    copy = Path(shutil.copytree(original, tmp_path / "copy"))
    results = json.loads((copy / "eval" / "results.json").read_text())
    for row in results["policies"].values():
        del row["model_files"]
    (copy / "eval" / "results.json").write_text(json.dumps(results))
    shutil.rmtree(original / "checkpoints" / "student")
    sft.run(recipe(original, "sft.steps=4"))
    evaluate.run(recipe(original, "sft.steps=4"))
    page = page_of(copy)
    assert cost_cells(page) == [""] * 5
    assert f"student: results.json names {original / 'models' / 'student'}, a model of another run directory" in page


def clock_off_by(seconds: float):
    """`time` for runs/directory.py as on a machine whose clock is `seconds` off (a copied run's other machine)."""
    return types.SimpleNamespace(time=lambda: time.time() + seconds)


@pytest.mark.parametrize("scored_files", [True, False], ids=["digests", "sequence numbers"])
def test_clocks_of_other_machines_do_not_decide_whether_a_model_was_trained_again(tmp_path, monkeypatch, scored_files):
    """sft on a machine an hour ahead, eval here: the model is the one scored (it had been said trained again).
    Then a retrain on a machine an hour behind: it made another model (its cost had been given to the row).
    Told by the digests of the files the eval scored, or, for results without them, by the records' order."""
    root = tmp_path / "run"
    data = curated_run(root, *RUN, train=24)
    with monkeypatch.context() as ahead:
        ahead.setattr(directory, "time", clock_off_by(3600))
        sft.run(data)
    evaluate.run(data)
    if not scored_files:  # as an eval before this change wrote them
        results = json.loads((root / "eval" / "results.json").read_text())
        del results["policies"]["student"]["model_files"]
        (root / "eval" / "results.json").write_text(json.dumps(results))
    first = manifest(root)["stages"]["sft:student"]
    assert first["finished"] > manifest(root)["stages"]["eval"]["finished"] + 3000
    assert cost_cells(page_of(root))[:2] == known_cost(first)
    shutil.rmtree(root / "checkpoints" / "student")
    with monkeypatch.context() as behind:
        behind.setattr(directory, "time", clock_off_by(-3600))
        sft.run(recipe(root, "sft.steps=4"))
    assert manifest(root)["stages"]["sft:student"]["finished"] < manifest(root)["stages"]["eval"]["finished"]
    page = page_of(root)
    assert cost_cells(page) == ["unknown"] * 5
    assert "sft:student made models/student again after the eval used it" in page


def test_a_stage_refused_inside_its_block_leaves_no_start_record(tmp_path):
    """A stage stopped by an exception was not killed: its start record goes, and a manifest that was not
    there is not left behind (the command's recipe.toml is written only once a stage did work)."""
    run_dir = directory.RunDir(small_recipe(tmp_path / "run"))
    with pytest.raises(WarmstartError, match="refused"):
        with run_dir.stage("toy:out", {}, [], [tmp_path / "out"]):
            assert list(run_dir.manifest()["running"]) == ["toy:out"]
            assert run_dir.manifest()["running"]["toy:out"]["pid"] == os.getpid()
            raise WarmstartError("refused")
    assert not run_dir.manifest_path.exists()
