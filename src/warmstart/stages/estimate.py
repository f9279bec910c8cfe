"""The bill before the run: expected teacher requests, tokens and dollars of a `generate` stage.

A pilot asks the teacher, for real, the first few tasks under the stage's own sampling policy (so an
adaptive or stop-after-verified plan is measured, not guessed); the rest is projected from it: requests
and completion tokens per task as the pilot's mean, prompt tokens per byte of prompt (the tasks' prompt
sizes are known), dollars from the price table at the full input rate (a provider's prompt cache only
makes it cheaper). The interval is a bootstrap over the pilot's tasks of that same projection (prompt
tokens per byte as the ratio of the resampled tasks' sums, completion tokens as their mean), so a pilot
of 8 tasks says how little it knows. The pilot's replies go to the response cache: `generate` then answers them from it
and pays nothing twice. `generate` states the same projection when it starts, and keeps it beside what
the job came to in `costs.json` (estimate vs actual).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean

from ..metrics.bootstrap import percentile_range
from ..policies.api import prompt_size
from ..runs.costs import USD_PLACES, money, price_of, usd_of
from ..types import Task, Trajectory

PILOT_TASKS = 20  # a reply length varies by ~50 % from task to task: 20 tasks put the mean within ~10 %


@dataclass
class TaskCost:
    """What one task's samples came to: the pilot's unit of measure."""

    prompt_bytes: int
    samples: int = 0
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0


def task_costs(tasks: list[Task], trajectories: list[Trajectory], tools: list[dict]) -> list[TaskCost]:
    """Per task, the samples, replies and tokens of its trajectories (cache hits count: they are what the
    request costs when paid)."""
    costs = {t.id: TaskCost(prompt_size(t.prompt, tools)[0]) for t in tasks}
    for trajectory in trajectories:
        cost = costs.get(trajectory.task_id)
        if cost is None or trajectory.error is not None:
            continue
        cost.samples += 1
        for usage in [*trajectory.usage, *trajectory.rejected_usage]:
            cost.requests += 1
            cost.tokens_in += usage.tokens_in
            cost.tokens_out += usage.tokens_out
    return [c for c in costs.values() if c.samples]


def project(
    pilot: list[TaskCost], tasks: list[Task], tools: list[dict], model: str | None, prices: dict, batch: bool
) -> dict:
    """The whole stage projected from the pilot's tasks; `model` None: a local teacher (no API money)."""
    if not pilot:
        raise ValueError("no pilot task was answered")
    n = len(tasks)
    mean_bytes = sum(prompt_size(t.prompt, tools)[0] for t in tasks) / n
    tokens_in, _, tokens_out = projected_tokens(pilot, n, mean_bytes)
    out = {
        "tasks": n,
        "pilot_tasks": len(pilot),
        "samples": round(n * fmean(c.samples for c in pilot)),
        "requests": round(n * fmean(c.requests for c in pilot)),
        "tokens_in": round(tokens_in),
        "tokens_out": round(tokens_out),
        "usd": None,
        "usd_range": None,
    }
    if model is None:
        return out | {"usd": 0.0, "usd_range": [0.0, 0.0], "local": True}
    price = price_of(model, prices)
    if price is not None:
        out["usd"] = round(usd_of(out["tokens_in"], 0, out["tokens_out"], price, batch), USD_PLACES)

        def dollars(sample: list[TaskCost]) -> float:
            return usd_of(*projected_tokens(sample, n, mean_bytes), price, batch)

        # The percentile range of a ratio may leave the point out by a little: it is held inside.
        low, high = percentile_range(pilot, dollars)
        out["usd_range"] = [round(min(low, out["usd"]), USD_PLACES), round(max(high, out["usd"]), USD_PLACES)]
    return out


def projected_tokens(pilot: list[TaskCost], n: int, mean_bytes: float) -> tuple[float, float, float]:
    """Prompt, cached and completion tokens of `n` tasks whose prompts average `mean_bytes`, from the pilot's
    tasks: prompt tokens per byte as a ratio of sums (a long prompt weighs as its length), completion
    tokens per task as a mean (usd_of's arguments)."""
    in_per_byte = sum(c.tokens_in for c in pilot) / max(1, sum(c.prompt_bytes for c in pilot))
    return n * mean_bytes * in_per_byte, 0, n * fmean(c.tokens_out for c in pilot)


def describe(stage: str, estimate: dict) -> str:
    if estimate.get("local"):
        dollars = "no API cost (a local teacher: its cost is compute time)"
    elif estimate["usd"] is not None:
        low, high = estimate["usd_range"]
        dollars = f"{money(estimate['usd'])} (95 % range {money(low)}-{money(high)})"
    else:
        dollars = "dollars unknown (no price for the model: api.prices)"
    return (
        f"{stage}: expected {estimate['samples']:,} samples of {estimate['tasks']:,} tasks, {estimate['requests']:,} "
        f"requests, {estimate['tokens_in']:,} prompt + {estimate['tokens_out']:,} completion tokens: {dollars}, "
        f"projected from a pilot of {estimate['pilot_tasks']} tasks"
    )


def actual(trajectories: list[Trajectory], model: str, prices: dict, batch: bool) -> dict:
    """What the stage's trajectories came to, cache hits priced as if paid: the estimate's counterpart. A
    reply served by a model with no price makes the dollars unknown (None), as in the ledger: never priced
    as the model asked for."""
    requests = tokens_in = tokens_out = 0
    usd, priced = 0.0, price_of(model, prices) is not None
    for trajectory in trajectories:
        for usage in [*trajectory.usage, *trajectory.rejected_usage]:
            requests += 1
            tokens_in, tokens_out = tokens_in + usage.tokens_in, tokens_out + usage.tokens_out
            served = price_of(usage.model or model, prices)
            priced = priced and served is not None
            usd += usd_of(usage.tokens_in, usage.tokens_cached, usage.tokens_out, served, batch) if served else 0.0
    return {
        "samples": sum(t.error is None for t in trajectories),
        "requests": requests,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "usd": round(usd, USD_PLACES) if priced else None,
    }
