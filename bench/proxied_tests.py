"""Executions per second of tests of any shape (through the proxy) against literal-call tests, and
against a HumanEval-style multiprocessing executor, side by side.

    .venv/bin/python bench/proxied_tests.py [--quick]

Sequential grading of reference solutions, A B rounds, medians:

- the python environment's own 48 tasks (src/warmstart/envs/python_tasks.jsonl, literal-call tests):
  warmstart's literal path (only the calls run in the sandbox, one isolated process each), the same tasks
  forced through the proxy path (the test in one isolated process, the candidate in another, a fresh
  interpreter), and the peer (bench/humaneval_style.py: a forked process per execution, no isolation);
- 160 HumanEval-format tasks whose tests need the proxy (loops, helpers, random inputs, computed
  arguments: tests/envs/humaneval_format_tasks.py builds them): warmstart's proxy path and the peer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests" / "envs"))
from humaneval_format_tasks import humaneval_style_tasks  # noqa: E402

import harness  # noqa: E402
from sandbox_vs_multiprocessing import Peer, programs  # noqa: E402
from warmstart.envs.python import PythonEnv, PythonOptions  # noqa: E402
from warmstart.envs.python_tests import proxy_tests  # noqa: E402
from warmstart.envs.verification import verify_in_order  # noqa: E402


def proxied(task, record: dict):
    """The same task with its test forced through the proxy."""
    hidden = {
        **task.hidden,
        **proxy_tests(
            [record["prompt"], record["test"]], [f"check({record['entry_point']})\n"], [record["entry_point"]]
        ),
    }
    return task.model_copy(update={"hidden": hidden})


def rate(env: PythonEnv, pairs: list) -> float:
    started = time.perf_counter()
    verdicts = verify_in_order(env, pairs)
    elapsed = time.perf_counter() - started
    assert all(v.passed for v in verdicts), [v.details for v in verdicts if not v.passed][:1]
    return len(pairs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one pass per system instead of three")
    args = parser.parse_args()
    repetitions = 1 if args.quick else 3

    records = programs(48)
    env = PythonEnv()
    by_id = {t.id: t for t in env.all_tasks}
    literal = [(by_id[f"python/{r['task_id']}"], r) for r in records]
    literal_pairs = [(t, env.reference(t, None)) for t, _ in literal]
    proxy_pairs = [(proxied(t, r), reference) for (t, r), (_, reference) in zip(literal, literal_pairs)]
    peer_literal = [(r, r["canonical_solution"]) for r in records]

    general = humaneval_style_tasks()
    path = Path("/tmp/warmstart-bench-humaneval-format.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in general))
    general_env = PythonEnv(PythonOptions(tasks_file=str(path)))
    general_pairs = [(t, general_env.reference(t, None)) for t in general_env.all_tasks]
    peer_general = [(r, r["canonical_solution"]) for r in general]

    peer = Peer()
    rate(env, literal_pairs[:4]), rate(env, proxy_pairs[:4]), rate(general_env, general_pairs[:4])  # warm-up
    peer.rate(peer_literal[:4], 1)
    measured = harness.interleaved(
        {
            "literal path": lambda: rate(env, literal_pairs),
            "proxy path": lambda: rate(env, proxy_pairs),
            "peer": lambda: peer.rate(peer_literal, 1),
            "proxy path, 160 tasks": lambda: rate(general_env, general_pairs),
            "peer, 160 tasks": lambda: peer.rate(peer_general, 1),
        },
        repetitions,
    )
    peer.close()
    env.close()
    general_env.close()
    m = {name: harness.median(values) for name, values in measured.items()}
    rows = [
        ["48 literal-call tasks", "warmstart literal path", f"{m['literal path']:.1f}", "1.00"],
        [
            "48 literal-call tasks",
            "warmstart proxy path",
            f"{m['proxy path']:.1f}",
            f"{m['proxy path'] / m['literal path']:.2f}",
        ],
        ["48 literal-call tasks", "peer (no isolation)", f"{m['peer']:.1f}", f"{m['peer'] / m['literal path']:.2f}"],
        [
            "160 HumanEval-format tasks",
            "warmstart proxy path",
            f"{m['proxy path, 160 tasks']:.1f}",
            f"{m['proxy path, 160 tasks'] / m['literal path']:.2f}",
        ],
        [
            "160 HumanEval-format tasks",
            "peer (no isolation)",
            f"{m['peer, 160 tasks']:.1f}",
            f"{m['peer, 160 tasks'] / m['literal path']:.2f}",
        ],
    ]
    for row in rows:
        print(" | ".join(row), flush=True)
    command = ".venv/bin/python bench/proxied_tests.py" + (" --quick" if args.quick else "")
    md = f"""## Tests of any shape: the proxy path against the literal path and the peer

Sequential executions per second (reference solutions, all passing), median of {repetitions} A B round(s); ratio =
this row / warmstart's literal path. The proxy path runs the test in one isolated process and the candidate in
another (a fresh interpreter, so nothing of the test reaches it), talking over two pipes; the literal path runs
only the test's calls in one isolated process and checks the assertions outside. Peer: bench/humaneval_style.py
(a forked process per execution, no isolation).

{harness.table(["tasks", "system", "executions/s", "ratio to literal"], rows)}

{harness.environment()}

Reproduce: `{command}`
"""
    print(f"wrote {harness.write_section('proxied_tests', md)}")


if __name__ == "__main__":
    harness.report_errors(main)
