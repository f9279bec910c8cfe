"""The bundled task set (scripts/mine-swe-tasks.sh writes swe-tasks/, not committed): enough tasks from
enough packages, and on a sample of them the reference scores 1 and the empty patch 0 (every task:
bench/swe_grading.py, which fails otherwise)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from warmstart.envs.sandbox import bubblewrap as sandbox
from warmstart.envs.swe.env import SweEnv, SweOptions
from warmstart.types import Provenance, Trajectory

BUNDLED = Path(__file__).resolve().parents[3] / "swe-tasks"
pytestmark = pytest.mark.skipif(
    not any(BUNDLED.glob("*/manifest.json")) or sandbox.bwrap_path() is None,
    reason="the bundled swe task set is absent (run scripts/mine-swe-tasks.sh) or bwrap is not installed",
)


def test_the_bundled_set_is_large_and_solved_by_the_reference():
    env = SweEnv(SweOptions(tasks_dir=str(BUNDLED)))
    per_package = Counter(t.meta["repo"] for t in env.all_tasks)
    assert len(env.all_tasks) >= 50 and len(per_package) >= 2, per_package
    assert {t.split for t in env.all_tasks} == {"train", "eval"}
    sample = [next(t for t in env.all_tasks if t.meta["repo"] == repo) for repo in sorted(per_package)]
    for task in sample:
        assert env.verify(task, env.reference(task, None)).reward == 1.0, task.id
        empty = Trajectory(
            task_id=task.id,
            policy="empty",
            messages=list(task.prompt),
            provenance=Provenance(provider="test", model="empty", created=time.time()),
        )
        assert env.verify(task, empty).reward == 0.0, task.id
