"""A policy whose requests are answered by the cluster's rollout workers; the driver keeps the books.

`RayPolicy.rollout` splits a batch into one contiguous piece per worker and gathers the pieces as they
come back. For each piece the driver writes the replies the worker received to the response cache (the
one file, as a local run writes it), adds its request tally, and keeps one record per (task, sample
index) (`results.merge`): a record that came back twice, from a piece asked again, is kept once. The
stage writes the records; nothing in a worker writes a file.

The workers start with the first batch, so that a dollar cap set after the policy is made
(`share_budget`) is among their arguments, and a restarted worker keeps it. A worker killed mid-piece is
restarted by Ray (`ray.max_restarts`) and the piece is asked of it again (`max_task_retries`): the
requests of that piece it had already sent are sent again (their replies died with it), nothing else
is. Past its restarts the stage stops with one line.

A piece that fails (an error in its worker) is raised once the other pieces are back: what they and it had
answered is kept, replies and tallies included, as a local policy's stopped call hands the stage what had
finished (`policies.api.finished_rollouts`).
"""

from __future__ import annotations

import logging

import ray

from ..config import PolicySpec, Recipe
from ..envs.base import Environment
from ..envs.verification import split_in_order
from ..policies import make_policy
from ..policies.spec import resolve
from ..runs.budget import BudgetGuard
from ..types import Request, Sampling, Trajectory
from .budget import SharedBudget
from .limiter import limits_actor
from .results import add_tally, gather, merge, piece_of
from .workers import Piece, WorkerPlan, spawn_workers

log = logging.getLogger(__name__)
API_KINDS = ("openai", "anthropic")
LIMIT_WINDOW_S = 60.0  # the providers' window for RPM and TPM


class RayPolicy:
    """The `policies.base.Policy` of a recipe with `[ray]` (see the module docstring)."""

    def __init__(self, spec: str, plan: WorkerPlan, books=None):
        self.spec, self.plan = spec, plan
        # An API policy made here, never asked: its response cache (the file), request tally and backend.
        self.books = books
        self.request_tally = books.request_tally if books is not None else None
        self.budget: SharedBudget | None = None
        self.workers: list = []

    @property
    def backend(self):
        return self.books.backend

    @classmethod
    def start(
        cls, spec: PolicySpec, env: Environment, key: str, recipe: Recipe, window_s: float = LIMIT_WINDOW_S
    ) -> RayPolicy:
        """The policy, its workers to start with the first batch (and, for an API, the cluster's limits)."""
        resolved = resolve(spec, recipe)
        api = resolved.kind in API_KINDS
        books = make_policy(resolved, env, key, recipe) if api else None  # its client is never opened
        limits = None
        if api and (recipe.api.rpm or recipe.api.tpm):
            limits = limits_actor(recipe.api.rpm, recipe.api.tpm, window_s, str(resolved))
        replies = ray.put(books.cache.replies if api else {})
        plan = WorkerPlan(resolved, ray.put(env), key, recipe, limits, replies)
        return cls(books.spec if api else str(resolved), plan, books)

    def share_budget(self, guard: BudgetGuard) -> SharedBudget:
        """The dollar cap kept for every worker's requests together (before the first batch)."""
        assert not self.workers, "the workers are started with their budget"
        self.budget = SharedBudget(guard)
        return self.budget

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        workers = self.started_workers()
        pieces = split_in_order(requests, len(workers))
        refs = [worker.rollout.remote(piece, sampling, seed) for worker, piece in zip(workers, pieces)]
        answered: dict[tuple[str, int], Trajectory] = {}
        try:
            failure = self.gather_pieces(refs, answered)
        finally:
            if self.books is not None:
                self.books.cache.close()  # everything the workers received made durable
        keys = [(r.task.id, r.sample_index) for r in requests]
        if failure is not None:
            # As a local policy's stopped call: what had finished was paid for, and the stage keeps it.
            failure.finished_rollouts = [answered[key] for key in keys if key in answered]
            raise failure
        return [answered[key] for key in keys]

    def gather_pieces(self, refs: list, answered: dict) -> Exception | None:
        """Every piece kept as it comes back; the first piece's error, returned once all are back. A failed
        piece does not drop the others: what they answered was paid for (with a served model without a price
        they end at once, the cluster's budget refusing their next requests: `budget.BudgetActor`)."""
        failure = None
        while refs:
            [done], refs = ray.wait(refs, num_returns=1)
            try:
                piece = gather(done, self.spec)
            except Exception as exc:  # noqa: BLE001 - raised by `rollout` once the other pieces are kept
                failure, piece = failure or exc, piece_of(exc)
            if piece is not None:
                self.keep(piece, answered)
        return failure

    def started_workers(self) -> list:
        """The workers, started and each holding its policy (a constructor's error raised here, one line)."""
        if not self.workers:
            self.workers = spawn_workers(self.plan, self.budget)
            pids = [gather(ref, self.plan.key) for ref in [w.pid.remote() for w in self.workers]]
            log.info("%s: %d ray workers (pids %s)", self.plan.key, len(pids), ", ".join(map(str, pids)))
        return self.workers

    def keep(self, piece: Piece, answered: dict) -> None:
        """A piece's replies into the response cache, its tally into the policy's, its records merged."""
        if self.books is not None:
            for key, reply in piece.replies:
                if self.books.cache.get(key) is None:
                    self.books.cache.put(key, reply)
            add_tally(self.request_tally, piece.tally)
        merge(answered, piece.trajectories)

    def close(self) -> None:
        workers, self.workers = self.workers, []
        for worker in workers:
            ray.kill(worker, no_restart=True)

    def __enter__(self) -> RayPolicy:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
