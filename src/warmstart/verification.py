"""Verifying a batch: in order here, or side by side in a process pool where verification is a subprocess.

A module of its own, outside `stages`, on purpose: a pool worker imports the module of the function it
runs, and importing anything under `warmstart.stages` imports the training stages and with them torch
and transformers — seconds per worker, paid by every batch (measured: a pool batch of 200 sandboxed
executions ran at 8.6/s against 54/s sequentially, most of it worker start-up). This module and the
environments import neither.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from .envs.base import Environment
from .types import Task, Trajectory, Verdict


def verify_all(env: Environment, pairs: list[tuple[Task, Trajectory]]) -> list[Verdict]:
    """Verdicts in order. Environments that verify in subprocesses (`verify_workers > 1`, e.g. python's
    sandbox) are verified by a process pool, so a batch's programs run side by side; each worker runs
    one sandbox at a time. Everything else is verified here, in order."""
    if env.verify_workers <= 1 or len(pairs) < 2:
        return verify_in_order(env, pairs)
    # One share per worker, interleaved for balance: each worker gets the environment once, so what it
    # starts (python's sandboxed zygote) serves its whole share. forkserver: forking this process
    # (torch threads running) could deadlock a child.
    workers = min(env.verify_workers, len(pairs))
    shares = [pairs[w::workers] for w in range(workers)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        results = list(pool.map(verify_in_order, [env] * workers, shares))
    verdicts: list[Verdict] = [None] * len(pairs)  # type: ignore[list-item]
    for w, share in enumerate(results):
        verdicts[w::workers] = share
    return verdicts


def verify_in_order(env: Environment, pairs: list[tuple[Task, Trajectory]]) -> list[Verdict]:
    return [env.verify(task, trajectory) for task, trajectory in pairs]
