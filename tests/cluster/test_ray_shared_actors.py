"""The cluster's shared budget and rate limits when a worker dies or many wait (review 96): a killed worker's
reservations and rate-limit slots are given back at its restart (held, they had hung the stage below its cap,
or stopped every request under a small api.rpm), more than 1,000 waiting requests do not lock the actors up,
and a dead budget actor is one error line."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import ray
from ray_helpers import actor_processes

from fake_api import FakeAPI
from helpers import small_recipe
from warmstart.cluster.budget import BudgetActor, SharedBudget
from warmstart.cluster.limiter import LimitsActor
from warmstart.errors import WarmstartError
from warmstart.runs.budget import BudgetGuard
from warmstart.stages import generate

PRICES = {"fake-model": {"input": 1.0, "output": 4.0}}


def guard(cap: float) -> BudgetGuard:
    return BudgetGuard(cap, 0.0, "fake-model", PRICES, False)


def test_a_dead_workers_reservation_is_given_back_counted_at_its_largest_cost(ray_cluster):
    actor = BudgetActor.remote(guard(1.0))
    assert ray.get(actor.reserve.remote(0.6, "killed-worker")) is None
    waiting = actor.reserve.remote(0.6, "other-worker")  # waits for the 0.6 in flight to settle
    assert not ray.wait([waiting], timeout=1.0)[0]
    assert ray.get(actor.forget.remote("killed-worker")) == 1
    refused = ray.get(waiting, timeout=30)  # 0.6 counted spent: another 0.6 cannot fit, and nothing is in flight
    assert refused is not None and "budget_usd = $1 reached: $0.6000 spent" in refused
    ray.get(actor.settle.remote(0.6, None, 0.0, "killed-worker"))  # a late settle of a forgotten one: ignored
    assert ray.get(actor.state.remote())[0] == pytest.approx(0.6)


def test_a_dead_workers_rate_limit_slot_is_given_back(ray_cluster):
    actor = LimitsActor.remote(1, None, 0.5)  # one request per half second
    ray.get(actor.acquire.remote(10, "killed-worker"))
    waiting = actor.acquire.remote(10, "other-worker")
    assert not ray.wait([waiting], timeout=1.5)[0]  # the first is in flight for good: no slot opens
    assert ray.get(actor.forget.remote("killed-worker")) == 1
    ray.get(waiting, timeout=30)  # its slot's window over, the next goes


def test_more_than_a_thousand_waiting_reservations_do_not_lock_the_budget_out(ray_cluster):
    actor = BudgetActor.remote(guard(1.0))
    granted = [actor.reserve.remote(0.1, "w") for _ in range(10)]
    assert ray.get(granted) == [None] * 10
    waiting = [actor.reserve.remote(0.1, "w") for _ in range(1_000)]  # Ray's default: 1,000 calls at once
    settles = [actor.settle.remote(0.1, None, 0.0, "w") for _ in range(10)]
    ready, _ = ray.wait(settles, num_returns=10, timeout=60)
    assert len(ready) == 10  # the settles ran beside the waiting reservations
    granted_since, _ = ray.wait(waiting, num_returns=10, timeout=60)
    assert ray.get(granted_since) == [None] * 10  # and the room they freed went to ten of the waiting
    ray.kill(actor)  # the 990 still waiting go with it


def test_a_dead_budget_actor_is_one_error(ray_cluster):
    import asyncio

    shared = SharedBudget(guard(1.0))
    ray.kill(shared.actor)
    with pytest.raises(WarmstartError, match="the cluster's budget actor died"):
        asyncio.run(shared.reserve(0.1))
    with pytest.raises(WarmstartError, match="the cluster's budget actor died"):
        _ = shared.spent


def test_a_rollout_worker_killed_with_a_reservation_in_flight_stops_the_stage_at_its_cap(tmp_path, ray_cluster):
    """A worker SIGKILLed while its request holds a reservation: its restart gives the reservation back, and
    the stage stops with the cap's error instead of waiting forever for room."""
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."fake-model"]\ninput = 1.0\noutput = 4.0\n')
    outcome: dict = {}
    with FakeAPI(delay_s=0.5) as api:
        recipe = small_recipe(
            tmp_path / "run",
            f"generate.teacher='openai:fake-model@{api.url}/v1'",
            f"api.prices='{prices}'",
            "api.backoff_s=0.05",
            "api.timeout_s=10.0",
            "api.max_retries=2",
            "ray.address='local'",
            "ray.workers=2",
            "api.concurrency=1",
            "generate.concurrency=40",
            "generate.budget_usd=0.0015",
            train=40,
        )

        def stage() -> None:
            try:
                generate.run(recipe)
            except Exception as exc:  # the cap's error, expected
                outcome["error"] = exc

        runner = threading.Thread(target=stage, daemon=True)
        runner.start()
        deadline, killed = time.monotonic() + 120, False
        while runner.is_alive() and time.monotonic() < deadline and not killed:
            busy = actor_processes("ray::RolloutWorker.rollout")
            if len(api.log) >= 8 and busy:  # past the pilot, a piece's request in flight
                time.sleep(0.25)
                os.kill(busy[0], signal.SIGKILL)
                killed = True
            time.sleep(0.02)
        runner.join(timeout=180)
        assert killed, "no worker was busy to kill"
        assert not runner.is_alive(), "the stage waited forever for the killed worker's reservation"
    assert isinstance(outcome.get("error"), WarmstartError) and "generate.budget_usd = $0.0015" in str(outcome["error"])
