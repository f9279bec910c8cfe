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
import time
from pathlib import Path

from ..config import Recipe, with_section
from ..runs.directory import RunDir
from ..stages import curate, evaluate, generate, grpo, sft

ABLATIONS = {
    # eval row name: (curated data name, curate overrides)
    "student, answer only": ("answer-only", {"strip_reasoning": True}),
    "student, unverified data": ("unverified", {"require_passed": False}),
}
# eval row name -> the stages whose compute it took (for the report)
COMPUTE = {
    "student": ["sft:student"],
    "student, answer only": ["sft:student-answer-only"],
    "student, unverified data": ["sft:student-unverified"],
    "student + GRPO": ["sft:student", "grpo:student-grpo"],
    "base + GRPO (cold start)": ["grpo:cold-grpo"],
}


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
    results_path = evaluate.run(with_section(recipe, "eval", policies=policies))
    write_report(run_dir, json.loads(results_path.read_text()), time.time() - started)
    return results_path


def compute_of(row: str, stages: dict) -> tuple[str, str, str]:
    """Wall seconds, estimated FLOPs and flat-group fraction of the stages a row's model took."""
    names = COMPUTE.get(row)
    if not names or not all(n in stages for n in names):
        return "", "", ""
    seconds = sum(stages[n]["train_seconds"] for n in names)
    flops = sum(stages[n].get("flops_estimate", 0) for n in names)
    flat = [stages[n]["zero_variance_fraction"] for n in names if "zero_variance_fraction" in stages[n]]
    return f"{seconds:.0f}", f"{flops:.2e}", f"{flat[0]:.0%}" if flat else ""


def write_report(run_dir: RunDir, summary: dict, seconds: float) -> None:
    k, sft_cfg = summary["k"], run_dir.recipe.sft
    teacher = summary["policies"]["teacher"]["pass@1"]
    stages = run_dir.manifest()["stages"]
    lines = [
        "# warmstart demo",
        "",
        f"Wall time: {seconds:.0f} s. Held-out tasks: {summary['policies']['teacher']['tasks']}, "
        f"{k} samples each at temperature {summary['temperature']}. Each SFT run: {sft_cfg.steps} steps of "
        f"{sft_cfg.rows_per_micro_batch * sft_cfg.grad_accum} packed rows x {sft_cfg.seq_len} tokens.",
        "",
        f"| policy | pass@1 | pass@{k} | % of teacher pass@1 | gap closed | train s | train FLOPs (est.) | flat RL groups |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in summary["rows"]:
        r = summary["policies"][name]
        gap = "" if r["gap_closed"] is None or name in ("base", "teacher") else f"{r['gap_closed']:.0%}"
        share = f"{r['pass@1'] / teacher:.0%}" if teacher > 0 else ""
        wall, flops, flat = compute_of(name, stages)
        lines.append(
            f"| {name} | {r['pass@1']:.3f} | {evaluate.fmt(r[f'pass@{k}'])} | {share} | {gap} | {wall} | {flops} | {flat} |"
        )
    (run_dir.root / "report.md").write_text("\n".join(lines) + "\n")
