"""`generate.budget_usd` on a cluster: one actor holds the stage's `runs.budget.BudgetGuard`.

Every worker's requests reserve their largest possible cost with it before they are sent and settle
their bill with it when they are over, so the cap holds for the whole cluster exactly as it holds for
one process's requests in flight (the same guard, the same rule). The actor is not restarted: a guard
that forgot what was in flight could not keep the cap, so a dead one stops the stage.

A reply from a model the price table has no price for stops a local call: nothing more is sent
(`policies.api.APIPolicy._note_unpriced`). The worker that received it stops its own piece so; the actor,
told of it as the reply is settled, refuses every other worker's next request, so the cluster stops
sending as one process would.
"""

from __future__ import annotations

import ray

from ..runs.budget import BudgetExhausted, BudgetGuard
from ..runs.costs import price_of


@ray.remote(max_restarts=0)
class BudgetActor:
    def __init__(self, guard: BudgetGuard):
        self.guard = guard
        self.unpriced: str | None = None  # a model that answered with no price: the cap cannot be kept

    async def reserve(self, largest: float) -> str | None:
        """None once `largest` fits; the reason where it never will (returned: the worker raises it)."""
        if self.unpriced is not None:  # not counted as refused: the cap was not reached
            return unpriced_reason(self.unpriced)
        try:
            await self.guard.reserve(largest)
        except BudgetExhausted as exc:
            return str(exc)
        return None

    async def settle(self, largest: float, usage, unknown_usd: float) -> None:
        await self.guard.settle(largest, usage, unknown_usd)
        if self.unpriced is None and usage is not None and usage.model:
            if price_of(usage.model, self.guard.prices) is None:
                self.unpriced = usage.model

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
        refused = await self.actor.reserve.remote(largest)
        if refused is not None:
            raise BudgetExhausted(refused)

    async def settle(self, largest: float, usage, unknown_usd: float = 0.0) -> None:
        await self.actor.settle.remote(largest, usage, unknown_usd)

    @property
    def spent(self) -> float:
        return ray.get(self.actor.state.remote())[0]

    @property
    def exhausted(self) -> bool:
        return ray.get(self.actor.state.remote())[1] > 0
