"""Verification on the cluster: sandbox actors, each holding the environment (python's zygote) for the
whole stage, as the local pool's worker processes do (`envs.verification`), and bounded as they are.

A batch goes out in several chunks per actor (`CHUNKS_PER_WORKER`, as locally), each chunk to the next idle
actor, and comes back in order. A chunk is sent as one call per pair, all at once: an actor runs its calls
in the order they came, so the driver knows which pair each actor is on (its first unanswered call) and
since when (the answer before it). A pair not answered within `env.verify_timeout` is the same infra error
as locally (`envs.verification.Bound`); its actor is killed (`ray.kill`: a call cannot be stopped otherwise)
and replaced by a fresh one, which verifies the rest of the chunk. An actor that dies (killed from outside,
its node lost) is restarted by Ray with the same environment and its calls asked again; a verdict is a pure
function of the task and the answer, so nothing is counted twice.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import ray

from ..envs.base import Environment
from ..envs.verification import CHUNKS_PER_WORKER, STOP_GRACE_S, Bound, Pairs, due, seconds_left, split_in_order
from ..types import Task, Trajectory, Verdict
from .results import gather

WHERE = "verification"  # what an error of an actor is said to come from
CLOSE_WAIT_S = 30  # for the actors to close their environments at the end of a stage, then they are killed


@ray.remote
class VerifyWorker:
    def __init__(self, env: Environment):
        self.env = env

    def ready(self) -> None:
        """Answered once the actor holds the environment (unpickling it imports its modules: seconds that are
        not the first verification's, and its bound must not count them)."""

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        return self.env.verify(task, trajectory)

    def close(self) -> None:
        close = getattr(self.env, "close", None)  # python's zygote: stopped before the actor is killed
        if close is not None:
            close()


@dataclass
class Job:
    """A chunk on the actor of slot `slot`: one call per pair, `done` of them answered, the next due by
    `deadline` (monotonic seconds)."""

    slot: int
    index: int  # the chunk's place in the batch
    chunk: Pairs
    calls: list  # the ObjectRefs of the pairs' verdicts, in the chunk's order
    done: int
    deadline: float

    @property
    def current(self):
        """The call the actor is on: it runs them in order."""
        return self.calls[self.done]

    @property
    def rest(self) -> Pairs:
        """The pairs after the one the actor is on."""
        return self.chunk[self.done + 1 :]


class RayVerifier:
    """`envs.verification.Verifier`'s interface over `count` actors (a with-block stops them)."""

    def __init__(self, shared_env, count: int, options: dict, bound: Bound):
        self.shared_env = shared_env  # the environment in the object store, held for a restarted actor
        self.count, self.options, self.bound = count, options, bound
        # Started now, not with the first batch: they load the environment while the first rollouts run.
        self.actors = self.spawn_all()

    @classmethod
    def start(cls, env: Environment, count: int, max_restarts: int, timeout: float | None) -> RayVerifier:
        """`timeout`: seconds one verification may take (env.verify_timeout); None: no bound."""
        options = {"max_restarts": max_restarts, "max_task_retries": max_restarts}
        return cls(ray.put(env), count, options, Bound(env, timeout))

    def spawn(self):
        return VerifyWorker.options(**self.options).remote(self.shared_env)

    def spawn_all(self) -> list:
        return [self.spawn() for _ in range(self.count)]

    def verify_all(self, pairs: Pairs) -> list[Verdict]:
        if not pairs:
            return []
        self.actors = self.actors or self.spawn_all()  # fresh ones after a batch cut short (it closes them)
        chunks = split_in_order(pairs, len(self.actors) * CHUNKS_PER_WORKER)
        try:
            wait_ready(self.actors)
            results = self.run_chunks(chunks)
        except BaseException:
            # A batch cut short (an error, Ctrl-C) leaves calls queued on the actors, or one that never returns.
            self.close(stopping=True)
            raise
        return [verdict for chunk in results for verdict in chunk]

    def run_chunks(self, chunks: list[Pairs]) -> list[list[Verdict]]:
        """Each chunk to the next idle actor; the answers in the chunks' order. An actor past the bound on a
        pair is replaced; that pair's verdict says so, and the rest of its chunk goes on."""
        results: list[list[Verdict]] = [[] for _ in chunks]
        waiting = collections.deque(enumerate(chunks))
        idle, busy = list(range(len(self.actors))), {}  # busy: a job by the call its actor is on
        while waiting or busy:
            while idle and waiting:
                job = self.submit(idle.pop(), *waiting.popleft())
                busy[job.current] = job
            answered, _ = ray.wait(list(busy), num_returns=1, timeout=seconds_left(busy.values()))
            for call in answered:
                job = busy.pop(call)
                results[job.index].append(gather(call, WHERE))
                job.done, job.deadline = job.done + 1, due(self.bound)
                if job.done < len(job.chunk):
                    busy[job.current] = job
                else:
                    idle.append(job.slot)
            for job in expired(busy):
                del busy[job.current]
                results[job.index].append(self.bound.timed_out())
                if job.rest:  # the chunk's results stay in order: its rest goes first
                    waiting.appendleft((job.index, job.rest))
                idle.append(self.replace(job.slot))
        return results

    def submit(self, slot: int, index: int, chunk: Pairs) -> Job:
        actor = self.actors[slot]
        calls = [actor.verify.remote(task, trajectory) for task, trajectory in chunk]
        return Job(slot, index, chunk, calls, 0, due(self.bound))

    def replace(self, slot: int) -> int:
        """A fresh actor in the slot of one stuck on a verification, which is killed without a restart (Ray's
        would ask its queued calls again, the stuck one first); the fresh one is up before it gets a call."""
        ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self.spawn()
        wait_ready([self.actors[slot]])
        return slot

    def close(self, stopping: bool = False) -> None:
        """Stop the actors: each closes its environment (python's zygote) once its calls are answered, and is
        killed after `CLOSE_WAIT_S`, or `STOP_GRACE_S` where the stage is `stopping` (an error, Ctrl-C: nobody
        waits for its verdicts; one stuck on a verification would never get to its close). Idempotent."""
        actors, self.actors = self.actors, []
        if not actors:
            return
        seconds = self.bound.seconds
        # Closing, no call is in flight: closing an environment takes moments, so not the verification bound
        # (300 s by default, none where env.verify_timeout is off, which had waited forever on a stuck close).
        wait_s = CLOSE_WAIT_S if not stopping else min(STOP_GRACE_S, seconds or STOP_GRACE_S)
        try:
            ray.wait([actor.close.remote() for actor in actors], num_returns=len(actors), timeout=wait_s)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)

    def __enter__(self) -> RayVerifier:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        self.close(stopping=exc_type is not None)


def expired(busy: dict) -> list[Job]:
    """The jobs past their deadline whose call has not answered. `ray.wait` hands back one answered call at
    a time, and the driver can be held up for seconds (starting a replacement actor loads the environment):
    calls answered meanwhile are past their deadline when they are looked at, and are collected by the next
    wait, not counted as stuck (which had scored them as infra errors and killed their actors, in a cascade
    as each replacement held the driver up again)."""
    now = time.monotonic()
    late = [job for job in busy.values() if job.deadline <= now]
    if not late:
        return []
    answered, _ = ray.wait([job.current for job in late], num_returns=len(late), timeout=0)
    answered = set(answered)
    return [job for job in late if job.current not in answered]


def wait_ready(actors: list) -> None:
    """Until every actor holds the environment; a constructor's error raised here, one line."""
    for call in [actor.ready.remote() for actor in actors]:
        gather(call, WHERE)
