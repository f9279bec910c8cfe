"""Which training an eval row's model took: this run's stages for this run's models only."""

from __future__ import annotations

import json

from warmstart.report.lineage import lineage, row_lineages

STAGES = {"sft:student": {"train_seconds": 40.0, "flops_estimate": 9e9, "init": "hf:/old/place/models/base"}}


def test_a_model_of_another_run_directory_has_no_lineage_here(tmp_path):
    here, other = tmp_path / "here", tmp_path / "other"
    for root in (here, other):
        (root / "models" / "student").mkdir(parents=True)
    results = {
        "policies": {
            "student": {"policy": f"hf:{here}/models/student"},
            "their student": {"policy": f"hf:{other}/models/student"},  # same name, another run's model
            "moved": {"policy": "hf:/where/the/run/was/models/student"},  # this run, since moved: by name
            "teacher": {"policy": "openai:gpt-4o"},
        }
    }
    lineages = row_lineages(results, STAGES, here)
    assert lineages["student"].stages == ["sft:student"] and lineages["student"].seconds == 40.0
    assert lineages["moved"].stages == ["sft:student"]
    assert lineages["their student"] is None and lineages["teacher"] is None


def model_dir(root, name: str, weights: bytes):
    path = root / "models" / name
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_a_copy_of_this_run_is_told_from_another_run_by_its_records_or_its_files(tmp_path):
    """A run copied with its original in place: results.json names the original's models. The same eval
    (or training) record in both manifests, or the same model files, make the row this run's; another run's
    model of the same name, with other files and records, is not."""
    here, original, other = tmp_path / "here", tmp_path / "original", tmp_path / "other"
    model_dir(here, "student", b"weights")
    model_dir(original, "student", b"weights")
    model_dir(other, "student", b"other weights")
    stages = {**STAGES, "eval": {"fingerprint": "e1", "finished": 50.0}}
    results = {
        "policies": {
            "copied": {"policy": f"hf:{original}/models/student"},
            "theirs": {"policy": f"hf:{other}/models/student"},
        }
    }
    lineages = row_lineages(results, stages, here)
    assert lineages["copied"].stages == ["sft:student"] and lineages["theirs"] is None
    # The original trained again since the copy (other files), but its manifest records the eval that wrote
    # these results: the row is still this run's.
    (original / "models" / "student" / "model.safetensors").write_bytes(b"retrained")
    (original / "manifest.json").write_text(json.dumps({"stages": {"eval": stages["eval"]}}))
    assert row_lineages(results, stages, here)["copied"].stages == ["sft:student"]


def test_a_row_costs_what_made_its_model_or_is_unknown():
    """sft trained the student again after GRPO had started from it: the GRPO row's chain would add the new
    student's training. A failed last run, or a record without its numbers, is no row's cost either."""
    base = {"train_seconds": 10.0, "flops_estimate": 1e9, "seconds": 11.0}
    stages = {
        "sft:student": {**base, "finished": 300.0, "init": "hf:/run/models/base"},
        "grpo:student-grpo": {**base, "finished": 200.0, "init": "hf:/run/models/student"},
    }
    grpo_row = lineage("student-grpo", stages, scored_at=400.0)
    assert grpo_row.unknown == (
        "sft:student made models/student again after grpo:student-grpo used it (its record is of the new model)"
    )
    assert lineage("student", stages, scored_at=400.0).unknown is None
    assert "after the eval used it" in lineage("student", stages, scored_at=250.0).unknown
    stages["sft:student"] |= {"finished": 100.0}
    assert lineage("student-grpo", stages, scored_at=400.0).seconds == 20.0
    stages["sft:student"] |= {"status": "failed"}
    assert lineage("student-grpo", stages, scored_at=400.0).unknown.startswith("sft:student's last run failed")
    stages["sft:student"] |= {"status": "done", "train_seconds": None}
    assert "no train_seconds" in lineage("student", stages).unknown  # was a TypeError
