"""The cost ledger: API tokens times a price table, with local compute time beside the money.

Stages that call a policy add up the usage of every turn of every trajectory (`CostLedger`) and store
the summary in the manifest under their stage; `write_costs` then rebuilds `costs.json` from the
manifest: per stage the API money (or a flag naming the models with no price: an unknown price is
never counted as 0) and the stage's wall seconds, with totals and the money per accepted (verified)
trajectory of the generate stages. A stage whose rerun starts its ledger afresh (eval) carries what its
earlier runs paid (`carried_spend`), and the totals count it: money spent is never dropped from the table.
A stage whose last run failed keeps `"status": "failed"` and counts in the totals (it was spent), and so do
the seconds of failed runs a later run's entry replaced (`seconds_failed_before`) and of training runs stopped
part-way beside a finished run's entry (`stopped_runs`, `seconds_stopped` here); the total's
`seconds_failed` says how much of the run's seconds went to failed runs (the report shows them apart from each
row's cost: a failed training run published no model, report/lineage.py).

Not priced: Anthropic's cache-write premium (cache writes are counted as plain input tokens).
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

from ..errors import WarmstartError
from ..types import Trajectory, Usage
from .jsonl import write_json_atomic

log = logging.getLogger(__name__)
PRICED_PROVIDERS = {"openai", "anthropic"}  # others run locally: their cost is compute time
# Dollars kept in costs.json to a ten-billionth: below the price of one token (cached gpt-4.1-nano input is
# $0.000000025), so a sub-cent bill keeps its digits; above float noise, so sums read as what was billed.
USD_PLACES = 10
# A stage's API spend in the manifest (its key there: its key in costs.json): its run's (the teacher's, or
# eval's rows'), its LLM judge's (`[env.judge]`), and what its earlier runs paid (`carried_spend`).
API_PARTS = {"api_cost": "api", "api_cost_judge": "api_judge", "api_cost_earlier_runs": "api_earlier_runs"}


def money(usd: float) -> str:
    """Dollars for a person: to four places with thousands separators, and an amount under a cent to two
    significant digits ($0.000013), never shown as $0.0000."""
    if usd == 0:
        return "$0"
    if abs(usd) >= 0.01:
        return f"${usd:,.4f}"
    return f"${usd:.{1 - math.floor(math.log10(abs(usd)))}f}"


def load_prices(path: str | None) -> dict[str, dict]:
    return price_table(path).get("models", {})


def price_table(path: str | None) -> dict:
    """`api.prices` (or the built-in table) parsed: `models` (prices) and `providers` (terms of use)."""
    try:
        text = Path(path).read_text() if path else resources.files("warmstart.runs").joinpath("prices.toml").read_text()
        table = tomllib.loads(text)
    except FileNotFoundError:
        raise WarmstartError(f"api.prices: {path} not found") from None
    except UnicodeDecodeError as exc:
        raise WarmstartError(f"api.prices: {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:  # a directory, no permission, an I/O error: one line, not a traceback
        raise WarmstartError(f"api.prices: {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise WarmstartError(f"api.prices: {path} is not valid TOML ({exc})") from None
    problem = price_table_problem(table)
    if problem:  # found when the stage starts, not at the first bill after requests were paid for
        raise WarmstartError(f"api.prices: {path or 'the built-in table'}: {problem}")
    return table


PRICE_FIELDS = {"input": True, "output": True, "cached_input": False, "batch": False}  # name: required
# No model is priced near this (dollars per million tokens): a larger number is a typo, and an infinite one
# (`inf`, or `1e400`, which TOML reads as inf) makes every bill NaN, which no dollar cap ever refuses.
MOST_PER_MILLION = 10_000.0


def price_table_problem(table: dict) -> str | None:
    """What is wrong with a price table's models, or None: each `[models.NAME]` a table of dollars per
    million tokens (`input`, `output`; optional `cached_input`, and `batch`, a factor), finite numbers from 0
    to `MOST_PER_MILLION`."""
    models = table.get("models", {})
    if not isinstance(models, dict):
        return "`models` must be a table of [models.NAME] entries"
    for name, entry in models.items():
        if not isinstance(entry, dict):
            return f"models.{name} must be a table (input = ..., output = ...)"
        unknown = sorted(set(entry) - set(PRICE_FIELDS))
        if unknown:
            return f"models.{name}: unknown field {unknown[0]!r} (fields: {', '.join(PRICE_FIELDS)})"
        for field, required in PRICE_FIELDS.items():
            value = entry.get(field)
            if value is None:
                if required:
                    return f"models.{name}: no {field!r} price"
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                return f"models.{name}.{field} = {value!r}: expected a number >= 0"
            if not value <= MOST_PER_MILLION:  # inf too (nan was refused above)
                return f"models.{name}.{field} = {value!r}: expected at most {MOST_PER_MILLION:,.0f} dollars per million tokens"
    return None


# What a provider appends to a model's name for a dated snapshot of it: "-2024-08-06", "-20250514", "-0613",
# "-latest", Vertex's "@20240620". Any other tail names another model ("o3-pro" is not "o3").
SNAPSHOT_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4}|-latest|@\d{8})")


def price_of(model: str, prices: dict[str, dict]) -> dict | None:
    """The price of `model`: its own entry, else the entry of the model it is a dated snapshot of; None where
    the table has neither (an unknown price is never guessed from a similar name)."""
    if model in prices:
        return prices[model]
    snapshot_of = [name for name in prices if model.startswith(name) and SNAPSHOT_SUFFIX.fullmatch(model[len(name) :])]
    return prices[max(snapshot_of, key=len)] if snapshot_of else None


def usd_of(tokens_in: int, tokens_cached: int, tokens_out: int, price: dict, batch: bool) -> float:
    """Dollars of one reply's tokens at `price` (per million tokens); cached prompt tokens at the cached rate."""
    cost = (
        (tokens_in - tokens_cached) * price["input"]
        + tokens_cached * price.get("cached_input", price["input"])
        + tokens_out * price["output"]
    )
    return cost / 1e6 * (price.get("batch", 1.0) if batch else 1.0)


def load_terms(path: str | None) -> dict[str, dict]:
    """Each provider's terms of use (`[providers.NAME]`: `terms`, and the `hosts` they govern where given),
    recorded on every trajectory (`terms_of`): the built-in table's, updated by the user's (a price table of
    one's own need not repeat them)."""
    providers = price_table(None).get("providers", {}) | (price_table(path).get("providers", {}) if path else {})
    return {name: entry for name, entry in providers.items() if "terms" in entry}


def terms_of(terms: dict[str, dict], provenance) -> str | None:
    """The terms of use that govern a trajectory's teacher: its provider's, where the endpoint it came from
    is one of the provider's `hosts` (an OpenAI-compatible server of one's own speaks OpenAI's API but is
    not under OpenAI's terms); None (not recorded) otherwise."""
    entry = terms.get(provenance.provider)
    if entry is None:
        return None
    hosts = entry.get("hosts")
    if hosts is not None and urlparse(provenance.endpoint or "").hostname not in hosts:
        return None
    return entry["terms"]


class CostLedger:
    """Billed tokens and money of a stage's trajectories, and (`count_requests`) what its requests came to.

    Every reply that carried usage is billed: each turn's (`Trajectory.usage`) and the ones refused and
    asked again (`Trajectory.rejected_usage`), priced as the model the provider says served it. A turn
    answered from the response cache cost nothing and is counted apart. A reply with impossible counts
    never reaches a record (`policies.api.reply_problem`), so nothing negative is priced.
    """

    def __init__(self, prices: dict[str, dict], batch: bool):
        self.prices, self.batch = prices, batch
        self.totals = {
            "trajectories": 0,
            "accepted": 0,
            "errors": 0,
            "requests": 0,  # replies billed (each turn's and each refused one's)
            "cache_hits": 0,
            "paid_unwritten": 0,  # of `requests`: replies a stopped run paid for and never wrote (`add_unwritten`)
            "tokens_in": 0,
            "tokens_out": 0,
            "tokens_cached": 0,
        }
        self.requests: dict = {}  # this process's request tally (sent, failed, retried): `count_requests`
        self.api = False  # an API policy's trajectories were added: money is the stage's cost
        self.usd = 0.0
        self.unknown: set[str] = set()

    def add(self, trajectory: Trajectory, accepted: bool) -> None:
        self.totals["trajectories"] += 1
        self.totals["accepted"] += accepted
        self.totals["errors"] += trajectory.error is not None
        if trajectory.provenance.provider not in PRICED_PROVIDERS:
            return  # a local policy: its cost is compute time
        self.api = True
        for usage in [*trajectory.usage, *trajectory.rejected_usage]:
            if usage.from_cache:
                self.totals["cache_hits"] += 1
                continue
            self._bill(usage, trajectory.provenance.model)

    def add_unwritten(self, usage: Usage, model: str) -> None:
        """A reply paid for by a run of the stage that stopped before writing it (stages/paid_replies.py)."""
        self.totals["paid_unwritten"] += 1
        self.add_usage(usage, model)

    def add_usage(self, usage: Usage, model: str) -> None:
        """One paid reply that no trajectory of the stage carries (an LLM judge's: its verdict keeps only the
        text), priced as the model that served it, else as `model`, the one asked."""
        self.api = True
        self._bill(usage, model)

    def _bill(self, usage: Usage, model: str) -> None:
        self.totals["requests"] += 1
        self.totals["tokens_in"] += usage.tokens_in
        self.totals["tokens_out"] += usage.tokens_out
        self.totals["tokens_cached"] += usage.tokens_cached
        self._price(usage.model or model, usage)

    def count_requests(self, tally: dict) -> None:
        """What this process's requests came to (`policies.api.RequestTally.summary`): sent, failed, retried."""
        self.requests = tally

    def _price(self, model: str, usage) -> None:
        price = price_of(model, self.prices)
        if price is None:
            self.unknown.add(model)
            return
        self.usd += usd_of(usage.tokens_in, usage.tokens_cached, usage.tokens_out, price, self.batch)

    def summary(self) -> dict:
        usd = None if self.unknown else round(self.usd, USD_PLACES)
        accepted = self.totals["accepted"]
        return {
            **self.totals,
            **self.requests,
            "api": self.api,
            "usd": usd if self.api else 0.0,
            # The replies of known price (all of them where `usd` is a number): what a price unknown leaves said.
            "usd_priced": round(self.usd, USD_PLACES),
            "usd_per_accepted": round(usd / accepted, USD_PLACES)
            if self.api and usd is not None and accepted
            else None,
            "unknown_price_models": sorted(self.unknown),
        }


def summed(summaries: list[dict]) -> dict:
    """Several processes' ledger summaries (`CostLedger.summary`) as one: counts and dollars added (unknown
    where any process met a model of no price), the models of no price joined."""
    first, *rest = summaries
    total = dict(first)
    for other in rest:
        for key, value in other.items():
            total[key] = merged_value(key, total.get(key), value)
    usd, accepted = total.get("usd"), total.get("accepted")
    total["usd"] = round(usd, USD_PLACES) if usd is not None else None
    total["usd_per_accepted"] = (
        round(usd / accepted, USD_PLACES) if total.get("api") and usd is not None and accepted else None
    )
    return total


def merged_value(key: str, mine, theirs):
    """One key of two processes' ledger summaries, as one: the models of no price joined, flags or-ed, counts
    and dollars added (an unknown amount stays unknown); the per-accepted figure is `summed`'s to recompute."""
    if key == "unknown_price_models":
        return sorted({*(mine or []), *theirs})
    if isinstance(theirs, bool):
        return bool(mine) or theirs
    if key == "usd_per_accepted" or mine is None or theirs is None:
        return None
    return mine + theirs if isinstance(theirs, (int, float)) else mine


def describe(stage: str, cost: dict) -> str:
    if not cost.get("api", cost["requests"] > 0):
        return f"{stage}: no API requests (a local policy: its cost is the stage's compute time in costs.json)"
    unknown = f"price unknown for {', '.join(cost['unknown_price_models'])}"
    dollars = money(cost["usd"]) if cost["usd"] is not None else unknown
    per = (
        f" ({money(cost['usd_per_accepted'])} per accepted trajectory)" if cost["usd_per_accepted"] is not None else ""
    )
    sent = (
        f"; this run sent {cost['requests_sent']}, {cost['requests_failed']} failed, {cost['retries']} retried"
        if "requests_sent" in cost
        else ""
    )
    return (
        f"{stage}: {cost['requests']} replies billed, {cost['cache_hits']} from the cache{sent}; "
        f"tokens in {cost['tokens_in']:,} (cached {cost['tokens_cached']:,}) out {cost['tokens_out']:,}: {dollars}{per}"
    )


SPEND_FIELDS = ("requests", "tokens_in", "tokens_cached", "tokens_out")


def carried_spend(entry: dict | None) -> dict | None:
    """What the earlier runs of a stage paid, where the entry recording them is about to be replaced by a run
    whose ledger starts from nothing (eval asks every sample again, so an earlier run's bill is in no later
    run's ledger): the entry's own spend (its judge's included) and what it had carried, summed; None where
    they paid nothing."""
    entry = entry or {}
    parts = [p for p in map(entry.get, API_PARTS) if p and p.get("requests")]
    if not parts:
        return None
    return {
        "runs": sum(p.get("runs", 1) for p in parts),
        **{field: sum(p.get(field, 0) for p in parts) for field in SPEND_FIELDS},
        "usd": None if any(p["usd"] is None for p in parts) else round(sum(p["usd"] for p in parts), USD_PLACES),
        "unknown_price_models": sorted({m for p in parts for m in p["unknown_price_models"]}),
    }


def failed_seconds(entry: dict | None) -> float:
    """The wall seconds of a stage's runs that failed, as its manifest entry records them: the entry's own
    where its run failed, those an entry it replaced carried (`seconds_failed_before`, runs/directory.py),
    and those of runs stopped part-way beside it (`stopped_runs`)."""
    entry = entry or {}
    own = (entry.get("seconds") or 0.0) if entry.get("status") == "failed" else 0.0
    return round(own + (entry.get("seconds_failed_before") or 0.0) + stopped_seconds(entry), 3)


def unfinished_seconds(entry: dict | None) -> float:
    """The wall seconds of a stage's runs that recorded themselves unfinished without failing (`warmstart
    estimate`'s paid pilot, status "pilot"), as its manifest entry records them: the entry's own where it
    is one, and those of such runs it replaced (`seconds_before`, runs/directory.py)."""
    entry = entry or {}
    own = (entry.get("seconds") or 0.0) if entry.get("status", "done") not in ("done", "failed") else 0.0
    return round(own + (entry.get("seconds_before") or 0.0), 3)


def spent_seconds(entry: dict) -> float:
    """The wall seconds a stage's manifest entry accounts for: its run's, and those of the failed and the
    unfinished runs it replaced and of the runs stopped beside it."""
    carried = (entry.get("seconds_failed_before") or 0.0) + (entry.get("seconds_before") or 0.0)
    return (entry.get("seconds") or 0.0) + carried + stopped_seconds(entry)


def stopped_seconds(entry: dict) -> float:
    """The wall seconds of the runs of a stage that stopped part-way beside its finished run's record."""
    return sum(run.get("seconds") or 0.0 for run in entry.get("stopped_runs") or [])


def write_costs(root: Path, manifest: dict) -> dict:
    """costs.json from the manifest's stages: money and seconds per stage, and totals."""
    stages, usd, unknown, accepted = {}, 0.0, set(), 0
    data_usd, data_unknown = 0.0, False  # what the teacher data cost: the generate stages' money only
    for name, info in sorted(manifest.get("stages", {}).items()):
        entry = {"seconds": info.get("seconds"), **({"status": info["status"]} if "status" in info else {})}
        if info.get("seconds_failed_before"):  # runs of the stage that failed before this one: spent all the same
            entry["seconds_failed_before"] = info["seconds_failed_before"]
        if info.get("seconds_before"):  # a pilot's run it replaced (`warmstart estimate`): spent all the same
            entry["seconds_before"] = info["seconds_before"]
        if stopped := stopped_seconds(info):  # runs stopped part-way since it: spent all the same
            entry["seconds_stopped"] = round(stopped, 3)
        if info.get("estimate"):  # generate's bill before the run, beside what the job came to
            entry["estimate_vs_actual"] = {"estimate": info["estimate"], "actual": info.get("actual")}
        # Earlier runs' spend is in the entry a run replaced: money spent all the same, as its judge's is.
        for field, key in API_PARTS.items():
            cost = info.get(field)
            if not cost:
                continue
            entry[key] = cost
            unknown |= set(cost["unknown_price_models"])
            usd += cost["usd"] or 0.0
            if name.startswith("generate:") and field != "api_cost_earlier_runs":  # the data and its judging
                accepted += cost["accepted"] if field == "api_cost" else 0
                data_usd += cost["usd"] or 0.0
                data_unknown |= cost["usd"] is None
        stages[name] = entry
    total_usd = None if unknown else round(usd, USD_PLACES)
    summary = {
        "stages": stages,
        "total": {
            "usd": total_usd,
            "unknown_price_models": sorted(unknown),
            # the teacher data's dollars per accepted trajectory (eval's API spend made no trajectory)
            "usd_per_accepted_trajectory": (
                round(data_usd / accepted, USD_PLACES) if not data_unknown and accepted else None
            ),
            "seconds": round(sum(spent_seconds(info) for info in manifest.get("stages", {}).values()), 2),
            # Of `seconds`: those of runs that failed (spent all the same; the report lists them apart).
            "seconds_failed": round(sum(failed_seconds(info) for info in manifest.get("stages", {}).values()), 2),
        },
    }
    write_json_atomic(root / "costs.json", summary, finite=True)
    return summary
