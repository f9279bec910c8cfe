"""The price table: a model is priced as itself or as a dated snapshot of a listed model, never by a similar
name; a table with a bad entry is refused when read, before any request is paid for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import small_recipe, write_recipe_file
from warmstart.errors import WarmstartError
from warmstart.runs.costs import load_prices, price_of

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
