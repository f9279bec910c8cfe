"""`warmstart study`: the project's claims, measured on the embedded default with their uncertainty.

    E1  gap closed versus teacher data: SFT on 1/8, 1/4, 1/2 and all of the verified chains
    E2  warm start versus cold start at equal wall time (the demo: student + GRPO vs base + GRPO)
    E3  the chain versus the answer alone (the demo: student vs answer-only, same tasks and budget)
    E4  teacher tokens vs top-k vs full logits vs on-policy at equal teacher tokens (`demo --kd`), N seeds
    E5  verified versus unverified data at two teacher error rates (the demo's 10 %, and 30 %)
    E6  iterated distillation: each generation's student is the next one's teacher, for three generations

Each experiment is a run directory of its own under the study's (`demo/`, `E1/`, `E4/seed-<i>/`, ...),
so any part reruns alone and a finished one is skipped. Every pass@1 carries a 95 % bootstrap interval
over tasks and every comparison is a paired difference on the same tasks, marked "within noise" where its
interval holds 0; E4 also gives the spread across seeds. `study.md` and `study.json` hold the table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import Recipe, with_section
from ..metrics.tally import comparison_note
from ..runs.directory import RunDir
from ..runs.jsonl import read_records, write_json_atomic, write_text_atomic
from ..stages import curate, evaluate, generate, sft
from ..types import Trajectory
from . import kd_ablation, pump
from . import seeds as seeded_runs
from .recipe import KD_SFT

FRACTIONS = (8, 4, 2, 1)  # E1: 1/8 ... all of the verified data
HIGH_ERROR_RATE = 0.3  # E5's second teacher
GENERATIONS = 3  # E6


def run(
    recipe: Recipe,
    kd_seeds: int = 3,
    kd: kd_ablation.KdDemo = kd_ablation.KdDemo(),
    kd_sft: dict = KD_SFT,
    kd_recipe: Recipe | None = None,
) -> Path:
    """The whole study; `kd` and `kd_sft` (sft keys) size E4 (the tests run it small). `kd_recipe`: E4's
    recipe as `warmstart demo --kd` makes it (its SFT settings, then the user's --set over them); without
    it, `recipe` with `kd_sft` put in."""
    root, started, rows = Path(recipe.run.dir), time.time(), []
    kd_base = kd_recipe if kd_recipe is not None else with_section(recipe, "sft", **kd_sft)
    demo = json.loads(pump.run(in_dir(recipe, root / "demo")).read_text())
    experiments = [
        lambda: demo_claims(demo),  # cheapest first: a study stopped early has the most rows
        lambda: verification(in_dir(recipe, root / "E5"), demo),
        lambda: iterated(in_dir(recipe, root / "E6")),
        lambda: data_sweep(in_dir(recipe, root / "E1")),
        lambda: kd_signals(kd_base, root / "E4", kd_seeds, kd),  # the longest, last
    ]
    for experiment in experiments:  # the table so far is written after each: hours of work show as they go
        rows += experiment()
        write_json_atomic(root / "study.json", {"rows": rows, "seconds": round(time.time() - started, 1)})
        write_text_atomic(root / "study.md", markdown(rows, time.time() - started))
    return root / "study.md"


def in_dir(recipe: Recipe, path: Path) -> Recipe:
    return with_section(recipe, "run", dir=str(path))


def row(experiment: str, what: str, result: dict | None = None, diff: dict | None = None, note: str = "") -> dict:
    """One line of the study's table: a policy's pass@1 with its interval, or a paired difference."""
    out = {"experiment": experiment, "what": what, "note": note}
    if result is not None:
        out |= {"pass@1": result["pass@1"], "ci": result["pass@1_ci"]}
    if diff is not None:
        out |= {"diff": diff["diff"], "diff_ci": diff["ci"], "within_noise": diff["within_noise"]}
        out |= {"diff_note": comparison_note(diff)}
    return out


def comparison(results: dict, a: str, b: str) -> dict:
    return next(c for c in results["comparisons"] if (c["a"], c["b"]) == (a, b))


def teacher_tokens(path: Path) -> int:
    """Characters the teacher wrote in its turns (the reference solver reports no tokens): the data's size."""
    return sum(
        len(m.reasoning or "") + len(m.content or "")
        for t in read_records(path, Trajectory)
        for m in t.messages
        if m.role == "assistant"
    )


def data_sweep(recipe: Recipe) -> list[dict]:
    """E1: the same SFT budget on the first 1/n of the verified chains."""
    run_dir = RunDir(recipe)
    generate.run(recipe)
    curate.run(recipe)
    lines = run_dir.curated("train").read_text().splitlines(keepends=True)
    policies, sizes = {"base": "base", "teacher": "teacher"}, {}
    for n in FRACTIONS:
        data = "train" if n == 1 else f"train-1of{n}"
        if n > 1:
            path = run_dir.curated(data)
            if not path.exists():
                write_text_atomic(path, "".join(lines[: len(lines) // n]))
        sft.run(with_section(recipe, "sft", data=data, output=f"student-1of{n}"))
        policies[f"1/{n}"] = f"run:student-1of{n}"
        sizes[f"1/{n}"] = (len(lines) // n, teacher_tokens(run_dir.curated(data)))
    results = json.loads(evaluate.run(with_section(recipe, "eval", policies=policies)).read_text())
    out = []
    for name, (count, chars) in sizes.items():
        gap = results["policies"][name]["gap_closed"]
        note = f"{count:,} chains, {chars:,} teacher characters; gap closed {gap:.0%}" if gap is not None else ""
        out.append(
            row(
                "E1",
                f"SFT on {name} of the verified data",
                results["policies"][name],
                comparison(results, name, "base"),
                note,
            )
        )
    return out


def demo_claims(demo: dict) -> list[dict]:
    """E2 and E3 from the demo's own paired differences."""
    p = demo["policies"]
    return [
        row("E2", "student + GRPO", p["student + GRPO"]),
        row("E2", "base + GRPO (cold start, same wall time)", p["base + GRPO (cold start)"]),
        row("E2", "warm minus cold", diff=comparison(demo, "student + GRPO", "base + GRPO (cold start)")),
        row("E3", "student (chain)", p["student"]),
        row("E3", "student, answer only", p["student, answer only"]),
        row("E3", "chain minus answer only", diff=comparison(demo, "student", "student, answer only")),
    ]


def kd_signals(recipe: Recipe, root: Path, seeds: int, kd: kd_ablation.KdDemo) -> list[dict]:
    """E4: the KD ablation per seed; per row the mean pass@1 over seeds and each seed's difference from SFT."""
    per_seed = []
    for seed in range(seeds):
        seeded = with_section(recipe, "run", dir=str(root / f"seed-{seed}"), seed=seed)
        kd_ablation.run(seeded, kd)
        per_seed.append(json.loads((root / f"seed-{seed}" / "eval" / "results.json").read_text()))
    out, sft_row = [], "SFT on the teacher's tokens"
    for across in seeded_runs.spread(per_seed):
        name = across["name"]
        spread = f"mean of {seeds} seeds {across['mean']:.3f}, range {across['min']:.3f} – {across['max']:.3f}"
        out.append(row("E4", f"{name} (seed 0)", per_seed[0]["policies"][name], note=spread))
        if name not in (sft_row, "base", "teacher"):
            diffs = [comparison(r, name, sft_row) for r in per_seed]
            seen = ", ".join(f"{d['diff']:+.3f}" + (" (noise)" if d["within_noise"] else "") for d in diffs)
            out.append(row("E4", f"{name} minus SFT (seed 0)", diff=diffs[0], note=f"per seed: {seen}"))
    return out


def verification(recipe: Recipe, demo: dict) -> list[dict]:
    """E5: verified minus unverified data, at the demo's error rate and at `HIGH_ERROR_RATE`."""
    rate = recipe.env.options.get("teacher_error_rate", 0.1)
    out = [
        row(
            "E5",
            f"verified minus unverified, teacher slips {rate:.0%}",
            diff=comparison(demo, "student", "student, unverified data"),
        )
    ]
    high = with_section(recipe, "env", options={**recipe.env.options, "teacher_error_rate": HIGH_ERROR_RATE})
    generate.run(high)
    curate.run(high)
    curate.run(with_section(high, "curate", output="unverified", require_passed=False))
    sft.run(high)
    sft.run(with_section(high, "sft", data="unverified", output="student-unverified"))
    policies = {"base": "base", "teacher": "teacher", "verified": "student", "unverified": "run:student-unverified"}
    results = json.loads(
        evaluate.run(with_section(high, "eval", policies=policies, compare=[["verified", "unverified"]])).read_text()
    )
    out.append(
        row(
            "E5",
            f"verified minus unverified, teacher slips {HIGH_ERROR_RATE:.0%}",
            diff=comparison(results, "verified", "unverified"),
        )
    )
    return out


def iterated(recipe: Recipe) -> list[dict]:
    """E6: generation 1 learns from the reference teacher; generation g + 1 from generation g's verified
    answers, a fresh student each time (the same base, budget and recipe)."""
    generate.run(recipe)
    curate.run(recipe)
    sft.run(with_section(recipe, "sft", output="gen-1"))
    policies = {"base": "base", "teacher": "teacher", "generation 1": "run:gen-1"}
    trained, ended = 1, ""
    for g in range(2, GENERATIONS + 1):
        taught = with_section(recipe, "generate", teacher=f"run:gen-{g - 1}", output=f"by-gen-{g - 1}", temperature=0.6)
        taught = with_section(taught, "curate", input=f"by-gen-{g - 1}", output=f"by-gen-{g - 1}")
        generate.run(taught)
        try:
            curate.run(taught)
        except curate.NothingKept as exc:  # a result of E6 (the plateau is 0), not a reason to drop E1 and E4
            ended = f"nothing of generation {g - 1}'s answers could teach generation {g} ({exc})"
            break
        sft.run(with_section(taught, "sft", data=f"by-gen-{g - 1}", output=f"gen-{g}"))
        policies[f"generation {g}"], trained = f"run:gen-{g}", g
    pairs = [[f"generation {g}", f"generation {g - 1}"] for g in range(2, trained + 1)]
    results = json.loads(evaluate.run(with_section(recipe, "eval", policies=policies, compare=pairs)).read_text())
    teacher = results["policies"]["teacher"]["pass@1"]
    out = [row("E6", "teacher (reference)", results["policies"]["teacher"])]
    if ended:
        out.append(row("E6", f"stopped after generation {trained}", note=ended))
    for g in range(1, trained + 1):
        p = results["policies"][f"generation {g}"]
        out.append(
            row("E6", f"generation {g}", p, note=f"{p['pass@1'] / teacher:.0%} of the teacher" if teacher else "")
        )
    for a, b in pairs:
        out.append(row("E6", f"{a} minus {b}", diff=comparison(results, a, b)))
    return out


def markdown(rows: list[dict], seconds: float) -> str:
    lines = [
        f"# warmstart study ({seconds / 60:.0f} min)",
        "",
        "pass@1 with 95 % bootstrap intervals over tasks; differences are paired on the same tasks.",
        "",
        "| | | pass@1 [95 %] | difference [95 %] | |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["experiment"]):  # stable: each experiment's own order kept
        value = f"{r['pass@1']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if "pass@1" in r else ""
        diff = f"{r['diff']:+.3f} [{r['diff_ci'][0]:+.3f}, {r['diff_ci'][1]:+.3f}]" if "diff" in r else ""
        note = "; ".join(x for x in (r.get("diff_note", ""), r["note"]) if x)
        lines.append(f"| {r['experiment']} | {r['what']} | {value} | {diff} | {note} |")
    return "\n".join(lines) + "\n"
