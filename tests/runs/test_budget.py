"""The dollar cap under concurrency: never crossed, never a deadlock, a request that cannot fit refused."""

from __future__ import annotations

import asyncio
import random

import pytest

from warmstart.runs.budget import BudgetExhausted, BudgetGuard
from warmstart.types import Usage

PRICES = {"m": {"input": 1.0, "output": 4.0}}


async def one_request(guard: BudgetGuard, rng: random.Random, sent: list[float]) -> None:
    prompt_bytes = rng.randint(100, 4000)
    largest = guard.largest_cost(prompt_bytes, 3, 512)
    await guard.reserve(largest)
    await asyncio.sleep(rng.random() / 1000)
    # a real bill is within the bound: no more prompt tokens than bytes, no longer a reply than max_new_tokens
    usage = Usage(tokens_in=rng.randint(prompt_bytes // 5, prompt_bytes), tokens_out=rng.randint(1, 512), model="m")
    before = guard.spent
    await guard.settle(largest, usage)
    sent.append(guard.spent - before)


async def many(guard: BudgetGuard, count: int, seed: int) -> tuple[list[float], int]:
    rng, sent = random.Random(seed), []
    results = await asyncio.gather(*(one_request(guard, rng, sent) for _ in range(count)), return_exceptions=True)
    refused = sum(isinstance(r, BudgetExhausted) for r in results)
    assert all(r is None or isinstance(r, BudgetExhausted) for r in results)
    return sent, refused


@pytest.mark.parametrize("seed", range(5))
def test_concurrent_requests_never_cross_the_cap_and_stop_only_when_nothing_fits(seed):
    guard = BudgetGuard(0.05, 0.0, "m", PRICES, batch=False)
    sent, refused = asyncio.run(many(guard, 300, seed))
    assert guard.spent <= 0.05 and guard.spent == pytest.approx(sum(sent))
    assert refused > 0 and guard.exhausted and guard.in_flight == 0 and guard.reserved == 0.0
    # stopped because the next request could not fit, not early: the room left is below one request's bound
    assert 0.05 - guard.spent < guard.largest_cost(4000, 3, 512)


def test_a_guard_spans_several_event_loops_and_counts_earlier_spending():
    guard = BudgetGuard(1.0, 0.4, "m", PRICES, batch=False)  # an earlier run spent 0.4
    for seed in range(3):  # a policy runs one event loop per chunk of requests
        asyncio.run(many(guard, 20, seed))
    assert 0.4 < guard.spent <= 1.0 and not guard.exhausted


def test_a_request_whose_bill_never_came_back_counts_at_its_largest_cost():
    async def timed_out(guard: BudgetGuard) -> None:
        largest = guard.largest_cost(1000, 2, 100)
        await guard.reserve(largest)
        await guard.settle(largest, None, unknown_usd=largest)

    guard = BudgetGuard(1.0, 0.0, "m", PRICES, batch=False)
    asyncio.run(timed_out(guard))
    assert guard.spent == pytest.approx(guard.largest_cost(1000, 2, 100))


def test_a_model_with_no_price_cannot_be_capped():
    with pytest.raises(ValueError, match="no price for 'other'"):
        BudgetGuard(1.0, 0.0, "other", PRICES, batch=False)
