"""One place decides where models run: `run.device` (auto: cuda, then mps, then the CPU) and the training
precision; a device asked for and absent is one error line before anything is written."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers import curated_run, write_recipe_file
from warmstart.errors import WarmstartError
from warmstart.lm.device import autocast, resolve_device, wants_bf16, warn_if_emulated_bf16
from warmstart.lm.weight_casts import WeightCasts
from warmstart.stages import sft

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def test_auto_is_the_best_device_present():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@no_cuda
def test_a_device_asked_for_and_absent_is_an_error_naming_it():
    with pytest.raises(WarmstartError, match='run.device = "cuda": no CUDA device is visible'):
        resolve_device("cuda")


def test_precision_auto_is_fp32_on_the_cpu_and_bf16_only_when_asked():
    cpu = torch.device("cpu")
    assert not wants_bf16("auto", cpu) and not wants_bf16("fp32", cpu) and wants_bf16("bf16", cpu)
    linear = torch.nn.Linear(4, 4)
    with autocast("auto", cpu) as casts:
        assert casts is None and not torch.is_autocast_enabled("cpu")
        assert linear(torch.ones(1, 4)).dtype == torch.float32
    with autocast("bf16", cpu) as casts:
        assert casts is None  # no kept casts unless asked for
        assert linear(torch.ones(1, 4)).dtype == torch.bfloat16
    with autocast("bf16", cpu, keep_casts=True) as casts:
        assert isinstance(casts, WeightCasts)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_asked_for_on_a_cpu_that_emulates_it_is_one_warning(native, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    caplog.set_level("WARNING", logger="warmstart.lm.device")
    for precision in ("auto", "fp32"):
        warn_if_emulated_bf16(precision, torch.device("cpu"), "sft.precision")
    assert not caplog.records
    sft.run(curated_run(tmp_path / "run", "sft.steps=1", "sft.precision=bf16"))  # the stage itself asks
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == (
        []
        if native
        else [
            'sft.precision = "bf16" on a CPU without AVX512-BF16 or AMX: torch emulates bf16 matmul here, slower than fp32'
        ]
    )


@no_cuda
@pytest.mark.parametrize("command", ["sft", "grpo"])
def test_a_training_stage_on_an_absent_device_is_one_error_and_writes_nothing(tmp_path, command):
    recipe = curated_run(tmp_path / "run", "sft.steps=2")
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    before = sorted(p for p in (tmp_path / "run").rglob("*") if p.name not in (".lock", "recipe.toml"))
    result = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", command, str(recipe_file), "--set", "run.device='cuda'"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "no CUDA device" in errors[0]
    assert sorted(p for p in (tmp_path / "run").rglob("*") if p.name not in (".lock", "recipe.toml")) == before


@no_cuda
def test_serve_on_an_absent_device_is_one_error(tmp_path):
    recipe = curated_run(tmp_path / "run", "sft.steps=1")
    student = sft.run(recipe)
    result = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "serve", str(student), "--port", "0", "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1 and "serve --device" in errors[0], result.stderr


def test_a_training_stage_that_cannot_fit_is_refused_before_anything_is_written(tmp_path):
    recipe = curated_run(tmp_path / "run", "sft.steps=2", "sft.rows_per_micro_batch=100000", "sft.seq_len=65536")
    before = sorted((tmp_path / "run").rglob("*"))
    with pytest.raises(WarmstartError, match=r"sft: needs ~.* lower sft.rows_per_micro_batch \(100000\)"):
        sft.run(recipe)
    assert sorted((tmp_path / "run").rglob("*")) == before
