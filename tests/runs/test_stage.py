"""The stage skeleton every stage runs through (`RunDir.stage`): skip if done, mark done, never on failure."""

from __future__ import annotations

import json

import pytest

from warmstart.config import load_recipe
from warmstart.runs.directory import RunDir


def run_once(run_dir: RunDir, config: dict, inputs, out, work) -> bool:
    """One run of a toy stage; whether it did the work."""
    with run_dir.stage("toy:out", config, inputs, [out]) as stage:
        if stage.done:
            return False
        work()
        out.write_text("result")
        stage.summary = {"rows": 3}
    return True


def test_a_finished_stage_is_skipped_until_its_config_or_an_input_changes(tmp_path):
    run_dir = RunDir(load_recipe(None, [f"run.dir='{tmp_path}'"]))
    source, out = tmp_path / "source.txt", tmp_path / "out.txt"
    source.write_text("a")
    assert run_once(run_dir, {"k": 1}, [source], out, lambda: None)
    entry = run_dir.manifest()["stages"]["toy:out"]
    assert entry["rows"] == 3 and entry["outputs"] == ["out.txt"] and entry["seconds"] >= 0
    assert json.loads((tmp_path / "costs.json").read_text())["stages"]["toy:out"]["seconds"] == entry["seconds"]
    assert not run_once(run_dir, {"k": 1}, [source], out, lambda: None)  # same fingerprint: nothing to do
    assert run_once(run_dir, {"k": 2}, [source], out, lambda: None)  # another config
    source.write_text("b")
    assert run_once(run_dir, {"k": 2}, [source], out, lambda: None)  # another input
    out.unlink()
    assert run_once(run_dir, {"k": 2}, [source], out, lambda: None)  # an output gone


def test_a_stage_that_fails_is_not_marked_done(tmp_path):
    run_dir = RunDir(load_recipe(None, [f"run.dir='{tmp_path}'"]))
    out = tmp_path / "out.txt"

    def fail():
        out.write_text("half")
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        run_once(run_dir, {}, [], out, fail)
    assert "toy:out" not in run_dir.manifest()["stages"]
    assert run_once(run_dir, {}, [], out, lambda: None)  # the rerun does the work again
