"""A name the recipe gives a file or directory of the run (an output, an input) is a plain name: a
path there is one error line before anything is written, and the run directory keeps every file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import curated_run, write_recipe_file


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root`, but the lock a stage takes (it names the last pid that held it)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run directory with trajectories, curated data and a trained student, and its recipe file."""
    from warmstart.stages import sft

    root = tmp_path_factory.mktemp("names")
    recipe = curated_run(root / "run", "sft.steps=2")
    sft.run(recipe)
    return root, write_recipe_file(root / "recipe.toml", recipe)


@pytest.mark.parametrize(
    "stage, setting, key",
    [
        ("sft", "sft.output='..'", "sft.output"),
        ("sft", "sft.output='.'", "sft.output"),
        ("sft", "sft.data='../trajectories/teacher'", "sft.data"),
        ("generate", "generate.output='../../escaped'", "generate.output"),
        ("generate", "generate.output=''", "generate.output"),
        ("curate", "curate.output='../models/student'", "curate.output"),
        ("grpo", "grpo.output='..'", "grpo.output"),
    ],
)
def test_a_path_for_a_name_is_one_error_and_the_run_is_intact(finished_run, stage, setting, key):
    root, recipe_file = finished_run
    before = snapshot(root)
    assert "run/models/student/model.safetensors" in before and "run/curated/train.jsonl" in before
    result = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", stage, str(recipe_file), "--set", setting],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert key in errors[0], errors[0]
    assert snapshot(root) == before  # nothing removed, changed, or written beside the run
