"""The calculator environment end to end with a real tiny model: multi-turn SFT data, multi-turn GRPO
rollouts and the tool-use columns of eval, through the real CLI (`warmstart run --rl`)."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import TINY

SMALL = [
    "env.name=calculator",
    "env.max_turns=3",
    "tasks.train=300",
    "tasks.eval=16",
    "sft.steps=12",
    "sft.checkpoint_every=6",
    "grpo.steps=2",
    "grpo.tasks_per_step=2",
    "grpo.group_size=2",
    "grpo.max_new_tokens=40",
    "grpo.max_refills=0",
    "eval.k=2",
    "eval.max_new_tokens=40",
    *TINY,
]


def test_calculator_runs_multi_turn_sft_grpo_and_eval(tmp_path):
    args = [arg for override in [f"run.dir='{tmp_path}'", *SMALL] for arg in ("--set", override)]
    result = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "run", "--rl", "examples/calculator.toml", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]

    curated = [json.loads(line) for line in (tmp_path / "curated" / "train.jsonl").read_text().splitlines()]
    roles = {tuple(m["role"] for m in t["messages"]) for t in curated}
    assert roles == {("user", "assistant", "tool", "assistant"), ("user", "assistant")}  # large and small tasks

    stages = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert stages["grpo:student-grpo"]["steps"] == 2
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(summary["rows"]) == {"base", "student", "teacher", "student + GRPO"}
    teacher = summary["policies"]["teacher"]
    assert teacher["tool_use"] == {
        "large": 1.0,
        "small": 0.0,
    }  # the reference calls the tool exactly when numbers are large
    assert 0.7 <= teacher["pass@1"] < 1.0  # and slips in the head
    assert "uses tool" in result.stdout and "large 100%" in result.stdout
