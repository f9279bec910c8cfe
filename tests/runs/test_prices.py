"""The price table: a model is priced as itself or as a dated snapshot of a listed model, never by a similar
name; a table with a bad entry is refused when read, before any request is paid for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import small_recipe, write_recipe_file
from warmstart.errors import WarmstartError
from warmstart.runs.costs import CostLedger, load_prices, money, price_of, write_costs
from warmstart.runs.jsonl import write_json_atomic
from warmstart.types import Usage

BUILTIN = load_prices(None)


@pytest.mark.parametrize(
    ("model", "listed"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("o3-2025-04-16", "o3"),
    ],
)
def test_a_dated_snapshot_is_priced_as_its_model(model, listed):
    assert price_of(model, BUILTIN) is BUILTIN[listed]


@pytest.mark.parametrize(
    "model", ["o3-pro", "o3-deep-research", "o4-mini-deep-research", "claude-opus-4-5", "gpt-4o-audio"]
)
def test_another_model_whose_name_begins_like_a_listed_one_has_no_price(model):
    assert price_of(model, BUILTIN) is None  # o3-pro is ten times o3's price: never guessed


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("input = 1.0", "models.m: no 'output' price"),
        ('input = "1.0"\noutput = 2.0', "models.m.input = '1.0': expected a number >= 0"),
        ("input = -1.0\noutput = 2.0", "models.m.input = -1.0: expected a number >= 0"),
        ("input = 1.0\noutput = 2.0\nouput = 3.0", "models.m: unknown field 'ouput'"),
        ("input = 1.0\noutput = true", "models.m.output = True: expected a number >= 0"),
        # an infinite price makes every bill NaN, which no dollar cap refuses; 1e400 is how TOML spells inf too
        ("input = inf\noutput = 2.0", "models.m.input = inf: expected at most 10,000 dollars per million"),
        ("input = 1e400\noutput = 2.0", "models.m.input = inf: expected at most"),
        ("input = 1.0\noutput = 1e308", "models.m.output = 1e\\+308: expected at most"),
        ("input = 1.0\noutput = 2.0\nbatch = inf", "models.m.batch = inf: expected at most"),
    ],
)
def test_a_bad_price_entry_is_one_error_naming_it(tmp_path, entry, words):
    prices = tmp_path / "prices.toml"
    prices.write_text(f"[models.m]\n{entry}\n")
    with pytest.raises(WarmstartError, match=f"api.prices: {prices}: {words}"):
        load_prices(str(prices))


def test_a_price_table_that_is_not_a_table_of_models_is_refused(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text("models = 3\n")
    with pytest.raises(WarmstartError, match="`models` must be a table"):
        load_prices(str(prices))


def test_a_dollar_cap_at_batch_prices_is_refused_before_anything_is_asked(tmp_path):
    recipe = small_recipe(
        tmp_path / "run", "generate.teacher='openai:gpt-4o@http://127.0.0.1:9/v1'", "generate.budget_usd=1.0"
    )
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    result = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "generate", str(recipe_file), "--set", "api.batch_discount=true"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "api.batch_discount" in lines[0], result.stderr


def test_a_price_table_that_is_not_utf8_or_cannot_be_read_is_one_error_naming_it(tmp_path):
    latin1 = tmp_path / "prices.toml"
    latin1.write_bytes("# prix en \u00e9t\u00e9\n[models.m]\ninput = 1.0\noutput = 2.0\n".encode("latin-1"))
    with pytest.raises(WarmstartError, match=f"api.prices: {latin1} is not UTF-8 text \\(byte 10\\)"):
        load_prices(str(latin1))
    with pytest.raises(WarmstartError, match=f"api.prices: {tmp_path}: Is a directory"):
        load_prices(str(tmp_path))


def test_a_snapshot_the_provider_prices_apart_from_its_alias_has_its_own_price():
    assert price_of("gpt-4o-2024-05-13", BUILTIN) == {"input": 5.0, "output": 15.0, "batch": 0.5}
    assert price_of("gpt-4o-2024-08-06", BUILTIN) is BUILTIN["gpt-4o"]


@pytest.mark.parametrize(
    ("usd", "shown"),
    [(0.0, "$0"), (0.0000126, "$0.000013"), (0.0042, "$0.0042"), (0.044, "$0.0440"), (1234.56789, "$1,234.5679")],
)
def test_money_under_a_cent_keeps_two_significant_digits_and_large_sums_their_separators(usd, shown):
    assert money(usd) == shown


def test_costs_json_keeps_a_sub_cent_bill_to_its_digits():
    ledger = CostLedger({"gpt-4.1-nano": BUILTIN["gpt-4.1-nano"]}, batch=False)
    for _ in range(3):  # three tiny replies: $0.0000042 each
        ledger.add_usage(Usage(tokens_in=18, tokens_out=6, model="gpt-4.1-nano"), "gpt-4.1-nano")
    ledger.totals["accepted"] = 3
    summary = ledger.summary()
    assert summary["usd"] == pytest.approx(3 * 4.2e-6, rel=1e-9)
    assert summary["usd_per_accepted"] == pytest.approx(4.2e-6, rel=1e-9)  # not round(x, 6): 4e-06


def test_a_judges_spend_is_its_own_line_of_its_stage_and_counted_in_the_totals(tmp_path):
    cost = {"usd": 0.002, "accepted": 4, "unknown_price_models": [], "requests": 4}
    judge = {"usd": 0.04, "accepted": 0, "unknown_price_models": [], "requests": 4}
    manifest = {"stages": {"generate:teacher": {"seconds": 1.0, "api_cost": cost, "api_cost_judge": judge}}}
    summary = write_costs(tmp_path, manifest)
    assert summary["stages"]["generate:teacher"]["api_judge"] == judge
    assert summary["total"]["usd"] == pytest.approx(0.042)
    assert summary["total"]["usd_per_accepted_trajectory"] == pytest.approx(0.042 / 4)  # judging the data is its cost


def test_money_that_is_not_a_number_is_refused_by_the_writer_not_written_as_invalid_json(tmp_path):
    with pytest.raises(WarmstartError, match="NaN or infinity"):
        write_json_atomic(tmp_path / "costs.json", {"usd": float("nan")}, finite=True)
    assert not (tmp_path / "costs.json").exists()


def test_processes_ledgers_summed_keep_an_unknown_price_unknown():
    from warmstart.runs.costs import CostLedger, summed
    from warmstart.types import Usage

    priced, unpriced = CostLedger({"m": {"input": 1.0, "output": 2.0}}, False), CostLedger({}, False)
    priced.add_usage(Usage(tokens_in=1_000_000, tokens_out=1_000_000), "m")
    unpriced.add_usage(Usage(tokens_in=10, tokens_out=5), "other")
    both = summed([priced.summary(), priced.summary()])
    assert (both["usd"], both["requests"], both["tokens_in"], both["api"]) == (6.0, 2, 2_000_000, True)
    with_unknown = summed([priced.summary(), unpriced.summary()])
    assert with_unknown["usd"] is None and with_unknown["unknown_price_models"] == ["other"]
    assert with_unknown["tokens_out"] == 1_000_005
