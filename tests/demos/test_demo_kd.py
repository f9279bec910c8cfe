"""`warmstart demo --kd` at reduced size: every row trains from its signal and the report is complete."""

from __future__ import annotations

import json

from helpers import small_recipe
from warmstart.demos import kd_ablation as demo_kd
from warmstart.runs.directory import RunDir
from warmstart.runs.jsonl import read_records
from warmstart.types import Trajectory

SMALL = demo_kd.KdDemo(
    teacher_width=48, teacher_steps=30, teacher_lr=2e-3, kd_tasks=40, top_k=3, curve_every=5, onpolicy_curve_every=1
)


def test_the_kd_ablation_runs_every_row_at_equal_teacher_tokens(tmp_path):
    recipe = small_recipe(
        tmp_path,
        "sft.steps=10",
        "generate.max_new_tokens=48",
        "eval.k=2",
        "eval.max_new_tokens=48",
        "grpo.tasks_per_step=2",
        "grpo.group_size=2",
        "grpo.max_new_tokens=24",
        "curate.require_passed=false",  # a teacher this small and brief passes few tasks; its answers are still its tokens
        train=120,
        eval_=10,
    )
    report = demo_kd.run(recipe, SMALL).read_text()
    rows = [
        "base",
        "SFT on the teacher's tokens",
        "sparse KD, top-3",
        "dense KD, full logits",
        "SFT on half the teacher's tokens",
        "on-policy from base",
        "SFT on half, then on-policy",
        "teacher",
    ]
    for row in rows:
        assert f"| {row} |" in report
    stages = RunDir(recipe).manifest()["stages"]
    assert stages["sft:kd-sft"]["distill"]["signal"] == "tokens"
    assert stages["sft:kd-sparse"]["distill"]["signal"] == "topk"
    assert stages["sft:kd-dense"]["distill"]["signal"] == "logits"
    # Every offline row saw the same teacher data; on-policy rows spent at least its tokens and stopped there.
    data = read_records(RunDir(recipe).curated("kd-train"), Trajectory)
    assert data and all(t.logprobs for t in data)
    budget = sum(u.tokens_out for t in data for u in t.usage)
    onpolicy = stages["grpo:kd-onpolicy"]
    assert budget <= onpolicy["teacher_tokens"] < budget + max(h["teacher_tokens"] for h in onpolicy["history"]) + 1
    curves = json.loads((tmp_path / "kd-curves.json").read_text())
    assert [p["optimizer_steps"] for p in curves["dense KD, full logits"]] == [5, 10]
    assert all(0.0 <= p["pass@1"] <= 1.0 for points in curves.values() for p in points)
