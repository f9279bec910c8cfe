"""What generate spends beyond its teacher's own bound is billed and capped: an LLM judge's requests (its own
line of the ledger, under the same dollar cap), replies billed above their request's bound (later requests
reserved accordingly, and a cap crossed said so), and a cap too small for one request (said, with what one
request may cost).

The teacher and the judge are a loopback server (tests/fake_api.py) answering through the official openai
SDK; the server's own log of what it billed is the truth the ledger is held to."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fake_api import FakeAPI, Teacher
from helpers import small_recipe
from warmstart.errors import WarmstartError
from warmstart.runs.costs import money
from warmstart.stages import generate

FAST = ["api.backoff_s=0.05", "api.timeout_s=5.0", "api.max_retries=2"]
PRICES = {"fake-model": (1.0, 4.0), "claude-fake-1": (10.0, 40.0)}  # dollars per million tokens: in, out


def judged_grpo(api: FakeAPI, prices: Path) -> list[str]:
    """A GRPO whose reward is the loopback server's judge, priced by `prices` (`price_file`)."""
    return [
        f"env.judge.policy='openai:claude-fake-1@{api.url}/v1'",
        "env.judge.use=reward",
        "env.judge.max_new_tokens=16",
        f"api.prices='{prices}'",
        "api.backoff_s=0.05",
    ]


def price_file(path: Path) -> Path:
    """The test's prices (PRICES) as a price table at `path`."""
    path.write_text("".join(f'[models."{m}"]\ninput = {i}\noutput = {o}\n' for m, (i, o) in PRICES.items()))
    return path


def recipe_for(run_dir: Path, api: FakeAPI, *overrides: str, judge: bool = False, train: int = 40):
    prices = price_file(run_dir.parent / "prices.toml")
    teacher = f"generate.teacher='openai:fake-model@{api.url}/v1'"
    # the judge: another, dearer model on the same server (listed by it), its replies short
    judged = [f"env.judge.policy='openai:claude-fake-1@{api.url}/v1'", "env.judge.max_new_tokens=16"] if judge else []
    return small_recipe(run_dir, teacher, f"api.prices='{prices}'", *FAST, *judged, *overrides, train=train)


def server_bill(api: FakeAPI, model: str | None = None) -> float:
    """What the server billed, at the test's prices (of one model's replies, or of all)."""
    return sum(
        (b["prompt"] * PRICES[b["model"]][0] + b["completion"] * PRICES[b["model"]][1]) / 1e6
        for b in api.billed
        if model in (None, b["model"])
    )


def costs(run_dir: Path) -> dict:
    return json.loads((run_dir / "costs.json").read_text())


def test_a_judges_requests_are_billed_on_their_own_line_and_counted_in_the_totals(tmp_path):
    with FakeAPI() as api:
        generate.run(recipe_for(tmp_path / "run", api, judge=True))
        judge_bill = server_bill(api, "claude-fake-1")
        generate.run(recipe_for(tmp_path / "run", api, judge=True))  # done: read again, the bill is the same
        assert server_bill(api, "claude-fake-1") == judge_bill
    stage = costs(tmp_path / "run")["stages"]["generate:teacher"]
    assert judge_bill > 0 and stage["api_judge"]["usd"] == pytest.approx(judge_bill, rel=1e-9)
    assert stage["api_judge"]["requests"] == stage["api_judge"]["requests_sent"] == 40
    assert stage["api"]["usd"] == pytest.approx(server_bill(api, "fake-model"), rel=1e-9)
    assert costs(tmp_path / "run")["total"]["usd"] == pytest.approx(server_bill(api), rel=1e-9)


def test_a_judges_requests_spend_under_the_dollar_cap_and_a_higher_cap_keeps_what_they_cost(tmp_path):
    """Unbilled, the judge's ~$0.018 of requests crossed a $0.01 cap nearly twice over."""
    with FakeAPI() as api:
        with pytest.raises(WarmstartError, match=r"stopped before generate.budget_usd = \$0.01 could be crossed"):
            generate.run(recipe_for(tmp_path / "run", api, "generate.budget_usd=0.01", judge=True))
        assert 0 < server_bill(api, "claude-fake-1") and server_bill(api) <= 0.01
        assert costs(tmp_path / "run")["total"]["usd"] == pytest.approx(server_bill(api), rel=1e-9)
        generate.run(recipe_for(tmp_path / "run", api, "generate.budget_usd=1.0", judge=True))
        teacher_requests = sum(b["model"] == "fake-model" for b in api.billed)
    assert teacher_requests == 40  # the rollouts whose judging the cap stopped: their replies from the cache
    assert costs(tmp_path / "run")["total"]["usd"] == pytest.approx(server_bill(api), rel=1e-9)


class HiddenPrompt(Teacher):
    """A provider that bills a hidden prompt of its own: 2,000 prompt tokens more than the request sent
    (within what api.py believes: 4 x the request's bound + 4,096)."""

    def write(self, body: dict, answer: str) -> tuple[str, int, int]:
        text, prompt_tokens, completion_tokens = super().write(body, answer)
        return text, prompt_tokens + 2000, completion_tokens


def test_a_cap_crossed_by_replies_billed_above_their_bound_is_said_crossed_and_by_how_much(tmp_path):
    with FakeAPI(teacher=HiddenPrompt()) as api:
        # one wave of 16 requests fits at its bound (~$0.0004 each) and is billed ~$0.002 each
        settings = ["generate.budget_usd=0.01", "generate.max_new_tokens=64", "api.concurrency=16"]
        with pytest.raises(WarmstartError, match=r"budget_usd = \$0.01 crossed by \$0.0\d+ \(\$0.0\d+ spent\)") as said:
            generate.run(recipe_for(tmp_path / "run", api, *settings, "generate.concurrency=16"))
    assert server_bill(api) > 0.01 and "replies billed above their bound" in str(said.value)


def test_after_a_wave_billed_above_its_bound_no_later_wave_crosses_the_cap(tmp_path):
    with FakeAPI(teacher=HiddenPrompt()) as api:
        # waves of 4: the first (~$0.008) fits; at its bound (~$0.0004 a request) every later one would have
        # been sent until the bills crossed the cap
        settings = ["generate.budget_usd=0.03", "generate.max_new_tokens=64", "generate.concurrency=4"]
        with pytest.raises(WarmstartError, match="stopped before") as said:
            generate.run(recipe_for(tmp_path / "run", api, *settings, "api.concurrency=4"))
    assert 0.02 < server_bill(api) <= 0.03, server_bill(api)
    assert "reserved at" in str(said.value)  # and why the stage stopped so far below the cap


def test_a_cap_below_what_one_request_may_cost_says_so_and_what_it_may_cost(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with FakeAPI() as api:
        with pytest.raises(WarmstartError, match=r"is less than what one request may cost: up to \$0\.\d+ \(") as said:
            generate.run(recipe_for(tmp_path / "run", api, "generate.budget_usd=0.0000001"))
    assert api.log == [] and "lower max_new_tokens" in str(said.value)
    closing = [
        r.getMessage() for r in caplog.records if "replies billed" in r.getMessage() or "local" in r.getMessage()
    ]
    assert closing and all("a local policy" not in line for line in closing)  # an API teacher, nothing sent


def test_the_report_shows_the_runs_api_dollars_in_all_and_per_stage_as_costs_json_adds_them(tmp_path):
    from warmstart.report.html import build_report

    with FakeAPI() as api:
        generate.run(recipe_for(tmp_path / "run", api, judge=True))
    stage = costs(tmp_path / "run")["stages"]["generate:teacher"]
    page = build_report(tmp_path / "run").read_text()
    teacher, judge = stage["api"]["usd"], stage["api_judge"]["usd"]
    total = costs(tmp_path / "run")["total"]["usd"]
    said = f"API dollars: {money(total)} in all (generate:teacher {money(teacher)}, its judge {money(judge)})."
    assert said in page, page[:2000]
    # eval's spend, its earlier runs' and a price unknown: the total says what it leaves out
    manifest_path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    spent = {"api": True, "requests": 2, "usd": 0.5, "unknown_price_models": []}
    unpriced = {"runs": 1, "requests": 1, "usd": None, "unknown_price_models": ["mystery-model"]}
    manifest["stages"]["eval"] = {"seconds": 1.0, "api_cost": spent, "api_cost_earlier_runs": unpriced}
    manifest_path.write_text(json.dumps(manifest))
    page = build_report(tmp_path / "run").read_text()
    assert f"API dollars: {money(total + 0.5)} priced, and replies of mystery-model, whose price is unknown" in page
    assert "eval $0.5000, earlier runs price unknown" in page
