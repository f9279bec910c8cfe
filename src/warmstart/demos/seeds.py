"""`warmstart demo --seeds N`: the demo N times, seeds 0 .. N-1 (tasks, teacher slips, the student's
initial weights, data order, sampling), and per row the mean and spread of pass@1 across them.

Each seed is a whole demo in `<dir>/seed-<i>/` (a finished one is skipped on a rerun); `<dir>/seeds.md`
and the terminal get one table: per row the mean, the standard deviation and the range of pass@1, and
the share of the teacher's mean.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..config import Recipe, with_section
from ..runs.jsonl import write_text_atomic
from . import pump


def run(recipe: Recipe, seeds: int) -> Path:
    root = Path(recipe.run.dir)
    results = []
    for seed in range(seeds):
        seeded = with_section(recipe, "run", dir=str(root / f"seed-{seed}"), seed=seed)
        results.append(json.loads(pump.run(seeded).read_text()))
    table = spread(results)
    out = root / "seeds.md"
    write_text_atomic(out, markdown(table, seeds))
    show(table, seeds)
    return out


def spread(results: list[dict]) -> list[dict]:
    """Per row (in the first run's order): mean, standard deviation, min and max of pass@1 across runs."""
    rows = []
    for name in results[0]["rows"]:
        values = [r["policies"][name]["pass@1"] for r in results]
        stdev = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(
            {
                "name": name,
                "mean": statistics.fmean(values),
                "stdev": stdev,
                "min": min(values),
                "max": max(values),
                "values": values,
            }
        )
    return rows


def teacher_mean(rows: list[dict]) -> float | None:
    return next((r["mean"] for r in rows if r["name"] == "teacher"), None)


def markdown(rows: list[dict], seeds: int) -> str:
    teacher = teacher_mean(rows)
    lines = [
        f"# warmstart demo, {seeds} seeds (0 .. {seeds - 1})",
        "",
        "| policy | mean pass@1 | std | min – max | % of teacher (mean) | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = f"{r['mean'] / teacher:.0%}" if teacher else ""
        per_seed = ", ".join(f"{v:.3f}" for v in r["values"])
        lines.append(
            f"| {r['name']} | {r['mean']:.3f} | {r['stdev']:.3f} | {r['min']:.3f} – {r['max']:.3f} | {share} | {per_seed} |"
        )
    return "\n".join(lines) + "\n"


def show(rows: list[dict], seeds: int) -> None:
    teacher = teacher_mean(rows)
    table = Table(title=f"pass@1 over {seeds} seeds")
    for column in ("policy", "mean", "std", "min – max", "% of teacher"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in rows:
        share = f"{r['mean'] / teacher:.0%}" if teacher else ""
        table.add_row(
            escape(r["name"]), f"{r['mean']:.3f}", f"{r['stdev']:.3f}", f"{r['min']:.3f} – {r['max']:.3f}", share
        )
    Console().print(table)
