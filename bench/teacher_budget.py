"""Teacher requests saved by budget-aware sampling, and the bill estimate against the actual bill.

The teacher is the tests' loopback OpenAI-compatible server (tests/fake_api.py) through the official SDK,
answering each arithmetic task right with a known probability (by the problem's first non-zero digit:
1-4 always, 5-6 never, 7-9 half the time) and writing replies of 30-400 words, priced at $1 / $4 per
million prompt / completion tokens. A sample's verdict depends only on the task and the sample's index,
so every mode sees the same draws: what differs is only which samples it asks for.

    .venv/bin/python bench/teacher_budget.py [--tasks 400]

Counts, not seconds: the same on any machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake server lives with the tests
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from fake_api import FakeAPI, Teacher  # noqa: E402
from warmstart.config import load_recipe  # noqa: E402
from warmstart.runs.jsonl import read_records  # noqa: E402
from warmstart.stages import generate  # noqa: E402
from warmstart.stages.common import latest_attempts  # noqa: E402
from warmstart.types import Trajectory  # noqa: E402

MODES = {
    "fixed: samples_per_task = 4": ["generate.samples_per_task=4"],
    "stop_after_verified = 1, max 4": ["generate.stop_after_verified=1", "generate.max_samples_per_task=4"],
    "adaptive: probe 2, max 4": [
        "generate.samples_per_task=2",
        "generate.max_samples_per_task=4",
        "generate.adaptive=true",
    ],
    "adaptive + stop_after_verified = 1: probe 2, max 4": [
        "generate.samples_per_task=2",
        "generate.max_samples_per_task=4",
        "generate.adaptive=true",
        "generate.stop_after_verified=1",
    ],
}


def pass_rate(problem: str) -> float:
    digit = int(next((c for c in problem if c.isdigit() and c != "0"), "1"))  # "0+0": always
    return 1.0 if digit <= 4 else 0.0 if digit <= 6 else 0.5


def recipe(root: Path, api: FakeAPI, tasks: int, *overrides: str):
    prices = root / "prices.toml"
    prices.write_text('[models."fake-model"]\ninput = 1.0\noutput = 4.0\n')
    return load_recipe(
        None,
        [
            f"run.dir='{root / str(abs(hash(overrides)))}'",
            f"tasks.train={tasks}",
            "tasks.eval=20",
            f"generate.teacher='openai:fake-model@{api.url}/v1'",
            f"api.prices='{prices}'",
            *overrides,
        ],
    )


def verified(out: Path) -> tuple[int, int]:
    records = latest_attempts(read_records(out, Trajectory))
    return len({t.task_id for t in records if t.verdict.passed}), sum(t.verdict.passed for t in records)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=harness.positive_int, default=400)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, FakeAPI(teacher=Teacher(pass_rate=pass_rate)) as api:
        for name, overrides in MODES.items():
            before = len(api.log)
            out = generate.run(recipe(Path(tmp), api, args.tasks, *overrides))
            tasks, chains = verified(out)
            rows.append((name, len(api.log) - before, tasks, chains))
    with tempfile.TemporaryDirectory() as tmp, FakeAPI(teacher=Teacher(verbose=True)) as api:
        job = recipe(Path(tmp), api, args.tasks, "generate.samples_per_task=2", "generate.max_new_tokens=600")
        estimate = json.loads(generate.run(job, pilot_only=True).read_text())
        generate.run(job)
        actual = sum(b["prompt"] * 1.0 + b["completion"] * 4.0 for b in api.billed) / 1e6
    print(f"{args.tasks} tasks; a sample's verdict is fixed by (task, index), so every mode sees the same draws\n")
    print("| mode | teacher requests | vs fixed | tasks with a verified chain | verified chains |")
    print("|---|---|---|---|---|")
    for name, requests, tasks, chains in rows:
        print(f"| {name} | {requests} | {requests / rows[0][1]:.0%} | {tasks} | {chains} |")
    print(
        f"\nestimate from a pilot of {estimate['pilot_tasks']} tasks: ${estimate['usd']:.4f} "
        f"(95 % range ${estimate['usd_range'][0]:.4f}-${estimate['usd_range'][1]:.4f}), {estimate['requests']} requests; "
        f"actual: ${actual:.4f}, {len(api.log)} requests; error {estimate['usd'] / actual - 1:+.1%}"
    )


if __name__ == "__main__":
    harness.report_errors(main)
