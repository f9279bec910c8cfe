"""A checkpoint or model that cannot be written whole (a full disk, a file-size limit) is one error line
naming the directory, and leaves no partial directory: torch.save and safetensors report a short write as
RuntimeError and SafetensorError, which had come out as a 60-line traceback with the .tmp left behind."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from helpers import curated_run, write_recipe_file


def limited_to(kilobytes: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (kilobytes * 1024, kilobytes * 1024))

    return limit


@pytest.mark.parametrize(("kilobytes", "where"), [(100, "models/base.tmp"), (250, "checkpoints/student/.step-")])
def test_a_write_cut_short_is_one_error_line_and_no_partial_directory(tmp_path, kilobytes, where):
    recipe = curated_run(tmp_path / "run", "sft.steps=2", "sft.checkpoint_every=1", train=24)
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    done = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "sft", str(recipe_file)],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limited_to(kilobytes),
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and where in errors[0] and "could not be written" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "run").rglob("*.tmp")) and not list((tmp_path / "run").rglob(".step-*.tmp"))
