"""Sandboxed executions per second against a plain subprocess per execution, side by side, one run.

    python bench/sandbox_throughput.py [--runs 200]

Each execution grades one trivial program (`add(a, b)`, three test calls) through the python
environment's harness: once under bubblewrap (new namespaces, rlimits, tmpfs, as `nobody`), once as a
plain `python3` subprocess with the same harness and no isolation (`unsafe_no_sandbox`). Both
sequentially and through the verification process pool (one worker per core). Reports executions/s
and the ratio sandboxed / plain.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from warmstart.envs.python import PythonEnv, PythonOptions
from warmstart.stages.common import verify_all
from warmstart.types import Message, Provenance, Trajectory

TASK = {
    "task_id": "add",
    "prompt": 'def add(a, b):\n    """Return a + b."""\n',
    "canonical_solution": "    return a + b\n",
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n    assert candidate(10, 5) == 15\n",
}


def rate(env: PythonEnv, runs: int, pool: bool) -> float:
    task = env.all_tasks[0]
    reply = Message(role="assistant", content="```python\ndef add(a, b):\n    return a + b\n```")
    pairs = [(task, Trajectory(task_id=task.id, policy="bench", messages=[*task.prompt, reply], provenance=Provenance(provider="b", model="b", created=0)))] * runs
    started = time.perf_counter()
    verdicts = verify_all(env, pairs) if pool else [env.verify(t, tr) for t, tr in pairs]
    elapsed = time.perf_counter() - started
    assert all(v.passed for v in verdicts)
    return runs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "task.jsonl"
        path.write_text(json.dumps(TASK) + "\n")
        sandboxed = PythonEnv(PythonOptions(tasks_file=str(path)))
        plain = PythonEnv(PythonOptions(tasks_file=str(path), unsafe_no_sandbox=True))
        print(f"{args.runs} executions each; pool = {sandboxed.verify_workers} worker processes")
        print(f"{'mode':>12} {'plain /s':>9} {'sandboxed /s':>13} {'ratio':>6}")
        for pool in (False, True):
            ours, theirs = rate(sandboxed, args.runs, pool), rate(plain, args.runs, pool)
            print(f"{'pool' if pool else 'sequential':>12} {theirs:>9.1f} {ours:>13.1f} {ours / theirs:>6.2f}")


if __name__ == "__main__":
    main()
