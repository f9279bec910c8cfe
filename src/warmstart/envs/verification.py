"""Verifying batches: in order here, or side by side in a pool of worker processes where verification is
a subprocess (python's and repo's sandboxes).

A stage that verifies many batches (grpo once per step, eval and generate once per chunk) owns one
`Verifier` for all of them:

    with Verifier(env) as verifier:
        for batch in batches:
            verdicts = verifier.verify_all(batch)

Its workers start on the first batch that needs them and stay until the with-block ends, so what each
one starts for the environment (python's sandboxed zygote) serves every batch: the start (the workers,
side by side, run the parent's main module, import this one and start their zygotes: ~0.3 s) is paid
once per stage, not once per batch. `verify_all(env, pairs)` is the one-batch form.

The workers are plain forkserver processes, each fed chunks over its own pipe, rather than a
concurrent.futures.ProcessPoolExecutor kept alive: that one starts workers on demand, and a worker
that dies while another is being started is missed by its clean-up, which then waits for it forever
(seen with CPython 3.11); and its idle workers outlive a parent killed with SIGKILL (the OOM killer).
Here every worker starts with the pool, a dead one shows as the end of its pipe, and a worker whose
parent is gone reads the end of its pipe, closes its environment and exits.

A worker answers each verification as it finishes it, so the parent knows which one a worker is on: with a
`timeout`, a verification that has not returned after it (a plugin's `verify` waiting forever) is an infra
error naming the bound, its worker is killed and replaced, and the rest of its chunk goes on. Only a
worker process can be stopped from outside, which is why a plugin's environment that can be pickled
verifies in one even where its `verify_workers` is 1 (`verifies_in_worker`, envs/plugins.py).

A module of its own, outside `stages`, on purpose: a worker imports the module of the function it runs,
and importing anything under `warmstart.stages` imports the training stages and with them torch and
transformers — seconds per worker (measured: a batch of 200 sandboxed executions through a pool
started for it ran at 8.6/s against 54/s sequentially). This module and the environments import neither.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from ..errors import WarmstartError
from ..types import Task, Trajectory, Verdict
from .base import Environment

log = logging.getLogger(__name__)

Pairs = list[tuple[Task, Trajectory]]

# A batch goes out in several chunks per worker rather than one share each: a worker that drew quick
# programs takes the next chunk, and an interrupted batch only waits for the chunks already running.
CHUNKS_PER_WORKER = 4
READY = "ready"  # a worker's first message: it has the environment
STOP_GRACE_S = 5.0  # how long a stopping stage waits for a worker to finish the chunk it is on


class Verifier:
    """Verdicts for the batches of one stage, in order. Environments that verify in subprocesses
    (`verify_workers > 1`) are verified by `verify_workers` worker processes that live as long as this
    object (until `close`, or the end of its with-block), so a batch's programs run side by side and
    each worker's environment, zygote included, is started once for all batches. Everything else is
    verified here, in order. The workers get the environment as it is when they start."""

    def __init__(self, env: Environment, timeout: float | None = None):
        self.env = env
        self.timeout = timeout  # seconds one verification in a worker may take (env.verify_timeout); None: no bound
        self._workers: list[Worker] = []

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        self.close(stopping=exc_type is not None)  # on an exception or Ctrl-C too: see close

    def verify_all(self, pairs: Pairs) -> list[Verdict]:
        if not self._uses_pool(pairs):
            return verify_in_order(self.env, pairs)
        try:
            return self._verify_in_pool(pairs)
        except WorkerDied as died:
            # Killed from outside (out of memory?): fresh workers verify the batch once more.
            log.warning("verification: %s; verifying the batch again with fresh workers", died)
        try:
            return self._verify_in_pool(pairs)
        except WorkerDied as died:
            raise WarmstartError(
                f"verification: {died}, twice on the same batch of {len(pairs)} ({died.cause})"
            ) from None

    def close(self, stopping: bool = False) -> None:
        """Stop the workers: each finishes the chunk it is on, closes its environment (python's zygote)
        and exits; this waits for all of them. One still on its chunk after the timeout, or `STOP_GRACE_S`
        where the stage is `stopping` (an error, Ctrl-C: nobody waits for its verdicts), is killed; its
        sandbox dies with it. Idempotent."""
        workers, self._workers = self._workers, []
        wait_s = self.timeout if not stopping else min(STOP_GRACE_S, self.timeout or STOP_GRACE_S)
        for worker in workers:
            worker.stop_reading()
        for worker in workers:
            worker.join(wait_s)

    def _uses_pool(self, pairs: Pairs) -> bool:
        if getattr(self.env, "verifies_in_worker", False):
            return True  # only a worker can be stopped when the plugin's verify never returns
        # A single pair is not worth starting workers for; once they run, they take every batch.
        return self.env.verify_workers > 1 and (bool(self._workers) or len(pairs) >= 2)

    def _verify_in_pool(self, pairs: Pairs) -> list[Verdict]:
        if not self._workers:
            self._workers = start_workers(self.env, self.env.verify_workers)
        chunks = split_in_order(pairs, len(self._workers) * CHUNKS_PER_WORKER)
        try:
            results = run_chunks(self._workers, chunks, Bound(self.env, self.timeout))
        except BaseException:
            self.close(stopping=True)  # a batch cut short (a dead worker, an error, Ctrl-C) may leave answers unread
            raise
        return [verdict for chunk in results for verdict in chunk]


def verify_all(env: Environment, pairs: Pairs) -> list[Verdict]:
    """Verdicts of one batch, in order, through a Verifier of its own: a stage that verifies several
    batches keeps one `Verifier` instead, so its workers start once."""
    with Verifier(env) as verifier:
        return verifier.verify_all(pairs)


def verify_in_order(env: Environment, pairs: Pairs) -> list[Verdict]:
    return [env.verify(task, trajectory) for task, trajectory in pairs]


def split_in_order(pairs: Pairs, at_most: int) -> list[Pairs]:
    """At most `at_most` contiguous chunks of near-equal size; joined in order they give `pairs` back."""
    size = max(1, math.ceil(len(pairs) / max(1, at_most)))
    return [pairs[start : start + size] for start in range(0, len(pairs), size)]


# --- the workers, seen from the parent -----------------------------------------------------------------


class WorkerDied(Exception):
    """A worker process ended while it owed an answer, or before it could take a chunk."""

    def __init__(self, message: str, exit_code: int | None):
        super().__init__(message)
        self.exit_code = exit_code

    @property
    def cause(self) -> str:
        """What its exit code says: a signal came from outside; a code of its own, the environment's code
        (its verify, or a library it calls) ended the process."""
        if self.exit_code is not None and self.exit_code > 0:
            return "it ended itself: the environment's verify, or a library it calls, exited the process"
        return "killed from outside, or out of memory: see the system log"


@dataclass
class Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection  # the parent's end of the worker's pipe
    # The worker's temporary directories all go here (its `tempfile.tempdir`); removed once it has ended, so
    # a verification killed past env.verify_timeout (an swe grading's copy of a repository) leaves nothing.
    tmp: str = ""

    def send(self, message: Environment | Pairs) -> None:
        try:
            self.connection.send(message)
        except OSError:  # the worker's end is closed: it died while idle
            raise self.died() from None

    def receive(self) -> Verdict:
        """The verdict of the next pair of the chunk the worker is on."""
        try:
            verdict, error = self.connection.recv()
        except (EOFError, OSError):  # the end of its pipe before an answer: it died on this chunk
            raise self.died() from None
        if error is not None:
            raise error  # the environment's own exception, as it would have raised in-process
        return verdict

    def wait_ready(self) -> None:
        """Until the worker has the environment (unpickling it imports its modules: seconds, which are not
        the first verification's); one error saying why where it could not load it."""
        try:
            message = self.connection.recv()
        except (EOFError, OSError):
            raise self.died() from None
        if message != READY:
            raise WarmstartError(f"a verification worker could not load the environment: {message}")

    def died(self) -> WorkerDied:
        self.process.join(timeout=5.0)
        self.remove_tmp()
        code = self.process.exitcode
        return WorkerDied(f"verification worker {self.process.pid} died (exit code {code})", code)

    def stop_reading(self) -> None:
        self.connection.close()  # the end of the worker's input: it exits after the chunk it is on

    def join(self, timeout: float | None = None) -> None:
        self.process.join(timeout)
        if self.process.is_alive():  # still on a verification past the bound: its environment is not closed
            self.kill()
        else:
            self.remove_tmp()

    def kill(self) -> None:
        """Stop it now (its sandbox dies with it: bubblewrap's --die-with-parent)."""
        self.process.kill()
        self.process.join()
        self.connection.close()
        self.remove_tmp()

    def remove_tmp(self) -> None:
        if self.tmp and not self.process.is_alive():
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_workers(env: Environment, count: int) -> list[Worker]:
    workers: list[Worker] = []
    try:
        for _ in range(count):
            workers.append(start_worker())
        for worker in workers:
            # The environment goes over the pipe, not with the start: a start whose data fills the pipe
            # (python's tasks: ~120 KB) waits for that worker to import its modules, one worker after another.
            worker.send(env)
        for worker in workers:
            worker.wait_ready()
    except BaseException:  # Ctrl-C while starting, or a worker that died: none of them is left behind
        for worker in workers:
            worker.stop_reading()
            worker.join()
        raise
    return workers


def start_worker() -> Worker:
    # forkserver: forking this process (torch threads running) could deadlock a child.
    context = multiprocessing.get_context("forkserver")
    ours, theirs = context.Pipe()
    tmp = tempfile.mkdtemp(prefix="warmstart-verifier-")
    os.chmod(tmp, 0o755)  # sandboxes (as `nobody`) reach directories made inside it
    # daemon: should its Verifier never be closed, multiprocessing still stops it as this process exits.
    process = context.Process(target=serve, args=(theirs, tmp), name="warmstart-verifier", daemon=True)
    process.start()
    theirs.close()  # the worker holds the only other copy: once this process is gone, its reads end
    return Worker(process, ours, tmp)


@dataclass
class Bound:
    """How long one verification in a worker may take, and whose (for the verdict that says it did not return)."""

    env: Environment
    seconds: float | None

    def timed_out(self) -> Verdict:
        return Verdict(
            reward=0.0,
            passed=False,
            infra_error=f"{self.env.name}.verify did not return within {self.seconds:g} s (env.verify_timeout); "
            "its worker process was stopped",
        )


@dataclass
class Job:
    """A chunk on a worker: `done` of its pairs answered, the next due by `deadline` (monotonic seconds)."""

    worker: Worker
    index: int
    chunk: Pairs
    done: int
    deadline: float


def run_chunks(workers: list[Worker], chunks: list[Pairs], bound: Bound) -> list[list[Verdict]]:
    """Each chunk to the next idle worker; the answers in the chunks' order. A worker past the bound on a
    pair is replaced in `workers` by a fresh one; that pair's verdict says so, and the rest of its chunk
    goes on."""
    results: list[list[Verdict]] = [[] for _ in chunks]
    waiting = collections.deque(enumerate(chunks))
    idle, busy = list(workers), {}
    while waiting or busy:
        while idle and waiting:
            worker, (index, chunk) = idle.pop(), waiting.popleft()
            worker.send(chunk)
            busy[worker.connection] = Job(worker, index, chunk, 0, due(bound))
        for connection in wait(list(busy), timeout=seconds_left(busy.values())):
            job = busy[connection]  # readable: an answer, or the end of a dead worker's pipe
            results[job.index].append(job.worker.receive())
            job.done, job.deadline = job.done + 1, due(bound)
            if job.done == len(job.chunk):
                idle.append(busy.pop(connection).worker)
        for job in [job for job in busy.values() if job.deadline <= time.monotonic()]:
            del busy[job.worker.connection]
            results[job.index].append(bound.timed_out())
            if job.done + 1 < len(job.chunk):  # the chunk's results stay in order: its rest goes first
                waiting.appendleft((job.index, job.chunk[job.done + 1 :]))
            idle.append(replaced(workers, job.worker, bound.env))
    return results


def due(bound: Bound) -> float:
    return math.inf if bound.seconds is None else time.monotonic() + bound.seconds


def seconds_left(jobs) -> float | None:
    nearest = min((job.deadline for job in jobs), default=math.inf)
    return None if nearest == math.inf else max(0.0, nearest - time.monotonic())


def replaced(workers: list[Worker], stuck: Worker, env: Environment) -> Worker:
    """A fresh worker in `stuck`'s place (which is killed: a verification cannot be stopped otherwise)."""
    stuck.kill()
    fresh = start_worker()
    workers[workers.index(stuck)] = fresh
    fresh.send(env)
    fresh.wait_ready()
    return fresh


# --- the workers, seen from inside -------------------------------------------------------------------


def serve(connection: Connection, tmp: str | None = None) -> None:
    """A worker: take the environment, then verify the chunks that come in with it (so one zygote for
    all batches) until the parent closes its end of the pipe, or dies; then close the environment. A
    worker ends with os._exit, which runs no atexit hooks or weakref finalizers: hence the explicit close."""
    # Ctrl-C reaches the whole process group; the parent's Verifier stops the workers in order instead
    # (each closing its zygote), where a worker killed by it mid-chunk would leave its zygote behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if tmp is not None:
        tempfile.tempdir = tmp  # the parent removes it once this process has ended, killed or not
    try:
        env = connection.recv()
    except (EOFError, ConnectionError):
        return
    except Exception as exc:  # noqa: BLE001 - unpickling it here failed (a module this process cannot import)
        with contextlib.suppress(ConnectionError):  # said to the parent, not as "died (exit code 1)"
            connection.send(f"{type(exc).__name__}: {exc}")
        return
    try:
        connection.send(READY)
    except ConnectionError:
        return
    try:
        while True:
            try:
                chunk = connection.recv()
            except EOFError:
                return
            for message in answers(env, chunk):
                connection.send(message)
    except ConnectionError:
        return  # the parent stopped listening mid-chunk (Ctrl-C, an error elsewhere): nothing to answer
    finally:
        close = getattr(env, "close", None)
        if close is not None:
            close()


def answers(env: Environment, chunk: Pairs):
    """(verdict, None) per pair as each is verified (the parent sees which one a worker is on), or (None, the
    exception the environment raised, to raise in the parent), which ends the chunk."""
    for task, trajectory in chunk:
        try:
            verdict = env.verify(task, trajectory)
        except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it
            yield None, travelling(exc)
            return
        yield verdict, None


def travelling(exc: Exception) -> Exception:
    """`exc`, or its traceback as text where it cannot be pickled: it must arrive, not fail the parent's read."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an exception that cannot travel
        return RuntimeError("verification failed in a worker:\n" + "".join(traceback.format_exception(exc)))
