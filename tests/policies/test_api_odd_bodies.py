"""The teacher client under 200s that are no reply (a page that is not JSON, bytes that are not UTF-8, a body
not in its Content-Encoding) and replies from a model with no price under a dollar cap (tests/fake_api.py
and odd_api.py inject each)."""

from __future__ import annotations

import json
import time

import pytest
from odd_api import OddAPI, at
from test_api_faults import ENV, PRICES, recipe_for, rollouts, stage_cost

from fake_api import FakeAPI
from warmstart.config import ApiConfig, PolicySpec
from warmstart.errors import WarmstartError
from warmstart.policies import make_policy
from warmstart.policies.api import prompt_size
from warmstart.policies.openai_scoring import connect_scorer
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
    # a proxy that labels plain JSON gzip: the quote shows what came
    "bad_gzip": """labelled gzip (Content-Encoding) but not gzip (incorrect header check): '{"id": """,
    "bad_deflate": "labelled deflate (Content-Encoding) but not deflate (invalid stored block lengths): '\\x00",
    "br": "labelled br (Content-Encoding), an encoding not asked for (Accept-Encoding: gzip, deflate): '",
}


def capped_rollout(tmp_path, api: FakeAPI, provider: str) -> tuple[Trajectory, BudgetGuard, float, int]:
    """One rollout under a $1 cap: its trajectory, the guard, one request's largest cost, and the replies
    the client counted as rejected."""
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICED)
    recipe = recipe_for(tmp_path, api, f"api.prices='{prices}'", provider=provider)
    policy = make_policy(recipe.generate.teacher, ENV, "generate.teacher", recipe)
    policy.budget = guard = BudgetGuard(1.0, 0.0, ASKED[provider], load_prices(str(prices)), False)
    [task] = ENV.tasks("train", 1, 0)
    [trajectory] = policy.rollout([Request(task, 0)], Sampling(0.0, 1.0, 32), seed=0)
    return trajectory, guard, guard.largest_cost(*prompt_size(task.prompt, []), 32), policy.request_tally.rejected


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", ["malformed", "html_as_json", "html", "not_utf8", "bad_gzip", "bad_deflate", "br"])
def test_a_200_that_is_no_reply_is_a_server_fault_named_in_one_line_and_counted_at_its_largest_cost(
    tmp_path, provider, fault
):
    """It was "no answer": asked again with the seed that drew it, $0 under the cap (the provider may have
    billed it), and the SDK's own words for it (`JSONDecodeError: Expecting value: line 1 column 1`); a body
    not in its Content-Encoding was `ValueError: the answer to ... is not valid gzip` (Anthropic's:
    `APIConnectionError: Connection error.`), and a deflate one no decoder takes a zlib.error traceback."""
    with OddAPI() as api:
        api.faults = [fault] * 4  # every try of api.max_retries=3
        failed, guard, largest, rejected = capped_rollout(tmp_path, api, provider)
        seeds = [e["body"].get("seed") for e in api.log]
    said = f"request failed: invalid reply: the server answered 200 with a body that is {SAID[fault]}"
    assert failed.error.startswith(said) and failed.error.endswith("(after 3 retries)"), failed.error
    assert "\n" not in failed.error and "Error" not in failed.error  # one line, no exception's name
    assert failed.finish_reason is None and not failed.usage and not failed.rejected_usage
    assert guard.spent == pytest.approx(4 * largest)  # each try's bill unknown: its largest, never $0
    assert rejected == 4  # each a reply refused, as one with no choices is
    if provider == "openai":  # the Anthropic API takes no seed
        assert len(set(seeds)) == 4  # each try with another seed, as for any reply that came back unusable


def test_a_long_body_that_is_not_json_is_quoted_by_its_first_80_characters(tmp_path):
    with FakeAPI() as api:
        api.faults = ["event_stream"] * 4
        failed, _, _, _ = capped_rollout(tmp_path, api, "openai")
    assert "with a body that is not JSON: 'data: {" in failed.error
    assert "' (first 80 characters) (after 3 retries)" in failed.error
    quoted = failed.error.split("not JSON: ")[1].split(" (first 80 characters)")[0]
    assert len(eval(quoted)) == 80  # noqa: S307 - a repr this test's server wrote


@pytest.mark.parametrize("fault", ["html_as_json", "not_utf8", "bad_gzip"])
def test_a_200_that_is_no_reply_is_asked_again_and_the_rollout_is_scored_from_the_good_one(tmp_path, fault):
    with OddAPI() as api:
        api.faults = [fault]
        [trajectory] = read_records(generate.run(recipe_for(tmp_path, api, train=1)), Trajectory)
        assert [e["fault"] for e in api.log] == [fault, None]
    assert trajectory.error is None and trajectory.verdict.passed
    assert trajectory.messages[-1].content.startswith("Answer: ")
    cost = stage_cost(tmp_path / "run")
    assert cost["requests_failed"] == 1 and cost["replies_rejected"] == 1  # the ledger counted it (was 0)


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
    assert cost["replies_rejected"] == 8


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


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_error_status_whose_body_is_not_in_its_encoding_is_that_status(tmp_path, provider):
    """A 401 with a body labelled gzip that is not was asked again as a server fault, 4 times (the status
    lost behind `ValueError: ... is not valid gzip`); a 429's Retry-After was never read."""
    with OddAPI() as api:
        api.faults = ["429_bad_gzip"]
        started = time.monotonic()
        [waited] = rollouts(recipe_for(tmp_path / "429", api, provider=provider))
        assert waited.error is None and time.monotonic() - started >= 1.0  # its Retry-After: 1, obeyed
        api.faults = ["401_bad_gzip"] * 4
        with pytest.raises(WarmstartError, match="HTTP 401: .*labelled gzip .*but not gzip") as caught:
            rollouts(recipe_for(tmp_path / "401", api, provider=provider))
        assert [e["fault"] for e in api.log] == ["429_bad_gzip", None, "401_bad_gzip"]  # the 401: asked once
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", ["bad_gzip", "bad_deflate"])
def test_a_model_list_not_in_its_encoding_is_one_clear_error_before_any_request(tmp_path, provider, fault):
    """It was a traceback (OpenAI's client) or "cannot reach" the server (Anthropic's)."""
    with OddAPI() as api:
        api.model_list_fault = fault
        with pytest.raises(
            WarmstartError, match=f"answered the model list with something that is labelled {fault[4:]}"
        ):
            rollouts(recipe_for(tmp_path, api, provider=provider))
    assert api.log == []


def scorer_answer(api: OddAPI, faults: list[str]) -> str:
    """What a teacher's scoring (api.max_retries=1) says of `faults`: its error, one line."""
    scorer = connect_scorer(PolicySpec.parse(f"openai:fake-model@{api.url}/v1"), ApiConfig(max_retries=1), "unused")
    api.faults = faults
    try:
        with pytest.raises(WarmstartError) as caught:
            scorer.score([[1, 2, 3]])
    finally:
        scorer.close()
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize(
    "fault, said",
    [
        ("malformed", "not JSON: '{this is not json'"),
        ("html", "not JSON: '<html><body><h1>502 Bad Gateway</h1></body></html>'"),  # was an AttributeError traceback
        ("latin1", "not UTF-8 text (invalid continuation byte at byte"),
        ("bad_gzip", "labelled gzip (Content-Encoding) but not gzip (incorrect header check): '{"),
        ("bad_deflate", "labelled deflate (Content-Encoding) but not deflate"),  # was a zlib.error traceback
    ],
)
def test_a_teachers_scoring_takes_a_200_that_is_no_reply_as_a_server_fault_in_the_policies_words(fault, said):
    """It named the exception (`JSONDecodeError: Expecting property name ...`) and never asked again."""
    with OddAPI() as api:
        error = scorer_answer(api, [fault] * 2)
        assert len(api.log) == 2  # asked again, as after a 5xx
    assert (
        f"no usable answer from {api.url}/v1: invalid reply: the server answered 200 with a body that is {said}"
        in error
    )
    assert error.endswith("(after 1 retries)") and "Error" not in error


def with_prompt_logprobs(change):
    """A legacy completion with the prompt log-probs vLLM sends (fake_api's has none), then `change`d."""

    def shaped(reply):
        logprobs = {"tokens": ["a", "b", "c"], "token_logprobs": [None, -0.5, -0.25], "top_logprobs": None}
        reply["choices"][0]["logprobs"] = logprobs | {"text_offset": [0, 1, 2]}
        return change(reply)

    return shaped


SCORED = ["choices", 0, "logprobs"]


@pytest.mark.parametrize(
    "change, said",
    [
        (at([*SCORED, "token_logprobs", 1], "high"), "choices[0].logprobs.token_logprobs[1] is a string, not a number"),
        (at([*SCORED, "token_logprobs", 2], float("nan")), "choices[0].logprobs.token_logprobs[2] is nan, not a log-p"),
        (at([*SCORED, "tokens"], "abc"), "choices[0].logprobs.tokens is a string, not a list"),
        (lambda reply: reply | {"choices": {"0": reply["choices"][0]}}, "choices is an object, not a list"),
    ],
)
def test_a_teachers_scoring_refuses_prompt_logprobs_that_are_not_log_probabilities_naming_them(change, said):
    """They were passed on to the loss as they came (a string, a NaN), tokens that are a string read as its
    characters, and choices that are an object a KeyError traceback."""
    with OddAPI() as api:
        api.shapes = {"good": with_prompt_logprobs(lambda reply: reply), "odd": with_prompt_logprobs(change)}
        scorer = connect_scorer(PolicySpec.parse(f"openai:fake-model@{api.url}/v1"), ApiConfig(max_retries=1), "unused")
        api.faults = ["good"]
        assert scorer.score([[1, 2, 3]])[0].logprobs == [None, -0.5, -0.25]
        scorer.close()
        error = scorer_answer(api, ["odd"] * 2)
    assert f"no usable answer from {api.url}/v1: invalid reply: a completion warmstart cannot read ({said}" in error
    assert error.endswith("(after 1 retries)")
