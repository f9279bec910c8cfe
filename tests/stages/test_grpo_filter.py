"""`grpo.task_filter = "learnable"`: the filter runs every N steps, only tasks passed sometimes are trained
on, its cost is recorded apart from training's, and a run stopped mid-period resumes onto the same tasks."""

from __future__ import annotations

import json
import zlib

import pytest
import torch
from safetensors.torch import load_file

from helpers import curated_run
from warmstart.envs.arithmetic import Arithmetic
from warmstart.envs.base import final_assistant_text
from warmstart.stages import grpo, sft
from warmstart.types import Verdict

SETTINGS = [
    "sft.steps=1",
    "grpo.init=base",
    "grpo.steps=6",
    "grpo.tasks_per_step=2",
    "grpo.group_size=4",
    "grpo.max_new_tokens=10",
    "grpo.lr=1e-2",
    "grpo.task_filter=learnable",
    "grpo.task_filter_samples=4",
    "grpo.task_filter_every=3",
    "grpo.checkpoint_every=2",
    "grpo.keep_checkpoints=5",
]


# Each window of 6 candidates (2 tasks per step x a refresh every 3 steps) holds one task of each flat
# kind and four coin flips: enough learnable ones that the pool is not topped up.
KINDS = ("always", "coin", "never", "coin", "coin", "coin")


def kind(task) -> str:
    return task.hidden["kind"]


def coin(trajectory) -> bool:
    """A fair coin per sampled reply (the parity of its checksum): the same reply, the same side."""
    return zlib.crc32((final_assistant_text(trajectory) or "").encode()) % 2 == 0


class ThreeKinds(Arithmetic):
    """Tasks an untrained model always passes, never passes, or passes on a coin flip: only the
    coin-flip ones are learnable."""

    def tasks(self, split, n, seed):
        tasks = super().tasks(split, n, seed)
        return [t.model_copy(update={"hidden": {**t.hidden, "kind": KINDS[i % 6]}}) for i, t in enumerate(tasks)]

    def verify(self, task, trajectory):
        passed = {"always": True, "never": False}.get(kind(task), coin(trajectory))
        return Verdict(reward=float(passed), passed=passed)


def trained_tasks(monkeypatch) -> list[list[str]]:
    """Records, per step, the tasks of the groups the step trained on."""
    seen, collect = [], grpo.collect

    def spy(*args, **kwargs):
        groups, cursor, stats = collect(*args, **kwargs)
        seen.append([g.samples[0].task for g in groups])
        return groups, cursor, stats

    monkeypatch.setattr(grpo, "collect", spy)
    return seen


def grpo_history(run_dir) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]["grpo:student-grpo"]


def test_only_tasks_passed_sometimes_are_trained_on_and_the_filter_is_counted(tmp_path, monkeypatch):
    recipe = curated_run(tmp_path, *SETTINGS)
    sft.run(recipe)  # builds models/base
    seen = trained_tasks(monkeypatch)
    grpo.run(recipe, env=ThreeKinds())

    stage = grpo_history(tmp_path)
    history = stage["history"]
    refreshes = {h["step"]: h["task_filter"] for h in history if "task_filter" in h}
    assert sorted(refreshes) == [1, 4]
    for record in refreshes.values():
        assert record["candidates"] == 2 * 3 and record["topped_up"] == 0  # enough coin tasks: no fallback
        assert record["learnable"] == record["pool"] == sum(record["pass_counts"][1:-1])
    assert [h["filter_rollouts"] for h in history] == [24, 0, 0, 24, 0, 0]  # 6 candidates x 4 samples
    trained = [t for step in seen for t in step]
    assert trained, "no group was trained on: the test would prove nothing"
    assert {kind(t) for t in trained} == {"coin"}
    assert stage["filter_rollouts"] == 48 and stage["rollouts"] == sum(h["rollouts"] for h in history)
    assert stage["task_filter"]["refreshes"] == 2 and stage["task_filter"]["topped_up_refreshes"] == 0
    scalars = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in scalars if r["stage"] == "grpo:student-grpo"]
    assert [r["step"] for r in logged if "filter_learnable" in r] == [1, 4]
    assert all("flat_groups" in r and "filter_rollouts" in r for r in logged)


def test_a_run_stopped_mid_period_resumes_onto_the_same_pool(tmp_path, monkeypatch):
    runs = {name: curated_run(tmp_path / name, *SETTINGS) for name in ("whole", "cut")}
    for recipe in runs.values():
        sft.run(recipe)
    grpo.run(runs["whole"], env=ThreeKinds())

    step = grpo.grpo_step

    def stop_at_step_3(*args, **kwargs):  # after the checkpoint of step 2, before the refresh of step 4
        if args[4] == 3:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(grpo, "grpo_step", stop_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        grpo.run(runs["cut"], env=ThreeKinds())
    monkeypatch.setattr(grpo, "grpo_step", step)
    grpo.run(runs["cut"], env=ThreeKinds())  # step 3 draws from the pool of step 1's refresh, checkpointed

    whole, cut = (tmp_path / "whole", tmp_path / "cut")
    timeless = [
        [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in grpo_history(d)["history"]]
        for d in (whole, cut)
    ]
    assert timeless[0] == timeless[1]
    a, b = (load_file(d / "models" / "student-grpo" / "model.safetensors") for d in (whole, cut))
    base = load_file(whole / "models" / "base" / "model.safetensors")
    assert any(not torch.equal(a[k], base[k]) for k in a), "RL never updated the policy: the test would prove nothing"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
