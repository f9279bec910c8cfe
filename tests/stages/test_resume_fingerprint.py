"""A training stage resumes only checkpoints written under its own fingerprint (config and input data):
changed data or settings never continue the old run under the new name; the same ones still resume."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import curated_run, small_recipe
from warmstart.config import with_section
from warmstart.errors import WarmstartError
from warmstart.runs import checkpoint
from warmstart.stages import curate, grpo, sft

SFT = ["sft.steps=4", "sft.checkpoint_every=2"]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def stage_entry(root: Path, stage: str) -> dict:
    return json.loads((root / "manifest.json").read_text())["stages"][stage]


def test_checkpoints_record_the_fingerprint_of_the_stage_that_wrote_them(tmp_path):
    recipe = curated_run(tmp_path, *SFT)
    sft.run(recipe)
    found = checkpoint.complete_checkpoints(tmp_path / "checkpoints" / "student")
    assert [p.name for p in found] == ["step-2", "step-4"]
    assert {checkpoint.written_by(p) for p in found} == {stage_entry(tmp_path, "sft:student")["fingerprint"]}
    assert not (tmp_path / "models" / "student" / checkpoint.FINGERPRINT).exists()  # not part of the model


def test_changed_curated_data_is_refused_then_trained_from_step_zero(tmp_path, caplog):
    recipe = curated_run(tmp_path, *SFT)
    old = weights(sft.run(recipe))
    data, checkpoints = tmp_path / "curated" / "train.jsonl", tmp_path / "checkpoints" / "student"
    before = data.read_bytes()
    changed = small_recipe(tmp_path, *SFT, "curate.strip_reasoning=true")
    curate.run(changed)
    assert data.read_bytes() != before, "the ablation did not change the data: the test would prove nothing"

    with pytest.raises(WarmstartError) as info:
        sft.run(changed)
    message = str(info.value)
    assert message.startswith(f"{checkpoints}: checkpoints of another config or other input data")
    assert "remove that directory" in message and "sft.output" in message and "\n" not in message
    assert all(torch.equal(old[k], v) for k, v in weights(tmp_path / "models" / "student").items())

    shutil.rmtree(checkpoints)  # as the error says
    with caplog.at_level(logging.INFO, logger="warmstart"):
        new = weights(sft.run(changed))
    assert "resuming from" not in caplog.text
    entry = stage_entry(tmp_path, "sft:student")
    assert entry["first_loss"] is not None and entry["tokens_this_run"] > 0  # trained, from step 0
    assert any(not torch.equal(old[k], new[k]) for k in old)


def test_changed_sft_settings_are_refused(tmp_path):
    recipe = curated_run(tmp_path, *SFT)
    sft.run(recipe)
    with pytest.raises(WarmstartError, match="checkpoints of another config or other input data"):
        sft.run(with_section(recipe, "sft", lr=1e-2))


def test_checkpoints_that_record_no_fingerprint_are_refused(tmp_path):
    recipe = curated_run(tmp_path, *SFT)
    sft.run(recipe)
    for step in checkpoint.complete_checkpoints(tmp_path / "checkpoints" / "student"):
        (step / checkpoint.FINGERPRINT).unlink()  # as an earlier warmstart wrote them
    shutil.rmtree(tmp_path / "models" / "student")  # the stage is not done: it would resume
    with pytest.raises(WarmstartError, match="earlier warmstart that did not record"):
        sft.run(recipe)


def test_an_interrupted_run_with_the_same_settings_still_resumes(tmp_path, caplog):
    recipe = curated_run(tmp_path, *SFT)
    whole = weights(sft.run(recipe))
    # As a kill after step 2 leaves the run: step 2's checkpoint, no later one, no model.
    shutil.rmtree(tmp_path / "checkpoints" / "student" / "step-4")
    shutil.rmtree(tmp_path / "models" / "student")
    with caplog.at_level(logging.INFO, logger="warmstart"):
        resumed = weights(sft.run(recipe))
    assert "resuming from" in caplog.text and "step-2" in caplog.text
    for name in whole:
        torch.testing.assert_close(whole[name], resumed[name], rtol=0, atol=1e-6)


def test_a_resume_may_turn_on_the_knobs_of_memory_and_bookkeeping(tmp_path, caplog):
    # After an out-of-memory kill a user turns gradient checkpointing on (docs/memory.md): the same run
    # resumes, as compile, checkpoint_every and keep_checkpoints leave the results as they are.
    recipe = curated_run(tmp_path, *SFT)
    whole = weights(sft.run(recipe))
    shutil.rmtree(tmp_path / "checkpoints" / "student" / "step-4")
    shutil.rmtree(tmp_path / "models" / "student")
    knobs = ["sft.gradient_checkpointing=true", "sft.keep_checkpoints=3", "sft.checkpoint_every=1"]
    with caplog.at_level(logging.INFO, logger="warmstart"):
        resumed = weights(sft.run(small_recipe(tmp_path, *SFT, *knobs)))
    assert "resuming from" in caplog.text and "step-2" in caplog.text
    for name in whole:
        torch.testing.assert_close(whole[name], resumed[name], rtol=0, atol=1e-6)


GRPO = [
    "sft.steps=1",
    "grpo.init=base",
    "grpo.steps=2",
    "grpo.tasks_per_step=2",
    "grpo.group_size=2",
    "grpo.max_new_tokens=8",
    "grpo.checkpoint_every=1",
]


def test_grpo_records_its_fingerprint_and_refuses_checkpoints_of_other_settings(tmp_path):
    recipe = curated_run(tmp_path, *GRPO)
    sft.run(recipe)  # builds models/base
    grpo.run(recipe)
    found = checkpoint.complete_checkpoints(tmp_path / "checkpoints" / "student-grpo")
    assert {checkpoint.written_by(p) for p in found} == {stage_entry(tmp_path, "grpo:student-grpo")["fingerprint"]}
    with pytest.raises(WarmstartError, match="checkpoints of another grpo config"):
        grpo.run(with_section(recipe, "grpo", lr=1e-2))
