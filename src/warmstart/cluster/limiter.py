"""API rate limits shared by every rollout worker of the cluster: one actor holds the windows.

Each worker's requests ask `LimitsActor` before they are sent and tell it when they are over, so
`api.rpm` and `api.tpm` hold for the cluster as a whole, not once per worker. The actor runs the
same `policies.limits.RateLimiter` a local run uses, so its rule is the same: a request counts from the
moment it is let through until a full window after its end reached the actor (later than the reply came
back: a little conservative, never over the limit). It is an async actor: the waits of all workers'
requests run side by side on its event loop, and the limiter's check-then-append stays atomic.
"""

from __future__ import annotations

import itertools

import ray

from ..policies.limits import RateLimiter
from .budget import ACTOR_CALLS, current_actor


# Restarted, its calls asked again, whenever it dies: its windows start empty, which only the requests of
# the last window could have used (a worker without it could send none at all). Every request of every
# worker may wait on it at once (Ray's default of 1,000 calls in an actor had left no room for a release).
@ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=ACTOR_CALLS)
class LimitsActor:
    def __init__(self, rpm: int | None, tpm: int | None, window_s: float):
        self.limiter = RateLimiter(rpm, tpm, window_s)
        self.entries: dict[int, tuple[list, str | None]] = {}  # the requests let through and not yet over
        self.tickets = itertools.count()

    async def acquire(self, tokens: int, owner: str | None = None) -> int:
        """Wait until a request of `tokens` fits the windows; its ticket. `owner`: the worker's actor id."""
        entry = await self.limiter.acquire(tokens)
        ticket = next(self.tickets)
        self.entries[ticket] = (entry, owner)
        return ticket

    async def release(self, ticket: int, tokens: int | None) -> None:
        entry = self.entries.pop(ticket, None)  # None: a ticket of this actor before a restart, or forgotten
        if entry is not None:
            self.limiter.release(entry[0], tokens)

    async def forget(self, owner: str) -> int:
        """A restarted worker's requests let through: over now (a kill left them in flight for good, each a
        slot of api.rpm and its tokens of api.tpm taken from every worker); how many."""
        tickets = [ticket for ticket, (_, held_by) in self.entries.items() if held_by == owner]
        for ticket in tickets:
            self.limiter.release(self.entries.pop(ticket)[0], None)
        return len(tickets)


def limits_actor(rpm: int | None, tpm: int | None, window_s: float, model: str):
    """The named actor of these limits for `model` in this job: started once, found by later stages."""
    name = f"warmstart-limits/{model}/rpm={rpm}/tpm={tpm}/window={window_s:g}"
    return LimitsActor.options(name=name, get_if_exists=True).remote(rpm, tpm, window_s)


class SharedRateLimiter:
    """A worker's stand-in for `RateLimiter` (what `policies.api.APIPolicy` calls), asking the actor."""

    def __init__(self, actor, tpm: int | None):
        self.actor = actor
        self.counts_tokens = tpm is not None

    async def acquire(self, tokens: int) -> int:
        return await self.actor.acquire.remote(tokens, current_actor())

    def release(self, ticket: int, tokens: int | None) -> None:
        self.actor.release.remote(ticket, tokens)  # not awaited: the request's reply is not held up by it
