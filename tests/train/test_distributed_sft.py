"""`warmstart sft` under torchrun with 2 gloo processes: the same weights as one process at the same global
batch; a SIGKILLed 2-process run resumes to the same weights; more processes than rows is one error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from helpers import curated_run, write_recipe_file
from warmstart.runs.checkpoint import MARKER

SETTINGS = [
    "sft.steps=8",
    "sft.rows_per_micro_batch=2",
    "sft.grad_accum=2",
    "sft.checkpoint_every=2",
    "sft.keep_checkpoints=5",
]


def torchrun(recipe_file: Path, processes: int, *extra: str, **popen) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
        "-m", "warmstart.cli", "sft", str(recipe_file), *extra,
    ]  # fmt: skip


def student_weights(root: Path) -> dict[str, torch.Tensor]:
    return load_file(root / "models" / "student" / "model.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def one_and_two_processes(tmp_path) -> tuple[Path, Path, Path]:
    one = curated_run(tmp_path / "one", *SETTINGS)
    two = curated_run(tmp_path / "two", *SETTINGS)
    subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "sft", str(write_recipe_file(tmp_path / "one.toml", one))],
        check=True,
        timeout=600,
    )
    return tmp_path / "one", tmp_path / "two", write_recipe_file(tmp_path / "two.toml", two)


def test_two_gloo_processes_train_the_same_weights_as_one(tmp_path):
    one, two, two_file = one_and_two_processes(tmp_path)
    result = subprocess.run(torchrun(two_file, 2), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(student_weights(one), student_weights(two))
    manifest = (two / "manifest.json").read_text()
    assert '"processes": 2' in manifest


def test_a_killed_two_process_run_resumes_to_the_same_weights(tmp_path):
    one, two, two_file = one_and_two_processes(tmp_path)
    process = subprocess.Popen(
        torchrun(two_file, 2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    checkpoints = two / "checkpoints" / "student"
    deadline = time.time() + 300
    while not (checkpoints / "step-4" / MARKER).exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both of its workers
    process.wait()
    assert not (two / "models" / "student").exists(), "killed too late: training had finished"
    result = subprocess.run(torchrun(two_file, 2), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(student_weights(one), student_weights(two))


def test_more_processes_than_rows_in_a_step_is_one_error(tmp_path):
    recipe = curated_run(tmp_path / "run", "sft.steps=2", "sft.rows_per_micro_batch=1", "sft.grad_accum=1")
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    result = subprocess.run(torchrun(recipe_file, 2), capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "sft: 2 processes but a step has only 1 rows" in errors[0]
    assert not (tmp_path / "run" / "models" / "student").exists()
