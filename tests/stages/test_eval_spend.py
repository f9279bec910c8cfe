"""What eval pays for is in its ledger: an API row's requests and their counts, and an LLM judge's requests on
their own line (they had been in no ledger, the report's dollars and costs.json's total leaving them out:
review 82). The teacher and the judge are a loopback server (tests/fake_api.py) behind the official openai SDK;
the server's own log of what it billed is the truth the ledger is held to."""

from __future__ import annotations

import json

import pytest
from test_generate_spend import PRICES, judged_grpo, price_file, recipe_for, server_bill

from fake_api import FakeAPI
from warmstart.stages import evaluate


def test_an_eval_judges_requests_and_its_rows_requests_are_billed_and_counted(tmp_path):
    with FakeAPI() as api:
        recipe = recipe_for(
            tmp_path / "run",
            api,
            f"eval.policies={{teacher='openai:fake-model@{api.url}/v1'}}",
            "eval.k=2",
            judge=True,
        )
        evaluate.run(recipe)
        row_requests = sum(b["model"] == "fake-model" for b in api.billed)
    costs = json.loads((tmp_path / "run" / "costs.json").read_text())
    stage = costs["stages"]["eval"]
    assert set(PRICES) == {b["model"] for b in api.billed}
    assert stage["api"]["usd"] == pytest.approx(server_bill(api, "fake-model"), rel=1e-9)
    assert stage["api"]["requests_sent"] == row_requests and stage["api"]["replies_rejected"] == 0
    assert server_bill(api, "claude-fake-1") > 0
    assert stage["api_judge"]["usd"] == pytest.approx(server_bill(api, "claude-fake-1"), rel=1e-9)
    assert costs["total"]["usd"] == pytest.approx(server_bill(api), rel=1e-9)


def test_a_grpo_judges_requests_are_billed_as_the_stages_judge_line(tmp_path):
    """GRPO keeps no ledger of its own: an API judge as its reward had cost money no file recorded."""
    from helpers import curated_run
    from warmstart.stages import grpo, sft

    with FakeAPI() as api:
        recipe = curated_run(
            tmp_path / "run",
            "sft.steps=1",
            "grpo.init=base",
            "grpo.steps=1",
            "grpo.tasks_per_step=2",
            "grpo.group_size=2",
            "grpo.max_new_tokens=8",
            "grpo.max_refills=0",
            *judged_grpo(api, price_file(tmp_path / "prices.toml")),
        )
        sft.run(recipe)  # builds models/base
        before = server_bill(api)  # generate's judge (curated_run)
        grpo.run(recipe)
    costs = json.loads((tmp_path / "run" / "costs.json").read_text())
    judged = costs["stages"]["grpo:student-grpo"]["api_judge"]
    assert judged["requests"] == 4 and server_bill(api) > before  # 2 tasks x 2 samples, each judged once
    assert judged["usd"] == pytest.approx(server_bill(api) - before, rel=1e-9)
    assert costs["total"]["usd"] == pytest.approx(server_bill(api), rel=1e-9)
