"""`demo`: the whole pump offline, on an embedded default, in a few minutes on 2 CPU cores.

reference teacher (with slips) -> verified trajectories -> curate -> SFT of a tiny Llama -> eval of
base, student and teacher. Two more SFT runs with the same budget answer two questions the field
argues about: what the reasoning chain is worth (same tasks, chain removed) and what verification is
worth (same budget on the unfiltered teacher data, slips included).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import Recipe
from ..runs import RunDir
from . import curate, evaluate, generate, sft

ABLATIONS = {
    # eval row name: (curated data name, curate overrides)
    "student, answer only": ("answer-only", {"strip_reasoning": True}),
    "student, unverified data": ("unverified", {"require_passed": False}),
}


def with_section(recipe: Recipe, section: str, **changes) -> Recipe:
    return recipe.model_copy(update={section: getattr(recipe, section).model_copy(update=changes)})


def run(recipe: Recipe) -> Path:
    started = time.time()
    run_dir = RunDir(recipe)
    run_dir.write_recipe()
    generate.run(recipe)
    curate.run(recipe)
    sft.run(recipe)
    policies = {"base": "base", "teacher": "teacher", "student": "student"}
    for row, (data, curate_changes) in ABLATIONS.items():
        curate.run(with_section(recipe, "curate", output=data, **curate_changes))
        sft.run(with_section(recipe, "sft", data=data, output=f"student-{data}"))
        policies[row] = f"run:student-{data}"
    results_path = evaluate.run(with_section(recipe, "eval", policies=policies))
    write_report(run_dir, json.loads(results_path.read_text()), time.time() - started)
    return results_path


def write_report(run_dir: RunDir, summary: dict, seconds: float) -> None:
    k, sft_cfg = summary["k"], run_dir.recipe.sft
    teacher = summary["policies"]["teacher"]["pass@1"]
    lines = [
        "# warmstart demo",
        "",
        f"Wall time: {seconds:.0f} s. Held-out tasks: {summary['policies']['teacher']['tasks']}, "
        f"{k} samples each at temperature {summary['temperature']}. Each SFT run: {sft_cfg.steps} steps of "
        f"{sft_cfg.rows_per_micro_batch * sft_cfg.grad_accum} packed rows x {sft_cfg.seq_len} tokens.",
        "",
        f"| policy | pass@1 | pass@{k} | % of teacher pass@1 | gap closed |",
        "|---|---|---|---|---|",
    ]
    for name in summary["rows"]:
        r = summary["policies"][name]
        gap = "" if r["gap_closed"] is None or name in ("base", "teacher") else f"{r['gap_closed']:.0%}"
        share = f"{r['pass@1'] / teacher:.0%}" if teacher > 0 else ""
        lines.append(f"| {name} | {r['pass@1']:.3f} | {r[f'pass@{k}']:.3f} | {share} | {gap} |")
    (run_dir.root / "report.md").write_text("\n".join(lines) + "\n")
