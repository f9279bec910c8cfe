"""`demo`: the whole pump offline, on an embedded default, in a few minutes on 2 CPU cores.

reference teacher (with slips) -> verified trajectories -> curate -> SFT of a tiny Llama -> GRPO ->
eval of base, student, student + GRPO and teacher. Two more SFT runs with the same budget answer two
questions the field argues about: what the reasoning chain is worth (same tasks, chain removed) and
what verification is worth (same budget on the unfiltered teacher data, slips included). A cold-start
GRPO run from the untrained base gets the same wall time as SFT + GRPO: the warm start measured
against RL alone. The report gives each row's compute (wall seconds and estimated FLOPs) and the
fraction of RL groups whose rewards were all equal (no learning signal).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ..config import Recipe, with_section
from ..metrics.tally import comparison_note
from ..report.html import build_report
from ..report.lineage import row_lineages
from ..runs.directory import RunDir, recipe_when_worked
from ..stages import curate, evaluate, generate, grpo, sft

log = logging.getLogger(__name__)

ABLATIONS = {
    # eval row name: (curated data name, curate overrides)
    "student, answer only": ("answer-only", {"strip_reasoning": True}),
    "student, unverified data": ("unverified", {"require_passed": False}),
}
# The paired differences the demo is about, beside every row minus base: what GRPO added to the student,
# what the chain and verification are worth, and the warm start against the cold one.
COMPARE = [
    ["student + GRPO", "student"],
    ["student", "student, answer only"],
    ["student", "student, unverified data"],
    ["student + GRPO", "base + GRPO (cold start)"],
]


def run(recipe: Recipe) -> Path:
    """The demo's stages, its table and report; the run's recipe.toml written once a stage did work."""
    with recipe_when_worked(recipe):
        return run_stages(recipe)


def run_stages(recipe: Recipe) -> Path:
    started = time.time()
    run_dir = RunDir(recipe)
    generate.run(recipe)
    curate.run(recipe)
    sft.run(recipe)
    policies = {"base": "base", "teacher": "teacher", "student": "student"}
    for row, (data, curate_changes) in ABLATIONS.items():
        curate.run(with_section(recipe, "curate", output=data, **curate_changes))
        sft.run(with_section(recipe, "sft", data=data, output=f"student-{data}"))
        policies[row] = f"run:student-{data}"
    grpo.run(with_section(recipe, "grpo", init="student", output="student-grpo"))
    # The cold start gets the wall time that SFT + GRPO took (the compute a user pays for here).
    # Equal estimated FLOPs would take ~5x longer: sampling does far fewer FLOP/s than training on
    # a CPU. Both are reported. No refills: all its groups are flat, refilling adds nothing.
    stages = run_dir.manifest()["stages"]
    budget = stages["sft:student"]["train_seconds"] + stages["grpo:student-grpo"]["train_seconds"]
    grpo.run(
        with_section(
            recipe, "grpo", init="base", output="cold-grpo", max_refills=0, steps=100_000, seconds_budget=budget
        )
    )
    policies["student + GRPO"] = "run:student-grpo"
    policies["base + GRPO (cold start)"] = "run:cold-grpo"
    results_path = evaluate.run(with_section(recipe, "eval", policies=policies, compare=COMPARE))
    write_report(run_dir, json.loads(results_path.read_text()), time.time() - started)
    log.info("report: %s", build_report(run_dir.root))
    return results_path


def compute_of(row: str, lineages: dict, stages: dict) -> tuple[str, str, str]:
    """Wall seconds, estimated FLOPs and flat-group fraction of the stages a row's model took."""
    lin = lineages.get(row)
    if lin is None or not lin.stages:
        return "", "", ""
    last = stages[lin.stages[0]]
    flat = f"{last['zero_variance_fraction']:.0%}" if "zero_variance_fraction" in last else ""
    return f"{lin.seconds:.0f}", f"{lin.flops:.2e}", flat


def write_report(run_dir: RunDir, summary: dict, seconds: float) -> None:
    k, sft_cfg = summary["k"], run_dir.recipe.sft
    teacher = summary["policies"]["teacher"]["pass@1"]
    stages = run_dir.manifest()["stages"]
    lineages = row_lineages(summary, stages, run_dir.root)
    lines = [
        "# warmstart demo",
        "",
        f"Wall time: {seconds:.0f} s. Held-out tasks: {summary['policies']['teacher']['tasks']}, "
        f"{k} samples each at temperature {summary['temperature']}. Each SFT run: {sft_cfg.steps} steps of "
        f"{sft_cfg.rows_per_micro_batch * sft_cfg.grad_accum} packed rows x {sft_cfg.seq_len} tokens. "
        "Intervals: 95 %, bootstrap over tasks.",
        "",
        f"| policy | pass@1 [95 %] | pass@{k} | % of teacher pass@1 | gap closed | train s | train FLOPs (est.) "
        "| flat RL groups |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in summary["rows"]:
        r = summary["policies"][name]
        gap = "" if r["gap_closed"] is None or name in ("base", "teacher") else f"{r['gap_closed']:.0%}"
        share = f"{r['pass@1'] / teacher:.0%}" if teacher > 0 else ""
        wall, flops, flat = compute_of(name, lineages, stages)
        pass_1 = evaluate.fmt(r["pass@1"], r.get("pass@1_ci"))
        lines.append(
            f"| {name} | {pass_1} | {evaluate.fmt(r[f'pass@{k}'])} | {share} | {gap} | {wall} | {flops} | {flat} |"
        )
    lines += comparison_lines(summary.get("comparisons", []))
    (run_dir.root / "report.md").write_text("\n".join(lines) + "\n")


def comparison_lines(comparisons: list[dict]) -> list[str]:
    """The paired differences of an eval as a markdown table (after a blank line)."""
    lines = ["", "| policy | minus | pass@1 difference [95 %] | |", "|---|---|---|---|"]
    for c in comparisons:
        interval = f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"
        lines.append(f"| {c['a']} | {c['b']} | {c['diff']:+.3f} {interval} | {comparison_note(c)} |")
    return lines
