"""The peer of bench/sandbox_vs_multiprocessing.py: a HumanEval-style executor, written here, no isolation.

A `multiprocessing.Process` per execution (fork) runs program + tests + `check(entry_point)` with `exec`
in a temporary directory and is killed after a timeout, as human-eval's `check_correctness` does (which
passes its result back through a `Manager` started per call; here the exit code carries it, which is
faster). A pool is a thread pool submitting those processes (human-eval's evaluate_functional_correctness).

It imports nothing from warmstart: run as `python bench/humaneval_style.py --serve`, it is a lean parent
(as a human-eval run would be) whose forks copy no torch; the benchmark sends it one JSON command per
line and reads back executions per second.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

TIMEOUT_S = 10.0


def _run_program(source: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:  # human-eval's create_tempdir + chdir
        os.chdir(tmp)
        try:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                exec(source, {"__name__": "__check__"})
        except BaseException:  # noqa: BLE001 - any failure of the program is a failed check
            os._exit(1)
    os._exit(0)


def check_correctness(record: dict, completion: str, timeout_s: float = TIMEOUT_S) -> bool:
    """One execution: prompt + completion + test + check(entry_point) in a new process, with a timeout."""
    source = f"{record['prompt']}{completion}\n\n{record['test']}\n\ncheck({record['entry_point']})\n"
    process = multiprocessing.get_context("fork").Process(target=_run_program, args=(source,))
    process.start()
    process.join(timeout_s + 1)
    if process.is_alive():
        process.kill()
        process.join()
        return False
    return process.exitcode == 0


def rate(batch: list[tuple[dict, str]], workers: int) -> tuple[float, int]:
    """Executions per second, and how many reference solutions failed (none should; a fork from a
    threaded parent can, rarely, leave a child stuck on a lock another thread held: human-eval's hazard too)."""
    started = time.perf_counter()
    if workers <= 1:
        ok = [check_correctness(r, c) for r, c in batch]
    else:
        with ThreadPoolExecutor(workers) as pool:
            ok = list(pool.map(lambda rc: check_correctness(*rc), batch))
    elapsed = time.perf_counter() - started
    return len(batch) / elapsed, ok.count(False)


def serve() -> None:
    """One command per stdin line: {"batch": [[record, completion], ...], "workers": N} -> {"rate", "failed"} per line."""
    for line in sys.stdin:
        command = json.loads(line)
        per_second, failed = rate([tuple(p) for p in command["batch"]], command["workers"])
        print(json.dumps({"rate": per_second, "failed": failed}), flush=True)


if __name__ == "__main__" and "--serve" in sys.argv:
    serve()
