"""Verification on the cluster: sandbox actors, each holding the environment (python's zygote) for the
whole stage, as the local pool's worker processes do (`envs.verification`).

A batch goes out in several pieces per actor (`CHUNKS_PER_WORKER`, as locally) and comes back in order.
An actor that dies is restarted by Ray with the same environment and its piece verified again; a
verdict is a pure function of the task and the answer, so nothing is counted twice.
"""

from __future__ import annotations

import ray

from ..envs.base import Environment
from ..envs.verification import CHUNKS_PER_WORKER, Pairs, split_in_order, verify_in_order
from ..types import Verdict
from .results import gather


@ray.remote
class VerifyWorker:
    def __init__(self, env: Environment):
        self.env = env

    def verify(self, pairs: Pairs) -> list[Verdict]:
        return verify_in_order(self.env, pairs)

    def close(self) -> None:
        close = getattr(self.env, "close", None)  # python's zygote: stopped before the actor is killed
        if close is not None:
            close()


class RayVerifier:
    """`envs.verification.Verifier`'s interface over `count` actors (a with-block stops them)."""

    def __init__(self, actors: list, shared_env):
        self.actors = actors
        self.shared_env = shared_env  # the environment in the object store, held for a restarted actor

    @classmethod
    def start(cls, env: Environment, count: int, max_restarts: int) -> RayVerifier:
        options = {"max_restarts": max_restarts, "max_task_retries": max_restarts}
        shared_env = ray.put(env)
        return cls([VerifyWorker.options(**options).remote(shared_env) for _ in range(count)], shared_env)

    def verify_all(self, pairs: Pairs) -> list[Verdict]:
        if not pairs:
            return []
        pieces = split_in_order(pairs, len(self.actors) * CHUNKS_PER_WORKER)
        refs = [self.actors[i % len(self.actors)].verify.remote(piece) for i, piece in enumerate(pieces)]
        return [verdict for ref in refs for verdict in gather(ref, "verification")]

    def close(self) -> None:
        actors, self.actors = self.actors, []
        if not actors:
            return
        try:
            ray.wait([actor.close.remote() for actor in actors], num_returns=len(actors), timeout=30)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)

    def __enter__(self) -> RayVerifier:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
