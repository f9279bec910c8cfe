"""Which training an eval row's model took: this run's stages for this run's models only."""

from __future__ import annotations

from warmstart.report.lineage import row_lineages

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
