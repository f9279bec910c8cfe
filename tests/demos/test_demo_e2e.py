"""The whole demo through the real CLI, at reduced size: every stage runs, the table is complete."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import TINY

SMALL = [
    "tasks.train=200",
    "tasks.eval=20",
    "sft.steps=15",
    "sft.checkpoint_every=5",
    "eval.k=2",
    "eval.max_new_tokens=48",
    "grpo.steps=2",
    "grpo.tasks_per_step=2",
    "grpo.group_size=2",
    "grpo.max_new_tokens=24",
    "grpo.max_refills=0",
    *TINY,
]
ROWS = {
    "base",
    "teacher",
    "student",
    "student, answer only",
    "student, unverified data",
    "student + GRPO",
    "base + GRPO (cold start)",
}


def demo(run_dir) -> subprocess.CompletedProcess:
    args = [arg for override in SMALL for arg in ("--set", override)]
    return subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "demo", "--dir", str(run_dir), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_runs_every_stage_and_reports_every_row(tmp_path):
    first = demo(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(summary["policies"]) == ROWS
    for name, row in summary["policies"].items():
        assert 0.0 <= row["pass@1"] <= row["pass@2"] <= 1.0, name
        assert row["tasks"] == 20 and row["samples_per_task"] == 2
    assert 0.6 <= summary["policies"]["teacher"]["pass@1"] < 1.0  # the reference slips 10 % of the time
    assert "| student, answer only |" in (tmp_path / "report.md").read_text()
    assert "held-out pass@k" in first.stdout

    dropped = json.loads((tmp_path / "curated" / "train.dropped.json").read_text())
    assert dropped["input"] == 200 and dropped["kept"] < 200  # verification caught the slips
    unverified = json.loads((tmp_path / "curated" / "unverified.dropped.json").read_text())
    assert unverified["kept"] == 200
    answer_only = (tmp_path / "curated" / "answer-only.jsonl").read_text()
    assert '"reasoning":null' in answer_only.replace(" ", "") and "carry" not in answer_only

    stages = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    for stage in (
        "generate:teacher",
        "curate:train",
        "sft:student",
        "sft:student-answer-only",
        "sft:student-unverified",
        "grpo:student-grpo",
        "grpo:cold-grpo",
        "eval",
    ):
        assert stage in stages
    assert stages["grpo:cold-grpo"]["zero_variance_fraction"] == 1.0  # an untrained base never earns a reward
    assert stages["grpo:cold-grpo"]["updates"] == 0
    assert "| base + GRPO (cold start) |" in (tmp_path / "report.md").read_text()
    # A rerun of a finished demo does no work and changes nothing.
    before = (tmp_path / "eval" / "results.json").read_bytes()
    second = demo(tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stderr.count("already done") >= 10
    assert (tmp_path / "eval" / "results.json").read_bytes() == before
