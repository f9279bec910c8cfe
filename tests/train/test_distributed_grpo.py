"""`warmstart grpo` under torchrun with 2 gloo processes: the same rollouts, rewards and weights as one
process (each process samples, verifies and trains its share of every step); a killed 2-process run
resumes to the same weights; more processes than a step's rollouts is one error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from helpers import curated_run, kill_every_process_of, write_recipe_file
from warmstart.runs.checkpoint import MARKER
from warmstart.stages import sft

HERE = Path(__file__).parent
SETTINGS = [
    "sft.steps=1",
    "grpo.init=base",
    "grpo.steps=4",
    "grpo.tasks_per_step=2",
    "grpo.group_size=4",
    "grpo.max_new_tokens=10",
    "grpo.checkpoint_every=1",
    "grpo.keep_checkpoints=5",
    "grpo.lr=1e-2",
    "env.name=even_length_env:EvenLength",
]
ENVIRONMENT = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


def grpo_command(recipe_file: Path, processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "warmstart.cli", "grpo", str(recipe_file)]
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
        "-m", "warmstart.cli", "grpo", str(recipe_file),
    ]  # fmt: skip


def prepared_run(root: Path, *settings: str) -> Path:
    """A run directory with its base model built (GRPO starts from it), and its recipe file."""
    recipe = curated_run(root, *SETTINGS, *settings)
    sft.run(recipe)
    return write_recipe_file(root.with_suffix(".toml"), recipe)


def history(root: Path) -> list[dict]:
    return json.loads((root / "manifest.json").read_text())["stages"]["grpo:student-grpo"]["history"]


def assert_same_run(one: Path, two: Path) -> None:
    a = load_file(one / "models" / "student-grpo" / "model.safetensors")
    b = load_file(two / "models" / "student-grpo" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
    rewards = [(h["mean_reward"], h["sampled_tokens"], h["groups_used"]) for h in history(one)]
    assert rewards == [(h["mean_reward"], h["sampled_tokens"], h["groups_used"]) for h in history(two)]
    assert all(h["groups_used"] > 0 for h in history(one)), "a step without an update tests nothing"


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENVIRONMENT)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_gloo_processes_sample_score_and_train_as_one(tmp_path):
    one, two = prepared_run(tmp_path / "one"), prepared_run(tmp_path / "two")
    run(grpo_command(one, 1))
    run(grpo_command(two, 2))
    assert_same_run(tmp_path / "one", tmp_path / "two")
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["stages"]["grpo:student-grpo"]["processes"] == 2


def test_a_killed_two_process_rl_run_resumes_to_the_same_weights(tmp_path):
    one, two = prepared_run(tmp_path / "one"), prepared_run(tmp_path / "two")
    run(grpo_command(one, 1))
    process = subprocess.Popen(
        grpo_command(two, 2),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=ENVIRONMENT,
    )
    marker = tmp_path / "two" / "checkpoints" / "student-grpo" / "step-2" / MARKER
    deadline = time.time() + 300
    while not marker.exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    kill_every_process_of(two)  # torchrun and both of its workers
    process.wait()
    assert not (tmp_path / "two" / "models" / "student-grpo").exists(), "killed too late: training had finished"
    result = subprocess.run(grpo_command(two, 2), capture_output=True, text=True, timeout=600, env=ENVIRONMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_more_processes_than_rollouts_in_a_step_is_one_error(tmp_path):
    recipe_file = prepared_run(tmp_path / "run", "grpo.tasks_per_step=1", "grpo.group_size=2")
    result = subprocess.run(grpo_command(recipe_file, 3), capture_output=True, text=True, timeout=600, env=ENVIRONMENT)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "grpo: 3 processes but a step has only 2 rows" in errors[0]
    assert not (tmp_path / "run" / "models" / "student-grpo").exists()


def test_every_processs_api_judge_requests_are_billed(tmp_path):
    """Each process judges its share of a step's rollouts; only the main process's had been billed (half of
    what a 2-process run paid for was in no ledger)."""
    import pytest

    from fake_api import FakeAPI

    sys.path.insert(0, str(HERE.parent / "stages"))
    from test_generate_spend import judged_grpo, price_file, server_bill

    with FakeAPI() as api:
        judged_settings = judged_grpo(api, price_file(tmp_path / "prices.toml"))
        recipe_file = prepared_run(tmp_path / "two", "grpo.steps=1", "grpo.max_refills=0", *judged_settings)
        before, seen = server_bill(api), len(api.billed)
        run(grpo_command(recipe_file, 2))
        judged_requests = len(api.billed) - seen
        paid = server_bill(api) - before
    judged = json.loads((tmp_path / "two" / "costs.json").read_text())["stages"]["grpo:student-grpo"]["api_judge"]
    assert judged_requests == 8  # 2 tasks x 4 samples, each judged once, half of them in each process
    assert judged["requests"] == judged_requests and judged["requests_sent"] == judged_requests
    assert judged["usd"] == pytest.approx(paid, rel=1e-9)
