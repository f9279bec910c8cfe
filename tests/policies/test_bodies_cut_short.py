"""A 200 whose body the connection cuts off (Content-Length declared, part of the body sent, the socket
closed) was generated and likely billed: under a dollar cap it counts at the request's largest cost, as any
answer that cannot be read does. It read as a request that got no answer, settled at $0, so a server that
dropped every reply mid-body was never stopped by the cap. A refused connection got no answer: $0."""

from __future__ import annotations

import pytest
from test_api_faults import ENV, recipe_for
from test_api_odd_bodies import PRICED, capped_rollout

from fake_api import FakeAPI
from warmstart.policies import make_policy
from warmstart.runs.budget import BudgetGuard
from warmstart.runs.costs import load_prices
from warmstart.types import Request, Sampling


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_200_cut_off_by_the_connection_counts_at_its_largest_cost(tmp_path, provider):
    with FakeAPI() as api:
        api.faults = ["reset"] * 4  # every try of api.max_retries=3
        failed, guard, largest, rejected = capped_rollout(tmp_path, api, provider)
    said = "invalid reply: the server answered 200 with a body that is cut short by the connection after 17 of 1000"
    assert said in failed.error and failed.error.endswith("(after 3 retries)"), failed.error
    assert guard.spent == pytest.approx(4 * largest)  # each try's bill unknown: its largest, never $0
    assert rejected == 4


def test_a_refused_connection_costs_nothing(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICED)
    with FakeAPI() as api:
        recipe = recipe_for(tmp_path, api, f"api.prices='{prices}'", "api.max_retries=1")
        policy = make_policy(recipe.generate.teacher, ENV, "generate.teacher", recipe)  # the model list: answered
    policy.budget = guard = BudgetGuard(1.0, 0.0, "fake-model", load_prices(str(prices)), False)
    [failed] = policy.rollout([Request(ENV.tasks("train", 1, 0)[0], 0)], Sampling(0.0, 1.0, 32), seed=0)
    assert "APIConnectionError" in failed.error and guard.spent == 0.0
