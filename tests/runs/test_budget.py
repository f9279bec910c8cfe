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


DEAR = {"m": {"input": 1.0, "output": 4.0}, "m-dear": {"input": 10.0, "output": 40.0}}


async def one_billed(guard, usage: Usage, prompt_bytes: int = 1000, max_new_tokens: int = 100) -> float:
    """One request reserved and settled at `usage`; the largest cost it was reserved at."""
    largest = guard.largest_cost(prompt_bytes, 2, max_new_tokens)
    await guard.reserve(largest)
    await guard.settle(largest, usage)
    return largest


def test_a_reply_billed_above_its_bound_scales_every_later_reservation_by_as_much():
    guard = BudgetGuard(1.0, 0.0, "m", PRICES, batch=False)
    bound = guard.largest_cost(1000, 2, 100)
    # a provider's hidden prompt: three times the request's bound billed (within api.py's plausibility limits)
    over = Usage(tokens_in=3 * 1016 + 2 * 400, tokens_out=100, model="m")
    asyncio.run(one_billed(guard, over))
    assert guard.largest_cost(1000, 2, 100) == pytest.approx(bound * 3)
    # replies within their (scaled) bound change nothing: the worst ratio is kept, not compounded
    asyncio.run(one_billed(guard, Usage(tokens_in=1016, tokens_out=100, model="m")))
    asyncio.run(one_billed(guard, over))
    assert guard.largest_cost(1000, 2, 100) == pytest.approx(bound * 3)


def test_a_wave_billed_above_its_bound_is_followed_by_none_that_crosses_the_cap():
    async def waves(guard: BudgetGuard) -> None:
        for _ in range(20):  # waves of 4 requests in flight, each billed 3x its bound
            usage = Usage(tokens_in=3 * 1016 + 2 * 400, tokens_out=100, model="m")
            results = await asyncio.gather(*(one_billed(guard, usage) for _ in range(4)), return_exceptions=True)
            if any(isinstance(r, BudgetExhausted) for r in results):
                return

    guard = BudgetGuard(0.05, 0.0, "m", PRICES, batch=False)
    first_wave = 4 * usd_of_tokens(3 * 1016 + 2 * 400, 100)
    asyncio.run(waves(guard))
    assert guard.exhausted and first_wave < 0.05
    assert guard.spent <= 0.05  # unscaled, the second wave's reservations fitted and its bills crossed the cap


def usd_of_tokens(tokens_in: int, tokens_out: int) -> float:
    return (tokens_in * PRICES["m"]["input"] + tokens_out * PRICES["m"]["output"]) / 1e6


def test_a_reply_served_by_a_dearer_model_raises_later_reservations_to_its_price():
    guard = BudgetGuard(1.0, 0.0, "m", DEAR, batch=False)
    cheap = guard.largest_cost(1000, 2, 100)
    asyncio.run(one_billed(guard, Usage(tokens_in=100, tokens_out=10, model="m-dear")))
    assert guard.largest_cost(1000, 2, 100) == pytest.approx(cheap * 10)  # the dearest price seen, kept
    asyncio.run(one_billed(guard, Usage(tokens_in=100, tokens_out=10, model="m")))
    assert guard.largest_cost(1000, 2, 100) == pytest.approx(cheap * 10)


def test_a_largest_cost_that_is_not_a_number_is_refused_not_let_through():
    guard = BudgetGuard(1.0, 0.0, "m", PRICES, batch=False)
    for largest in (float("nan"), float("inf")):
        with pytest.raises(BudgetExhausted, match="cannot keep a cap"):
            asyncio.run(guard.reserve(largest))
    assert guard.exhausted and guard.in_flight == 0


def test_another_models_requests_share_the_cap_and_are_bounded_at_their_own_price():
    guard = BudgetGuard(0.02, 0.0, "m", DEAR, batch=False)
    judge = guard.for_model("m-dear")
    assert judge.largest_cost(1000, 2, 100) == pytest.approx(10 * guard.largest_cost(1000, 2, 100))
    asyncio.run(one_billed(judge, Usage(tokens_in=500, tokens_out=50, model=None)))  # priced as the judge's model
    assert guard.spent == pytest.approx((500 * 10 + 50 * 40) / 1e6)
    with pytest.raises(BudgetExhausted):  # its next request cannot fit beside what it spent
        asyncio.run(judge.reserve(judge.largest_cost(1000, 2, 100)))
    assert guard.exhausted and guard.largest_cost(1000, 2, 100) == pytest.approx(usd_of_tokens(1016, 100))
