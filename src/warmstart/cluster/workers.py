"""The rollout workers: actors holding one policy each, answering the pieces of a batch sent to them.

An API teacher's worker holds one async client (`api.concurrency` requests in flight per worker); it asks
the cluster's `LimitsActor` before each request (and the stage's `BudgetActor` under a dollar cap), and
it writes nothing: the replies it receives go to a `WorkerCache` and back to the driver with the piece's
records, and the driver writes them to the response cache. A local model's worker holds the model on
the GPU Ray gave it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass, field

import ray

from ..config import PolicySpec, Recipe
from ..errors import WarmstartError
from ..policies import make_policy
from ..policies.api import RequestTally, finished_rollouts
from ..policies.backend import Reply
from ..types import Request, Sampling, Trajectory
from .budget import current_actor
from .limiter import SharedRateLimiter


class WorkerCache:
    """The response cache inside a worker: the driver's replies as they were when the worker started, and
    the replies this worker received since, handed back (`take`) for the driver to write."""

    def __init__(self, replies: dict[str, Reply]):
        self.replies = dict(replies)
        self.fresh: list[tuple[str, Reply]] = []

    def get(self, key: str) -> Reply | None:
        return self.replies.get(key)

    def put(self, key: str, reply: Reply) -> None:
        self.replies[key] = reply
        self.fresh.append((key, reply))

    def close(self) -> None:
        pass  # nothing on disk here: the driver's cache makes the replies durable

    def take(self) -> list[tuple[str, Reply]]:
        fresh, self.fresh = self.fresh, []
        return fresh


@dataclass
class Piece:
    """What a worker sends back for one piece of a batch."""

    trajectories: list[Trajectory]
    replies: list[tuple[str, Reply]] = field(default_factory=list)  # new replies, for the response cache
    tally: RequestTally | None = None  # what its requests came to since the last piece (an API policy's)


@dataclass
class WorkerPlan:
    """What every worker of a policy is started with. The environment and the cached replies are in the
    object store once for all of them, and held there by this plan for a restart (Ray logs that a lost
    argument would fail one; these are not lost)."""

    spec: PolicySpec
    env: ray.ObjectRef
    key: str  # the recipe setting, for errors
    recipe: Recipe
    limits: object | None  # the cluster's LimitsActor, where api.rpm or api.tpm is set
    replies: ray.ObjectRef


@ray.remote
class RolloutWorker:
    def __init__(self, spec: PolicySpec, env, key: str, recipe: Recipe, limits, replies: dict, budget):
        """`replies`: the driver's cached replies when the stage started (a restart gets the same). A restart
        first gives back what the killed worker held: its requests in flight never settle."""
        if ray.get_runtime_context().was_current_actor_reconstructed:
            me = current_actor()
            ray.get(
                [actor.forget.remote(me) for actor in (limits, getattr(budget, "actor", None)) if actor is not None]
            )
        self.policy = make_worker_policy(spec, env, key, recipe)
        if self.policy.request_tally is not None:  # an API policy: the limits are the cluster's, the cache the driver's
            self.policy.cache = WorkerCache(replies)
            if limits is not None:
                self.policy.limiter = SharedRateLimiter(limits, recipe.api.tpm)
            self.policy.budget = budget

    def pid(self) -> int:
        return os.getpid()

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> Piece:
        try:
            trajectories = self.policy.rollout(requests, sampling, seed)
        except Exception as stop:
            # What had finished was paid for: its records, replies and tally travel with the error (`piece_of`).
            stop.piece = self.piece(finished_rollouts(stop))
            raise
        return self.piece(trajectories)

    def piece(self, trajectories: list[Trajectory]) -> Piece:
        """`trajectories` with the replies and the request tally since the last piece."""
        tally = self.policy.request_tally
        if tally is None:
            return Piece(trajectories)
        self.policy.request_tally = RequestTally(worst_case_s=tally.worst_case_s)
        return Piece(trajectories, self.policy.cache.take(), tally)


def make_worker_policy(spec: PolicySpec, env, key: str, recipe: Recipe):
    """`policies.make_policy` with the run directory swapped for a scratch one, removed at once: an API
    policy opens the run's response cache as it is made (the directory made, the file read), and a worker
    neither reads the driver's files nor writes on its node (its cache is a `WorkerCache`)."""
    with tempfile.TemporaryDirectory(prefix="warmstart-worker-") as scratch:
        run = recipe.run.model_copy(update={"dir": scratch})
        return make_policy(spec, env, key, recipe.model_copy(update={"run": run}))


def spawn_workers(plan: WorkerPlan, budget) -> list:
    """The policy's rollout actors (`budget`: the stage's `SharedBudget`, or None)."""
    options, count = worker_options(plan.spec, plan.recipe), worker_count(plan.spec, plan.recipe)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if options.get("num_gpus") and count > gpus:  # the rest would wait for a GPU forever
        raise WarmstartError(f"ray.workers = {count}: each worker of a local model holds a GPU; the cluster has {gpus}")
    run = uuid.uuid4().hex[:8]  # named (`ray list actors`, the logs) and distinct from another stage's
    arguments = (plan.spec, plan.env, plan.key, plan.recipe, plan.limits, plan.replies, budget)
    return [
        RolloutWorker.options(**options, name=f"warmstart-rollout-{run}-{i}").remote(*arguments) for i in range(count)
    ]


def worker_count(spec: PolicySpec, recipe: Recipe) -> int:
    """`ray.workers`, or one per GPU for a local model (one without GPUs), one per CPU otherwise."""
    if recipe.ray.workers is not None:
        return recipe.ray.workers
    resources = ray.cluster_resources()
    if spec.is_local_model:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1)))


def worker_options(spec: PolicySpec, recipe: Recipe) -> dict:
    """A local model's worker holds a GPU where there is one to hold; every worker is restarted on death."""
    restarts = recipe.ray.max_restarts
    options = {"max_restarts": restarts, "max_task_retries": restarts}
    gpus = ray.cluster_resources().get("GPU", 0)
    if spec.is_local_model and recipe.run.device in ("auto", "cuda") and gpus >= 1:
        options["num_gpus"] = 1
    return options
