"""Sandboxed executions per second against a HumanEval-style multiprocessing executor, side by side.

    .venv/bin/python bench/sandbox_vs_multiprocessing.py [--quick]

The same programs on both sides: reference solutions of the python environment's own tasks
(src/warmstart/envs/python_tasks.jsonl, easy / medium / hard alike) with their hidden tests.

- warmstart: `PythonEnv.verify` — the program runs under bubblewrap (fresh user, pid, net, ipc, uts and
  mount namespaces per execution, tmpfs, rlimits, as nobody) through the pre-started sandboxed zygote;
  only the test calls run inside, the assertions are checked outside.
- peer: what HumanEval's harness does, written here (bench/humaneval_style.py): a `multiprocessing.Process`
  per execution that runs program + tests + `check(entry_point)` with `exec` in a temporary directory and
  is killed after a timeout; no isolation at all. It runs in its own lean interpreter (no torch to copy
  on each fork, as in a human-eval run), driven over a pipe from this process, so A B A B still holds.

Two modes, as each would run a batch: sequential, and a pool of one worker per core — warmstart's
`Verifier` as GRPO, eval and generate use it (forkserver workers started once per Verifier, each with its
own zygote, serving every batch: the steady state of a stage), the peer's thread pool submitting one
process per execution (human-eval's `evaluate_functional_correctness`). The systems alternate A B A B
over the repetitions; medians and ratios (warmstart / peer) are reported. The one-off cost of starting a
Verifier's workers is measured on its own, and shown as a row of its own: a batch whose workers are
started for it (`verify_all(env, pairs)`, what a stage's first batch pays).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from profiling import profile  # noqa: E402
from warmstart.envs.python import DEFAULT_TASKS, PythonEnv  # noqa: E402
from warmstart.envs.verification import Verifier, verify_all, verify_in_order  # noqa: E402

POOL_MODULE = "warmstart.envs.verification"  # what each worker imports (no torch)

TIMEOUT_S = 10.0  # per execution on both sides (warmstart's default env.options.wall_s)


class Peer:
    """bench/humaneval_style.py in its own lean interpreter (no warmstart, no torch), driven over a pipe, so
    its forks are as cheap as in a human-eval run; this process imports torch through warmstart.stages."""

    def __init__(self):
        script = Path(__file__).resolve().with_name("humaneval_style.py")
        self.process = subprocess.Popen(
            [sys.executable, str(script), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.executions = self.failed = 0  # reference solutions the peer wrongly failed (a stuck fork), if any

    def rate(self, batch: list[tuple[dict, str]], workers: int) -> float:
        self.process.stdin.write(json.dumps({"batch": batch, "workers": workers}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer executor died (exit {self.process.wait()})")
        answer = json.loads(line)
        self.executions += len(batch)
        self.failed += answer["failed"]
        return answer["rate"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


# --- the workload ----------------------------------------------------------------------------------


def programs(count: int) -> list[dict]:
    """`count` tasks spread over the file (every difficulty), each with its reference solution."""
    records = [json.loads(line) for line in DEFAULT_TASKS.read_text().splitlines() if line.strip()]
    step = max(1, len(records) // count)
    return records[::step][:count]


def seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer executions and repetitions (about a minute)")
    parser.add_argument("--executions", type=harness.positive_int, help="per measurement (default 200; quick 120)")
    parser.add_argument("--repetitions", type=harness.positive_int, help="A B rounds per mode (default 3)")
    parser.add_argument("--programs", type=harness.positive_int, default=12, help="distinct tasks cycled through")
    args = parser.parse_args()
    executions = args.executions or (120 if args.quick else 200)
    repetitions = args.repetitions or 3
    cores = os.cpu_count() or 1

    records = programs(args.programs)
    env = PythonEnv()
    by_id = {t.id: t for t in env.all_tasks}
    tasks = [by_id[f"python/{r['task_id']}"] for r in records]
    pairs = [(t, env.reference(t, None)) for t in tasks]
    batch = [pairs[i % len(pairs)] for i in range(executions)]
    peer_batch = [
        (records[i % len(records)], records[i % len(records)]["canonical_solution"]) for i in range(executions)
    ]

    def ours_sequential() -> float:
        started = time.perf_counter()
        verdicts = verify_in_order(env, batch)
        elapsed = time.perf_counter() - started
        assert all(v.passed for v in verdicts), [v.details for v in verdicts if not v.passed][:1]
        return executions / elapsed

    def ours_pool() -> float:  # the steady state: the Verifier's workers and zygotes already running
        return verified_rate(verifier.verify_all)

    def ours_pool_started_for_the_batch() -> float:  # a stage's first batch: workers and zygotes start
        return verified_rate(lambda chunk: verify_all(env, chunk))

    def verified_rate(verify) -> float:
        started = time.perf_counter()
        verdicts = verify(batch)
        elapsed = time.perf_counter() - started
        assert all(v.passed for v in verdicts)
        return executions / elapsed

    peer = Peer()

    def peer_sequential() -> float:
        return peer.rate(peer_batch, 1)

    def peer_pool() -> float:
        return peer.rate(peer_batch, cores)

    pool_mode = f"pool of {cores} workers"
    started_for_the_batch = "warmstart, workers started for the batch"
    modes = {
        "sequential": {"warmstart": ours_sequential, "peer": peer_sequential},
        pool_mode: {"warmstart": ours_pool, "peer": peer_pool, started_for_the_batch: ours_pool_started_for_the_batch},
    }
    spread = lambda xs: f"{min(xs):.0f}–{max(xs):.0f}"  # noqa: E731
    rows, results = [], {}
    with Verifier(env) as verifier:
        # Warm-up, not measured: starts this process's zygote and the Verifier's workers and zygotes, loads
        # the harness, fills the page cache on both sides.
        verify_in_order(env, pairs)
        verifier.verify_all(pairs * cores)
        peer.rate([(r, r["canonical_solution"]) for r in records], 1)
        for mode, systems in modes.items():
            measured = harness.interleaved(systems, repetitions)
            ours, theirs = harness.median(measured["warmstart"]), harness.median(measured["peer"])
            results[mode] = (ours, theirs)
            rows.append(
                [
                    mode,
                    f"{theirs:.1f} ({spread(measured['peer'])})",
                    f"**{ours:.1f}** ({spread(measured['warmstart'])})",
                    f"{ours / theirs:.2f}",
                ]
            )
            print(f"{mode:>22}: peer {theirs:7.1f}/s  warmstart {ours:7.1f}/s  ratio {ours / theirs:.2f}", flush=True)
        first = harness.median(measured[started_for_the_batch])
        rows.append(
            [
                f"{pool_mode}, started for the batch (one-off: a stage's first batch)",
                f"{theirs:.1f}",
                f"{first:.1f} ({spread(measured[started_for_the_batch])})",
                f"{first / theirs:.2f}",
            ]
        )
        print(
            f"{'pool started per batch':>22}: peer {theirs:7.1f}/s  warmstart {first:7.1f}/s  ratio {first / theirs:.2f}",
            flush=True,
        )
        # The one-off start, on its own: a small batch (one execution per worker) through workers started
        # for it against the same batch through the running ones, alternated.
        small = pairs[:cores]
        timings = harness.interleaved(
            {
                "fresh": lambda: seconds(lambda: verify_all(env, small)),
                "running": lambda: seconds(lambda: verifier.verify_all(small)),
            },
            repetitions,
        )
    startup_s = harness.median(timings["fresh"]) - harness.median(timings["running"])

    seq_rate, pool_rate = results["sequential"][0], results[pool_mode][0]
    pool_vs_seq = f"on batches of {executions} the running pool verifies at {pool_rate / seq_rate:.2f}× warmstart's own sequential path ({seq_rate:.0f}/s)"
    import_s = None
    if not args.quick:  # what each worker imports: this module (no torch), through the forkserver
        probe = f"import time; t = time.perf_counter(); import {POOL_MODULE}; print(time.perf_counter() - t)"
        import_s = float(
            subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        )
    imported = f"{import_s:.1f} s in a fresh interpreter, measured" if import_s else "not measured with --quick"
    prof_wall, prof_table = profile(lambda: verify_in_order(env, batch[: min(60, executions)]), top=6)
    peer.close()

    peer_failures = (
        (
            f"\nThe peer wrongly failed {peer.failed} of its {peer.executions} executions of reference solutions (counted in its time; a fork\n"
            "from its threaded parent can leave a child stuck on a lock until the timeout — human-eval shares this hazard).\n"
        )
        if peer.failed
        else ""
    )
    command = ".venv/bin/python bench/sandbox_vs_multiprocessing.py" + (" --quick" if args.quick else "")
    missed = [mode for mode, (ours, theirs) in results.items() if ours < theirs]
    goal = (
        "**Goal (≥ 1×, isolation for free): met in every mode** (the steady state; the one-off start below)."
        if not missed
        else (
            f"**Goal (≥ 1×, isolation for free): missed in {', '.join(missed)}** — "
            + "; ".join(
                f"{m}: {results[m][0]:.1f} vs {results[m][1]:.1f} executions/s, ratio {results[m][0] / results[m][1]:.2f}"
                for m in missed
            )
            + "."
        )
    )
    md = f"""## Sandbox: warmstart's bubblewrap sandbox vs a HumanEval-style multiprocessing executor

{harness.environment()}

Executions per second (median over {repetitions} A B rounds, min–max in brackets); {executions} executions per
measurement, cycling through {len(records)} tasks' reference solutions and hidden tests
({", ".join(sorted({r.get("difficulty", "?") for r in records}))}; {", ".join(r["task_id"].split("/")[-1] for r in records[:4])}, …). Peer (bench/humaneval_style.py, run in its own
lean interpreter): a `multiprocessing.Process` per execution (fork) running `exec` of program + tests + `check()` in a
temp dir with a {TIMEOUT_S:.0f} s timeout, no isolation; pool = a thread pool of {cores} submitting those processes. warmstart: `PythonEnv.verify` through the
sandboxed zygote (fresh namespaces per execution); pool = a `Verifier` as GRPO, eval and generate use it: {cores} forkserver
workers, each with its own zygote, started once per Verifier (once per stage) and serving every batch — the steady
state, measured with the workers running. Ratio = warmstart / peer. The last row is a batch whose workers are
started for it (`verify_all(env, pairs)` alone, or a stage's first batch): the one-off start included.

{harness.table(["mode", "peer (no isolation) /s", "warmstart (sandboxed) /s", "ratio"], rows)}

{goal}
{peer_failures}
Startup, once per Verifier (per GRPO run, eval or generate stage), not per batch: **{startup_s:.2f} s** — a batch of {cores}
executions through workers started for it, minus the same batch through running ones (medians of {repetitions}): {cores}
forkserver workers start side by side, each runs this script as its main module and imports `{POOL_MODULE}`
({imported}), takes the environment over its pipe and starts its zygote. (The first Verifier of a
process also starts multiprocessing's forkserver, once.) Once they run, {pool_vs_seq};
the peer's thread pool starts nothing but a fork per execution.
Sequentially the parent mostly waits on the zygote's pipe while the child unshares its namespaces, mounts its
tmpfs and runs the harness. Profile of {min(60, executions)} sequential executions (parent process):

{prof_table}

Reproduce: `{command}`
"""
    path = harness.write_section("sandbox", md)
    print(f"wrote {path}")


if __name__ == "__main__":
    harness.report_errors(main)
