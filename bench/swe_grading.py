"""Seconds to grade one swe task with the real-suite grader, over the bundled task set.

    scripts/mine-swe-tasks.sh                       # once: swe-tasks/ (not committed)
    .venv/bin/python bench/swe_grading.py [--quick] [--tasks-dir swe-tasks]

For every task, sequentially: the reference solution (the original file put back) and the empty patch
are graded by `SweEnv.verify` (a fresh tree, pytest in the sandbox over the task's fail-to-pass and
pass-to-pass tests, the JUnit XML read). Reports the median, 90th percentile and worst seconds per
grading, per package and overall, and checks that the reference scores 1 and the empty patch 0 on every
task (the benchmark fails otherwise). The goal: a median under 10 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import harness  # noqa: E402
from warmstart.envs.swe.env import SweEnv, SweOptions  # noqa: E402
from warmstart.types import Provenance, Trajectory  # noqa: E402


def timed_verify(env: SweEnv, task, trajectory) -> tuple[float, float]:
    started = time.perf_counter()
    verdict = env.verify(task, trajectory)
    return time.perf_counter() - started, verdict.reward


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="every fourth task only")
    parser.add_argument("--tasks-dir", default=str(ROOT.parent / "swe-tasks"))
    args = parser.parse_args()
    env = SweEnv(SweOptions(tasks_dir=args.tasks_dir))
    tasks = env.all_tasks[::4] if args.quick else env.all_tasks
    seconds: dict[str, list[float]] = defaultdict(list)
    wrong = []
    for task in tasks:
        reference = env.reference(task, None)
        empty = Trajectory(
            task_id=task.id,
            policy="empty",
            messages=list(task.prompt),
            provenance=Provenance(provider="bench", model="empty-patch", created=time.time()),
        )
        for kind, trajectory, expected in (("reference", reference, 1.0), ("empty patch", empty, 0.0)):
            spent, reward = timed_verify(env, task, trajectory)
            seconds[task.meta["repo"]].append(spent)
            if reward != expected:
                wrong.append(f"{task.id} {kind}: {reward}")
        print(f"{task.id}: {seconds[task.meta['repo']][-2]:.2f} s, {seconds[task.meta['repo']][-1]:.2f} s", flush=True)
    if wrong:
        raise SystemExit(f"wrong scores: {wrong}")
    everything = [s for values in seconds.values() for s in values]
    rows = [
        [
            repo,
            str(len(values) // 2),
            f"{statistics.median(values):.2f}",
            f"{quantile(values, 0.9):.2f}",
            f"{max(values):.2f}",
        ]
        for repo, values in sorted(seconds.items())
    ]
    rows.append(
        [
            "all",
            str(len(tasks)),
            f"{statistics.median(everything):.2f}",
            f"{quantile(everything, 0.9):.2f}",
            f"{max(everything):.2f}",
        ]
    )
    for row in rows:
        print(" | ".join(row))
    command = ".venv/bin/python bench/swe_grading.py" + (" --quick" if args.quick else "")
    md = f"""## swe: grading one task with the package's own test suite

Seconds per grading (`SweEnv.verify`: a fresh tree, pytest in the sandbox over the task's fail-to-pass and
pass-to-pass tests, the JUnit XML read), sequential, each task graded twice: its reference solution (scored 1
on every task) and the empty patch (scored 0 on every task). Goal: median under 10 s.

{harness.table(["package", "tasks", "median s", "p90 s", "max s"], rows)}

{harness.environment()}

Reproduce: `scripts/mine-swe-tasks.sh && {command}`
"""
    print(f"wrote {harness.write_section('swe_grading', md)}")


if __name__ == "__main__":
    harness.report_errors(main)
