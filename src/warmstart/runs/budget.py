"""`generate.budget_usd`: a hard cap on a stage's API dollars, checked before every request is sent.

A request is sent only if the money already spent, plus the largest possible cost of every request in
flight, plus this one's largest possible cost stays within the cap. A request's largest cost bounds its
prompt by its bytes (a byte-level tokenizer never makes more tokens than bytes; each message adds a few
template tokens) and its reply by `max_new_tokens`. A request that does not fit waits while others are
in flight (they settle at their real, smaller cost and free room); with nothing in flight it is refused:
the cap is reached. The cap therefore holds however many requests run at once, at the price of stopping
a little below it.

The bound trusts the provider to bill no more than that: to stop at `max_new_tokens` (a reply that did not
is flagged `oversized` by api.py) and to add no hidden prompt of its own, and the model asked for to be
the one that answers. Where a reply breaks that trust, the requests in flight with it can cross the cap,
and the guard learns from it so that the next ones cannot (`RequestBounds.bill`): every later request is
reserved at the worst ratio of billed to bound seen so far, and priced at the dearest price a reply of the
policy was billed at. The stage's error then says the cap was crossed, and by how much (`stop_said`).
"""

from __future__ import annotations

import asyncio
import math

from .costs import money, price_of, usd_of

TEMPLATE_TOKENS_PER_MESSAGE = 8  # role markers and separators a chat template adds around each message


class BudgetExhausted(Exception):
    """The next request could cross the cap: nothing was sent."""


class Reservation(float):
    """A request's largest cost in dollars (what the guard holds while it is in flight), which remembers the
    tokens it was priced from, so that its bill can be measured against them (`RequestBounds.bill`)."""

    @classmethod
    def of(cls, usd: float, tokens_in: int, tokens_out: int) -> Reservation:
        reservation = cls(usd)
        reservation.tokens = (tokens_in, tokens_out)
        return reservation


class RequestBounds:
    """The largest cost of one policy's requests: its prompt's bytes and `max_new_tokens` at its model's
    price, raised by what its replies were billed (`bill`)."""

    def __init__(self, model: str, prices: dict[str, dict], batch: bool):
        self.model, self.prices, self.batch = model, prices, batch
        self.price = price_of(model, prices)  # the dearest a reply was billed at since
        if self.price is None:
            raise ValueError(f"no price for {model!r} in the price table, so a dollar cap cannot be kept")
        self.worst_ratio = 1.0  # the most a reply was billed over its bound, both at the price it was billed at

    def largest_cost(self, prompt_bytes: int, messages: int, max_new_tokens: int) -> Reservation:
        tokens_in = prompt_bytes + TEMPLATE_TOKENS_PER_MESSAGE * messages
        usd = usd_of(tokens_in, 0, max_new_tokens, self.price, self.batch) * self.worst_ratio
        return Reservation.of(usd, tokens_in, max_new_tokens)

    def bill(self, largest: float, usage) -> float:
        """Dollars of a reply (priced as the model that served it, else as this policy's), learnt from: a
        dearer model's price becomes the price every later request is bounded at, and a bill above its
        request's bound (a provider's hidden prompt, a reply past max_new_tokens) scales every later bound by
        as much. One surprise then stops the next wave of requests rather than repeating it."""
        price = (price_of(usage.model, self.prices) if usage.model else None) or self.price
        usd = usd_of(usage.tokens_in, usage.tokens_cached, usage.tokens_out, price, self.batch)
        tokens = getattr(largest, "tokens", None)  # a plain float where a caller priced it itself
        if tokens is None:
            return usd
        tokens_in, tokens_out = tokens
        bound = usd_of(tokens_in, 0, tokens_out, price, self.batch)  # the request's bound at the price billed
        if bound > usd_of(tokens_in, 0, tokens_out, self.price, self.batch):
            self.price = price
        if bound > 0:
            self.worst_ratio = max(self.worst_ratio, usd / bound)
        return usd


class BudgetGuard:
    def __init__(self, cap_usd: float, spent_usd: float, model: str, prices: dict[str, dict], batch: bool):
        self.cap, self.spent, self.reserved = cap_usd, spent_usd, 0.0
        self.in_flight = 0  # counted, not read off `reserved`: float sums of reservations do not return to 0
        self.bounds, self.prices, self.batch = RequestBounds(model, prices, batch), prices, batch
        self.refused = 0  # requests not sent because of the cap
        self.largest_refused = 0.0  # the largest cost of the last request refused: what a cap must leave room for
        self._loop, self._condition = None, None

    def _room(self) -> asyncio.Condition:
        """The condition requests wait on, made in the running event loop (a policy runs one loop per chunk
        of requests, and an asyncio primitive belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._condition = loop, asyncio.Condition()
        return self._condition

    def largest_cost(self, prompt_bytes: int, messages: int, max_new_tokens: int) -> Reservation:
        return self.bounds.largest_cost(prompt_bytes, messages, max_new_tokens)

    def for_model(self, model: str) -> ModelBudget:
        """This cap for another policy's requests (an LLM judge's), bounded at its own model's price."""
        return ModelBudget(self, RequestBounds(model, self.prices, self.batch))

    async def reserve(self, largest: float) -> None:
        """Wait until `largest` fits under the cap beside the requests in flight; BudgetExhausted when it
        cannot fit even with none in flight."""
        if not math.isfinite(largest):  # a NaN fits under any cap (every comparison with it is false)
            self.refused += 1
            raise BudgetExhausted(f"a request's largest cost is {largest}: the price table cannot keep a cap")
        room = self._room()
        async with room:
            while self.spent + self.reserved + largest > self.cap:
                if self.in_flight == 0:
                    self.refused += 1
                    self.largest_refused = largest
                    raise BudgetExhausted(
                        f"generate.budget_usd = ${self.cap:g} reached: {money(self.spent)} spent, and the next "
                        f"request could cost up to {money(largest)}"
                    )
                await room.wait()
            self.reserved += largest
            self.in_flight += 1

    async def settle(self, largest: float, usage, unknown_usd: float = 0.0) -> None:
        """A request is over: its reservation freed, what it was billed spent (`usage`, priced as the model
        that served it; `unknown_usd` for a request whose bill never came back)."""
        room = self._room()
        async with room:
            self.in_flight -= 1
            self.reserved = self.reserved - largest if self.in_flight else 0.0
            self.spent += unknown_usd
            if usage is not None:
                self.spent += self.bounds.bill(largest, usage)
            room.notify_all()

    @property
    def exhausted(self) -> bool:
        return self.refused > 0


class ModelBudget:
    """A stage's `BudgetGuard` as another policy of the stage meets it (an LLM judge's, which may be another
    model): the same cap, spending and requests in flight, with its requests bounded at its own model's
    price and by its own replies' bills. `guard` is a `BudgetGuard`, or with [ray] the
    `cluster.budget.SharedBudget` over one: each reply is priced here and settled there as dollars."""

    def __init__(self, guard, bounds: RequestBounds):
        self.guard, self.bounds, self.prices = guard, bounds, bounds.prices

    def largest_cost(self, prompt_bytes: int, messages: int, max_new_tokens: int) -> Reservation:
        return self.bounds.largest_cost(prompt_bytes, messages, max_new_tokens)

    async def reserve(self, largest: float) -> None:
        await self.guard.reserve(largest)

    async def settle(self, largest: float, usage, unknown_usd: float = 0.0) -> None:
        billed = self.bounds.bill(largest, usage) if usage is not None else 0.0
        await self.guard.settle(largest, None, unknown_usd + billed)


def stop_said(stage: str, guard) -> str:
    """The stage's error once the cap stopped it, by the facts: crossed (and by how much) where replies were
    billed above their bound; a cap below what one request may cost; or stopped before it could be crossed.
    `guard` is a `BudgetGuard`, or with [ray] the `cluster.budget.SharedBudget` over one."""
    cap, spent = f"generate.budget_usd = ${guard.cap:g}", guard.spent
    kept = "everything answered is kept, and a rerun with a higher budget_usd continues without asking anything twice"
    if spent > guard.cap:
        return f"{stage}: {crossed_said(guard)}; {kept}"
    largest = getattr(guard, "largest_refused", 0.0)
    if largest > guard.cap:
        return (
            f"{stage}: {cap} is less than what one request may cost: up to {money(largest)} (its prompt's bytes "
            f"and max_new_tokens at the model's price), so nothing more could be sent ({money(spent)} spent); "
            "raise budget_usd above it, or lower max_new_tokens"
        )
    ratio = getattr(getattr(guard, "bounds", None), "worst_ratio", 1.0)
    scaled = f"; requests are reserved at {ratio:.2g}x their bound, as replies were billed so" if ratio > 1 else ""
    up_to = f", and the next request could cost up to {money(largest)}" if largest else ""
    return f"{stage}: stopped before {cap} could be crossed ({money(spent)} spent{up_to}{scaled}); {kept}"


def crossed_said(guard) -> str:
    return (
        f"generate.budget_usd = ${guard.cap:g} crossed by {money(guard.spent - guard.cap)} ({money(guard.spent)} "
        "spent): replies billed above their bound (more tokens than the prompt's bytes and max_new_tokens allow, "
        "or a dearer model than the one asked)"
    )
