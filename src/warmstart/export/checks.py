"""The run files the dataset card reads beside the data (`curated/<name>.dropped.json`, `costs.json`),
checked before anything is written: a file edited by hand into valid JSON of the wrong shape is one error
naming the file and the field, never a traceback while the card is being written. Only what the card
reads is checked (`card.py`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from ..errors import WarmstartError

# What `runs.costs.describe` reads of a stage's API bill to say it in one line.
BILL_COUNTS = ("requests", "cache_hits", "tokens_in", "tokens_cached", "tokens_out")


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_dollars(value: Any) -> bool:
    return value is None or is_number(value)


def is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def is_reasons(value: Any) -> bool:
    return isinstance(value, dict) and all(is_count(n) for n in value.values())


def is_object(value: Any) -> bool:
    return isinstance(value, dict)


def require(path: Path, where: str, value: Any, test: Callable[[Any], bool], expected: str) -> None:
    if not test(value):
        shown = json.dumps(value, ensure_ascii=False)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise WarmstartError(f"{path}: {where} is {shown}, expected {expected} (not as warmstart writes it)")


def check_dropped(path: Path, dropped: dict | None) -> None:
    """curate's report beside the data: counts per drop reason, and what went in and was kept."""
    if dropped is None:
        return
    if "dropped" in dropped:
        require(path, "dropped", dropped["dropped"], is_reasons, "an object of reason: count")
    for key in ("input", "kept"):
        if key in dropped:
            require(path, key, dropped[key], is_count, "a whole number")


def check_costs(path: Path, costs: dict | None, dropped: dict | None) -> None:
    """costs.json: the API bill of the generate stage the data came from (where it had one), and the run's
    totals."""
    if costs is None:
        return
    require(path, "stages", costs.get("stages", {}), is_object, "an object of stage: cost")
    source = f"generate:{dropped['source']}" if dropped and "source" in dropped else None
    entry = costs.get("stages", {}).get(source)
    if entry is not None:
        require(path, f"stages.{source}", entry, is_object, "an object")
        if entry.get("api"):
            check_bill(path, f"stages.{source}.api", entry["api"])
    total = costs.get("total", {})
    require(path, "total", total, is_object, "an object")
    require(path, "total.usd", total.get("usd"), is_dollars, "dollars or null (a price unknown)")
    require(path, "total.seconds", total.get("seconds", 0), is_number, "a number")
    if total.get("usd") is None:
        require(path, "total.unknown_price_models", total.get("unknown_price_models"), is_names, "a list of models")


def check_bill(path: Path, where: str, bill: Any) -> None:
    require(path, where, bill, is_object, "an object")
    require(path, f"{where}.usd", bill.get("usd"), is_dollars, "dollars or null (a price unknown)")
    require(path, f"{where}.usd_per_accepted", bill.get("usd_per_accepted"), is_dollars, "dollars or null")
    if bill.get("usd") is None:
        require(path, f"{where}.unknown_price_models", bill.get("unknown_price_models"), is_names, "a list of models")
    for key in BILL_COUNTS:
        require(path, f"{where}.{key}", bill.get(key), is_count, "a whole number")
