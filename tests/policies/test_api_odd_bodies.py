"""The teacher client under 200s that are no reply (a page that is not JSON, bytes that are not UTF-8) and
replies from a model with no price under a dollar cap (tests/fake_api.py injects each)."""

from __future__ import annotations

import json

import pytest
from test_api_faults import ENV, PRICES, recipe_for, stage_cost

from fake_api import FakeAPI
from warmstart.errors import WarmstartError
from warmstart.policies import make_policy
from warmstart.policies.api import prompt_size
from warmstart.runs.budget import BudgetGuard
from warmstart.runs.costs import load_prices
from warmstart.runs.jsonl import read_records
from warmstart.stages import generate
from warmstart.types import Request, Sampling, Trajectory

ASKED = {"openai": "fake-model", "anthropic": "claude-fake-1"}
PRICED = PRICES + "\n[models.claude-fake-1]\ninput = 1.0\noutput = 2.0\n"
SAID = {
    "malformed": "not JSON: '{this is not json'",
    "html_as_json": "not JSON: '<html><body><h1>502 Bad Gateway</h1></body></html>'",
    "html": "not JSON: '<html><body><h1>502 Bad Gateway</h1></body></html>'",
    "not_utf8": "not UTF-8 text (invalid continuation byte at byte",
}


def capped_rollout(tmp_path, api: FakeAPI, provider: str) -> tuple[Trajectory, BudgetGuard, float]:
    """One rollout under a $1 cap: its trajectory, the guard, and one request's largest cost."""
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICED)
    recipe = recipe_for(tmp_path, api, f"api.prices='{prices}'", provider=provider)
    policy = make_policy(recipe.generate.teacher, ENV, "generate.teacher", recipe)
    policy.budget = guard = BudgetGuard(1.0, 0.0, ASKED[provider], load_prices(str(prices)), False)
    [task] = ENV.tasks("train", 1, 0)
    [trajectory] = policy.rollout([Request(task, 0)], Sampling(0.0, 1.0, 32), seed=0)
    return trajectory, guard, guard.largest_cost(*prompt_size(task.prompt, []), 32)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", ["malformed", "html_as_json", "html", "not_utf8"])
def test_a_200_that_is_no_reply_is_a_server_fault_named_in_one_line_and_counted_at_its_largest_cost(
    tmp_path, provider, fault
):
    """It was "no answer": asked again with the seed that drew it, $0 under the cap (the provider may have
    billed it), and the SDK's own words for it (`JSONDecodeError: Expecting value: line 1 column 1`)."""
    with FakeAPI() as api:
        api.faults = [fault] * 4  # every try of api.max_retries=3
        failed, guard, largest = capped_rollout(tmp_path, api, provider)
        seeds = [e["body"].get("seed") for e in api.log]
    said = f"request failed: invalid reply: the server answered 200 with a body that is {SAID[fault]}"
    assert failed.error.startswith(said) and failed.error.endswith("(after 3 retries)"), failed.error
    assert "\n" not in failed.error and "Error" not in failed.error  # one line, no exception's name
    assert failed.finish_reason is None and not failed.usage and not failed.rejected_usage
    assert guard.spent == pytest.approx(4 * largest)  # each try's bill unknown: its largest, never $0
    if provider == "openai":  # the Anthropic API takes no seed
        assert len(set(seeds)) == 4  # each try with another seed, as for any reply that came back unusable


def test_a_long_body_that_is_not_json_is_quoted_by_its_first_80_characters(tmp_path):
    with FakeAPI() as api:
        api.faults = ["event_stream"] * 4
        failed, _, _ = capped_rollout(tmp_path, api, "openai")
    assert "with a body that is not JSON: 'data: {" in failed.error
    assert "' (first 80 characters) (after 3 retries)" in failed.error
    quoted = failed.error.split("not JSON: ")[1].split(" (first 80 characters)")[0]
    assert len(eval(quoted)) == 80  # noqa: S307 - a repr this test's server wrote


@pytest.mark.parametrize("fault", ["html_as_json", "not_utf8"])
def test_a_200_that_is_no_reply_is_asked_again_and_the_rollout_is_scored_from_the_good_one(tmp_path, fault):
    with FakeAPI() as api:
        api.faults = [fault]
        [trajectory] = read_records(generate.run(recipe_for(tmp_path, api, train=1)), Trajectory)
        assert [e["fault"] for e in api.log] == [fault, None]
    assert trajectory.error is None and trajectory.verdict.passed
    assert trajectory.messages[-1].content.startswith("Answer: ")
    assert stage_cost(tmp_path / "run")["requests_failed"] == 1


def test_a_200_that_is_never_a_reply_is_each_rollouts_error_and_fails_the_stage(tmp_path):
    with FakeAPI() as api:
        api.faults = ["html_as_json"] * 8  # 2 rollouts x (1 + api.max_retries=3) tries
        with pytest.raises(WarmstartError, match="2 of 2 rollouts ended in an error"):
            generate.run(recipe_for(tmp_path, api, "generate.concurrency=1", train=2))
    records = read_records(tmp_path / "run" / "trajectories" / "teacher.jsonl", Trajectory)
    assert len(records) == 2 and all("a body that is not JSON: '<html>" in r.error for r in records)
    assert all(r.verdict is None for r in records)  # never scored
    cost = stage_cost(tmp_path / "run")
    assert cost["errors"] == 2 and cost["requests_sent"] == 8 and cost["requests_failed"] == 8


def capped_recipe(tmp_path, api: FakeAPI, provider: str, prices: str):
    table = tmp_path / "prices.toml"
    table.write_text(prices)
    settings = [f"api.prices='{table}'", "generate.budget_usd=1.0", "api.concurrency=1", "generate.concurrency=4"]
    return recipe_for(tmp_path, api, *settings, train=4, provider=provider)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_under_a_dollar_cap_a_reply_from_a_model_with_no_price_stops_the_stage_and_keeps_what_was_paid(
    tmp_path, provider
):
    """The reply was settled under the cap at the asked model's price while the ledger recorded no price
    (null): the cap was kept on a guess. Now nothing more is sent, the reply is written and the ledger names
    the model; a rerun with its price goes on and pays for nothing twice."""
    served = f"{ASKED[provider]}-mini"  # `sibling_model`: a sibling of the asked model answered
    with FakeAPI() as api:
        api.faults = ["sibling_model"]
        recipe = capped_recipe(tmp_path, api, provider, PRICED)
        with pytest.raises(WarmstartError, match=f"'{served}' answered, and api.prices has no price for it, so "):
            generate.run(recipe)
        assert len(api.log) == 1  # the three rollouts waiting for a request slot were never sent
        [kept] = read_records(tmp_path / "run" / "trajectories" / "teacher.jsonl", Trajectory)
        assert kept.error is None and kept.usage[0].model == served
        stopped = stage_cost(tmp_path / "run")
        assert stopped["usd"] is None and stopped["unknown_price_models"] == [served]
        with pytest.raises(WarmstartError, match="earlier replies were served by models with no price"):
            generate.run(recipe)  # still no price: refused before anything is sent
        recipe = capped_recipe(tmp_path, api, provider, PRICED + f"\n[models.{served}]\ninput = 3.0\noutput = 4.0\n")
        generate.run(recipe)
        assert len(api.log) == 1 + 3
    done = stage_cost(tmp_path / "run")
    assert done["requests"] == 4 and done["usd"] == pytest.approx((20 * 3.0 + 6 * 4.0 + 3 * (20 + 6 * 2.0)) / 1e6)


def test_under_a_dollar_cap_a_reply_from_another_model_with_a_price_is_settled_at_that_price(tmp_path):
    with FakeAPI() as api:
        api.faults = ["other_model"]  # priced at 10 / 20 in PRICES
        generate.run(capped_recipe(tmp_path, api, "openai", PRICED))
        assert len(api.log) == 4
    cost = stage_cost(tmp_path / "run")
    assert cost["usd"] == pytest.approx((20 * 10.0 + 6 * 20.0 + 3 * (20 + 6 * 2.0)) / 1e6)
    assert json.loads((tmp_path / "run" / "costs.json").read_text())["total"]["unknown_price_models"] == []
