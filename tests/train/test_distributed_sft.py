"""`warmstart sft` under torchrun with 2 gloo processes, each holding the whole model or a shard of it
(FSDP2): the same weights as one process at the same global batch; a SIGKILLed 2-process run resumes to
the same weights; more processes than rows is one error, as is what sharding cannot do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import curated_run, kill_every_process_of, write_recipe_file
from warmstart.errors import PEER_FAILED
from warmstart.runs.checkpoint import MARKER

HERE = Path(__file__).parent

SETTINGS = [
    "sft.steps=8",
    "sft.rows_per_micro_batch=2",
    "sft.grad_accum=2",
    "sft.checkpoint_every=2",
    "sft.keep_checkpoints=5",
]
# The kill test's run. With 8 steps of the tiny model, the run went from its step-4 checkpoint to its
# finished model in 0.09 s (0.25 s sharded), a thin margin for the poll and kill below; with 64 steps,
# 1.6 s (4.8 s sharded), measured on a 2-core EPYC.
KILLED_SETTINGS = [*SETTINGS, "sft.steps=64"]


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


def one_and_two_processes(tmp_path, *two_settings: str, settings=SETTINGS) -> tuple[Path, Path, Path]:
    one = curated_run(tmp_path / "one", *settings)
    two = curated_run(tmp_path / "two", *settings, *two_settings)
    subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "sft", str(write_recipe_file(tmp_path / "one.toml", one))],
        check=True,
        timeout=600,
    )
    return tmp_path / "one", tmp_path / "two", write_recipe_file(tmp_path / "two.toml", two)


@pytest.mark.parametrize("sharding", ["none", "fsdp"])
def test_two_gloo_processes_train_the_same_weights_as_one(tmp_path, sharding):
    one, two, two_file = one_and_two_processes(tmp_path, f"sft.sharding={sharding}")
    result = subprocess.run(torchrun(two_file, 2), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(student_weights(one), student_weights(two))
    manifest = (two / "manifest.json").read_text()
    assert '"processes": 2' in manifest
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(two / "models" / "student")  # a plain save_pretrained model
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight  # still tied


# ("fsdp", 1): sharded training saves its optimizer state by parameter name; one process takes it up.
# ("none", 2, "fsdp"): a run that did not fit unsharded is resumed sharded (sharding is not in the
# fingerprint: config.NOT_RESULTS), and the other way round.
@pytest.mark.parametrize(
    "sharding, resumed_by, resumed_sharding",
    [("none", 2, "none"), ("fsdp", 2, "fsdp"), ("fsdp", 1, "fsdp"), ("none", 2, "fsdp"), ("fsdp", 2, "none")],
)
def test_a_killed_two_process_run_resumes_to_the_same_weights(tmp_path, sharding, resumed_by, resumed_sharding):
    one, two, two_file = one_and_two_processes(tmp_path, f"sft.sharding={sharding}", settings=KILLED_SETTINGS)
    process = subprocess.Popen(
        torchrun(two_file, 2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    checkpoints = two / "checkpoints" / "student"
    deadline = time.time() + 300
    while not (checkpoints / "step-4" / MARKER).exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    kill_every_process_of(two_file)  # torchrun and both of its workers
    process.wait()
    assert not (two / "models" / "student").exists(), "killed too late: training had finished"
    resumed = torchrun(two_file, resumed_by, "--set", f"sft.sharding={resumed_sharding}")
    result = subprocess.run(resumed, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr
    assert_same_weights(student_weights(one), student_weights(two))


def test_more_processes_than_rows_in_a_step_is_one_error(tmp_path):
    recipe = curated_run(tmp_path / "run", "sft.steps=2", "sft.rows_per_micro_batch=1", "sft.grad_accum=1")
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    result = subprocess.run(torchrun(recipe_file, 2), capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "sft: 2 processes but a step has only 1 rows" in errors[0]
    assert not (tmp_path / "run" / "models" / "student").exists()


def test_sharding_with_lora_is_one_error(tmp_path):
    recipe = curated_run(tmp_path / "run", *SETTINGS, "sft.sharding=fsdp", "sft.lora.r=4")
    result = subprocess.run(
        torchrun(write_recipe_file(tmp_path / "recipe.toml", recipe), 2), capture_output=True, text=True, timeout=600
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "sft.sharding = 'fsdp' with sft.lora" in errors[0]
    assert not (tmp_path / "run" / "models" / "student").exists()


def test_an_error_of_the_main_process_alone_is_its_one_line_not_the_others_tracebacks(tmp_path):
    """The main process builds (here: checks) the base alone; its error leaves the group, and the other
    process's collective then fails: that one stops quietly (it had printed ~130 lines of traceback)."""
    recipe = curated_run(tmp_path / "run", *SETTINGS)
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    subprocess.run([sys.executable, "-m", "warmstart.cli", "sft", str(recipe_file)], check=True, timeout=600)
    other_shape = ("--set", "sft.output=again", "--set", "sft.tiny.hidden_size=64")  # models/base is of another
    result = subprocess.run(torchrun(recipe_file, 2, *other_shape), capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "was built with another sft.tiny config" in errors[0]
    assert "[rank1]" not in result.stderr


def test_a_two_process_run_with_dropout_resumes_each_processs_random_state(tmp_path):
    """Each process's dropout masks draw from its own RNG, which drift apart: a checkpoint had kept the main
    process's alone and set it in both, so a resumed run ended on other weights (1.3e-3 apart with LoRA
    dropout, review 95). The resume is made as a kill right after checkpoint step-4 leaves the run (the
    finished run's model kept aside to compare)."""
    import json
    import shutil

    recipe = curated_run(tmp_path / "run", *SETTINGS, "sft.lora.r=4", "sft.lora.dropout=0.1")
    command = torchrun(write_recipe_file(tmp_path / "run.toml", recipe), 2)
    subprocess.run(command, check=True, timeout=600)
    uninterrupted = student_weights(tmp_path / "run")
    for later in (tmp_path / "run" / "checkpoints" / "student").glob("step-*"):
        if int(later.name.removeprefix("step-")) > 4:
            shutil.rmtree(later)
    shutil.rmtree(tmp_path / "run" / "models" / "student")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    del manifest["stages"]["sft:student"]
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    subprocess.run(command, check=True, timeout=600)
    assert_same_weights(uninterrupted, student_weights(tmp_path / "run"))


def test_a_process_that_fails_first_is_not_hidden_behind_the_main_processs_broken_collective(tmp_path):
    """Process 1 fails at its third step: the main process's collective breaks off, and its record and line
    had been gloo's "Connection closed by peer ... GLHF!", not that another process failed."""
    import json

    recipe = curated_run(tmp_path / "run", *SETTINGS)
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(HERE / "fail_rank_child.py"), "sft", str(recipe_file),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "FAIL_RANK": "1"})
    assert result.returncode != 0
    assert "injected failure in process 1" in result.stderr  # the one that failed says why
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {PEER_FAILED}"], result.stderr[-3000:]
    entry = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["sft:student"]
    assert entry["status"] == "failed" and entry["error"].startswith(PEER_FAILED)
