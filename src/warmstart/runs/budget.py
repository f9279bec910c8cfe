"""`generate.budget_usd`: a hard cap on a stage's API dollars, checked before every request is sent.

A request is sent only if the money already spent, plus the largest possible cost of every request in
flight, plus this one's largest possible cost stays within the cap. A request's largest cost bounds its
prompt by its bytes (a byte-level tokenizer never makes more tokens than bytes; each message adds a few
template tokens) and its reply by `max_new_tokens`. A request that does not fit waits while others are
in flight (they settle at their real, smaller cost and free room); with nothing in flight it is refused:
the cap is reached. The cap therefore holds however many requests run at once, at the price of stopping
a little below it.

The bound trusts the provider to stop at `max_new_tokens` (every provider does; a reply that did not is
flagged `oversized` by api.py, and its excess is money the cap could not foresee). Priced as the model
asked for: a reply served by another model is settled at that model's price, and a
dearer one could overshoot by the difference on the requests in flight (a warning names it, from api.py).
"""

from __future__ import annotations

import asyncio

from .costs import price_of, usd_of

TEMPLATE_TOKENS_PER_MESSAGE = 8  # role markers and separators a chat template adds around each message


class BudgetExhausted(Exception):
    """The next request could cross the cap: nothing was sent."""


class BudgetGuard:
    def __init__(self, cap_usd: float, spent_usd: float, model: str, prices: dict[str, dict], batch: bool):
        self.cap, self.spent, self.reserved = cap_usd, spent_usd, 0.0
        self.in_flight = 0  # counted, not read off `reserved`: float sums of reservations do not return to 0
        self.price, self.prices, self.batch = price_of(model, prices), prices, batch
        if self.price is None:
            raise ValueError(f"no price for {model!r} in the price table, so a dollar cap cannot be kept")
        self.refused = 0  # requests not sent because of the cap
        self._loop, self._condition = None, None

    def _room(self) -> asyncio.Condition:
        """The condition requests wait on, made in the running event loop (a policy runs one loop per chunk
        of requests, and an asyncio primitive belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._condition = loop, asyncio.Condition()
        return self._condition

    def largest_cost(self, prompt_bytes: int, messages: int, max_new_tokens: int) -> float:
        prompt = prompt_bytes + TEMPLATE_TOKENS_PER_MESSAGE * messages
        return usd_of(prompt, 0, max_new_tokens, self.price, self.batch)

    async def reserve(self, largest: float) -> None:
        """Wait until `largest` fits under the cap beside the requests in flight; BudgetExhausted when it
        cannot fit even with none in flight."""
        room = self._room()
        async with room:
            while self.spent + self.reserved + largest > self.cap:
                if self.in_flight == 0:
                    self.refused += 1
                    raise BudgetExhausted(
                        f"generate.budget_usd = ${self.cap:g} reached: ${self.spent:.4f} spent, and the next "
                        f"request could cost up to ${largest:.4f}"
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
                price = (price_of(usage.model, self.prices) if usage.model else None) or self.price
                self.spent += usd_of(usage.tokens_in, usage.tokens_cached, usage.tokens_out, price, self.batch)
            room.notify_all()

    @property
    def exhausted(self) -> bool:
        return self.refused > 0
