"""`generate.budget_usd` on a cluster: one actor holds the stage's `runs.budget.BudgetGuard`.

Every worker's requests reserve their largest possible cost with it before they are sent and settle
their bill with it when they are over, so the cap holds for the whole cluster exactly as it holds for
one process's requests in flight (the same guard, the same rule). The actor is not restarted: a guard
that forgot what was in flight could not keep the cap, so a dead one stops the stage.

A reservation is its worker's (the actor id that made it): a worker killed with requests in flight never
settles them, and held, they had kept every other worker waiting for room that never came (the stage hung
below its cap). The worker's restart gives them back (`forget`), each counted spent at its largest cost: the
request may have been answered and billed before the kill. Every worker's requests may wait on the actor at
once, past Ray's default of 1,000 calls in an actor (then no settle could start: a deadlock).

A reply from a model the price table has no price for stops a local call: nothing more is sent
(`policies.api.APIPolicy._note_unpriced`). The worker that received it stops its own piece so; the actor,
told of it as the reply is settled, refuses every other worker's next request, so the cluster stops
sending as one process would.
"""

from __future__ import annotations

import contextlib

import ray
from ray.exceptions import RayActorError

from ..errors import WarmstartError, first_line
from ..runs.budget import BudgetExhausted, BudgetGuard
from ..runs.costs import price_of

# Calls one actor runs at once: every request of every worker may wait on it (Ray's default is 1,000).
ACTOR_CALLS = 1_000_000


@ray.remote(max_restarts=0, max_concurrency=ACTOR_CALLS)
class BudgetActor:
    def __init__(self, guard: BudgetGuard):
        self.guard = guard
        self.unpriced: str | None = None  # a model that answered with no price: the cap cannot be kept
        self.held: dict[str | None, list[float]] = {}  # the reservations in flight, by the worker that made them

    async def reserve(self, largest: float, owner: str | None = None) -> str | None:
        """None once `largest` fits; the reason where it never will (returned: the worker raises it)."""
        if self.unpriced is not None:  # not counted as refused: the cap was not reached
            return unpriced_reason(self.unpriced)
        try:
            await self.guard.reserve(largest)
        except BudgetExhausted as exc:
            return str(exc)
        self.held.setdefault(owner, []).append(largest)
        return None

    async def settle(self, largest: float, usage, unknown_usd: float, owner: str | None = None) -> None:
        held = self.held.get(owner, [])
        if largest not in held:
            return  # given back already (`forget`): its worker was restarted while it was in flight
        held.remove(largest)
        await self.guard.settle(largest, usage, unknown_usd)
        if self.unpriced is None and usage is not None and usage.model:
            if price_of(usage.model, self.guard.prices) is None:
                self.unpriced = usage.model

    async def forget(self, owner: str) -> int:
        """A restarted worker's reservations, given back and counted spent at their largest cost; how many."""
        held = self.held.pop(owner, [])
        for largest in held:
            await self.guard.settle(largest, None, largest)
        return len(held)

    async def state(self) -> tuple[float, int]:
        return self.guard.spent, self.guard.refused


def unpriced_reason(model: str) -> str:
    return (
        f"the server says {model!r} answered, and api.prices has no price for it, so generate.budget_usd cannot be kept"
    )


class SharedBudget:
    """`BudgetGuard`'s interface (what `policies.api.APIPolicy` and `generate` call) over the actor; a
    request's largest cost is priced here, by a copy of the guard that never reserves."""

    def __init__(self, guard: BudgetGuard):
        self.pricing, self.cap = guard, guard.cap
        self.actor = BudgetActor.remote(guard)

    def largest_cost(self, prompt_bytes: int, messages: int, max_new_tokens: int) -> float:
        return self.pricing.largest_cost(prompt_bytes, messages, max_new_tokens)

    async def reserve(self, largest: float) -> None:
        with actor_alive():
            refused = await self.actor.reserve.remote(largest, current_actor())
        if refused is not None:
            raise BudgetExhausted(refused)

    async def settle(self, largest: float, usage, unknown_usd: float = 0.0) -> None:
        with actor_alive():
            await self.actor.settle.remote(largest, usage, unknown_usd, current_actor())

    @property
    def spent(self) -> float:
        with actor_alive():
            return ray.get(self.actor.state.remote())[0]

    @property
    def exhausted(self) -> bool:
        with actor_alive():
            return ray.get(self.actor.state.remote())[1] > 0


@contextlib.contextmanager
def actor_alive():
    """A call to the budget's actor; its death (its node lost, out of memory) one error: the cap cannot be
    kept by a guard that forgot what was spent and in flight, so the stage stops."""
    try:
        yield
    except RayActorError as exc:
        raise WarmstartError(
            f"generate.budget_usd: the cluster's budget actor died ({first_line(exc)}); what was answered is kept, "
            "and a rerun continues"
        ) from None


def current_actor() -> str | None:
    """The id of the actor this code runs in (a rollout worker's, the same across its restarts); None in
    the driver."""
    return ray.get_runtime_context().get_actor_id()
