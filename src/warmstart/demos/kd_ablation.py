"""`warmstart demo --kd`: what the teacher's distribution is worth, at equal teacher tokens.

The reference solver has no distribution to distill, so a teacher with logits is made first: a larger
tiny Llama (twice the student's width, ~4x its parameters) with the student's tokenizer, trained by SFT
on the reference solver's verified chains. That teacher then answers `kd_tasks` train tasks, recording
its top-k log-probs for every token it writes; its verified answers are the data of every offline row,
so all of them see exactly the same teacher tokens:

    SFT on the teacher's tokens   cross-entropy only
    sparse KD, top-k              + KL on the recorded top-k support and a tail bucket (kd_weight)
    dense KD, full logits         + KL to the teacher's whole distribution, computed on the fly

and the on-policy rows get the same number of teacher tokens as a budget of student tokens the
teacher scores (per-token reverse KL as the advantage, no verifier reward):

    on-policy from base           all of the budget on-policy, from the untrained student
    SFT on half, then on-policy   SFT on the first half of the data, the other half's tokens on-policy

Every row starts from the same base. Each is evaluated at its checkpoints (k = 1) for the number of
optimizer steps it took to reach 90 % of the teacher's pass@1, and at the end with eval.k samples.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer

from ..config import PolicySpec, Recipe, TinyModelConfig, with_section
from ..lm.tinymodel import build_tiny_llama
from ..report.html import build_report
from ..report.lineage import row_lineages
from ..runs.checkpoint import complete_checkpoints
from ..runs.costs import CostLedger
from ..runs.directory import RunDir, recipe_when_worked
from ..runs.jsonl import read_records, write_json_atomic
from ..stages import curate, evaluate, generate, grpo, sft
from ..stages.common import load_tasks, make_environment
from ..types import Trajectory
from .pump import comparison_lines

log = logging.getLogger(__name__)

# row name -> model: the on-policy rows (GRPO checkpoints)
ONPOLICY = {"on-policy from base": "run:kd-onpolicy", "SFT on half, then on-policy": "run:kd-half-onpolicy"}


@dataclass(frozen=True)
class KdDemo:
    """The ablation's sizes (the tests run it smaller)."""

    teacher_width: int = 256  # the student's is 128
    teacher_steps: int = 900
    # Half the student's lr: at 2e-3 this width learned far slower (0.10 pass@1 at 600 steps, 0.81 at 1200).
    teacher_lr: float = 1e-3
    kd_tasks: int = 3000
    top_k: int = 5
    curve_every: int = 100  # SFT steps between learning-curve points
    onpolicy_curve_every: int = 5  # RL steps between learning-curve points (2 optimizer steps each)

    def offline_rows(self) -> dict[str, tuple[str, dict]]:
        """row name -> (model name, sft overrides); all on the teacher's data."""
        return {
            "SFT on the teacher's tokens": ("kd-sft", {"distill": "tokens"}),
            f"sparse KD, top-{self.top_k}": ("kd-sparse", {"distill": "topk"}),
            "dense KD, full logits": ("kd-dense", {"distill": "logits"}),
            "SFT on half the teacher's tokens": ("kd-sft-half", {"distill": "tokens"}),
        }


def run(recipe: Recipe, demo: KdDemo = KdDemo()) -> Path:
    """The ablation's stages and table; the run's recipe.toml written once a stage did work."""
    with recipe_when_worked(recipe):
        return run_stages(recipe, demo)


def run_stages(recipe: Recipe, demo: KdDemo) -> Path:
    started, run_dir = time.time(), RunDir(recipe)
    generate.run(recipe)
    curate.run(recipe)
    teacher = train_teacher(recipe, demo)
    kd = teacher_data(recipe, teacher, demo)
    rows = {name: f"run:{model}" for name, (model, _) in demo.offline_rows().items()}
    half_tokens = write_half(run_dir)
    for model, changes in demo.offline_rows().values():
        sft.run(offline_row(kd, "kd-train-half" if model == "kd-sft-half" else "kd-train", model, changes, demo))
    budget = teacher_tokens(run_dir.curated("kd-train"))
    grpo.run(onpolicy_row(kd, "base", "kd-onpolicy", budget, demo))
    grpo.run(onpolicy_row(kd, "run:kd-sft-half", "kd-half-onpolicy", budget - half_tokens, demo))
    rows |= ONPOLICY
    sft_row = "SFT on the teacher's tokens"
    compare = [[row, sft_row] for row in rows if row != sft_row]  # each signal against plain SFT, same tokens
    policies = {"base": "base", **rows, "teacher": "teacher"}
    results = json.loads(evaluate.run(with_section(kd, "eval", policies=policies, compare=compare)).read_text())
    curves = learning_curves(kd, rows)
    write_json_atomic(run_dir.root / "kd-curves.json", curves)
    write_report(run_dir, results, curves, budget, time.time() - started, demo)
    log.info("report: %s", build_report(run_dir.root))
    return run_dir.root / "kd-report.md"


def train_teacher(recipe: Recipe, demo: KdDemo) -> Path:
    """models/kd-teacher: a larger tiny model with the student's tokenizer, SFT on the reference chains."""
    run_dir = RunDir(recipe)
    base = sft.prepare_tiny_base(recipe, read_records(run_dir.curated(recipe.curate.output), Trajectory))
    teacher_base = run_dir.model("kd-teacher-base")
    if not teacher_base.exists():
        tokenizer = AutoTokenizer.from_pretrained(base)
        config = TinyModelConfig(
            **{
                **recipe.sft.tiny.model_dump(),
                "hidden_size": demo.teacher_width,
                "intermediate_size": 2 * demo.teacher_width,
            }
        )
        tmp = teacher_base.with_name(teacher_base.name + ".tmp")
        build_tiny_llama(tokenizer, config, recipe.run.seed + 1).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(teacher_base)
    return sft.run(
        with_section(
            recipe,
            "sft",
            student=str(teacher_base),
            output="kd-teacher",
            steps=demo.teacher_steps,
            lr=demo.teacher_lr,
            distill="tokens",
        )
    )


def teacher_data(recipe: Recipe, teacher: Path, demo: KdDemo) -> Recipe:
    """The recipe of the KD rows: the trained teacher answers `kd_tasks` tasks with its top-k recorded."""
    kd = with_section(recipe, "generate", teacher=f"hf:{teacher}", output="kd-teacher")
    kd = with_section(kd, "api", top_logprobs=demo.top_k)
    kd = with_section(kd, "tasks", train=demo.kd_tasks)
    kd = with_section(kd, "curate", input="kd-teacher", output="kd-train")
    generate.run(kd)
    curate.run(kd)
    # Eval samples without log-probs: they are not needed there.
    return with_section(kd, "api", top_logprobs=0)


def offline_row(kd: Recipe, data: str, model: str, changes: dict, demo: KdDemo) -> Recipe:
    """A student row: sft.steps steps from the base (`warmstart demo --kd` sets 1200)."""
    keep = kd.sft.steps // demo.curve_every + 1
    return with_section(
        kd,
        "sft",
        data=data,
        output=model,
        teacher="run:kd-teacher",
        checkpoint_every=demo.curve_every,
        keep_checkpoints=keep,
        **changes,
    )


def onpolicy_row(kd: Recipe, init: str, model: str, budget: int, demo: KdDemo) -> Recipe:
    return with_section(
        kd,
        "grpo",
        init=init,
        output=model,
        teacher="run:kd-teacher",
        reward_weight=0.0,
        teacher_tokens_budget=budget,
        steps=100_000,
        checkpoint_every=demo.onpolicy_curve_every,
        keep_checkpoints=100_000,
    )


def teacher_tokens(path: Path) -> int:
    """Tokens the teacher wrote in a curated file (its policy turns, end-of-turn tokens included)."""
    return sum(u.tokens_out for t in read_records(path, Trajectory) for u in t.usage)


def write_half(run_dir: RunDir) -> int:
    """curated/kd-train-half.jsonl: the first half of the teacher's data; returns its teacher tokens."""
    source, target = run_dir.curated("kd-train"), run_dir.curated("kd-train-half")
    lines = source.read_text().splitlines(keepends=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("".join(lines[: len(lines) // 2]))
    tmp.replace(target)  # same content on a rerun: stages fingerprint files by content, so nothing reruns
    return teacher_tokens(target)


def learning_curves(kd: Recipe, rows: dict[str, str]) -> dict:
    """pass@1 (one sample per eval task) at each kept checkpoint of each row, by optimizer step."""
    run_dir, env = RunDir(kd), make_environment(kd)
    tasks = load_tasks(kd, env, "eval")
    one = with_section(kd, "eval", k=1)
    curves = {}
    for name, spec in rows.items():
        model = PolicySpec.parse(spec).name
        rl = spec in ONPOLICY.values()
        per_step = kd.grpo.updates_per_batch if rl else 1  # a GRPO checkpoint's step is an RL step
        points = []
        for checkpoint in complete_checkpoints(run_dir.checkpoints(model)):
            result = evaluate.evaluate_policy(
                f"{name} @ {checkpoint.name}", PolicySpec.local(checkpoint), one, env, tasks, CostLedger({}, False)
            )
            points.append({"optimizer_steps": int(checkpoint.name[5:]) * per_step, "pass@1": result["pass@1"]})
        curves[name] = points
    return curves


def steps_to(points: list[dict], target: float, offset: int = 0) -> str:
    hit = next((p["optimizer_steps"] for p in points if p["pass@1"] >= target), None)
    return "not reached" if hit is None else str(hit + offset)


def write_report(run_dir: RunDir, results: dict, curves: dict, budget: int, seconds: float, demo: KdDemo) -> None:
    k, policies = results["k"], results["policies"]
    teacher = policies["teacher"]["pass@1"]
    lineages = row_lineages(results, run_dir.manifest()["stages"], run_dir.root)
    lines = [
        "# warmstart demo --kd: distillation signals at equal teacher tokens",
        "",
        f"Wall time: {seconds:.0f} s. Teacher: a {demo.teacher_width}-wide tiny Llama with the student's tokenizer, "
        f"SFT {demo.teacher_steps} steps at lr {demo.teacher_lr} on the reference chains. Students: "
        f"{run_dir.recipe.sft.steps} SFT steps. Its {budget} tokens on {demo.kd_tasks} train tasks (verified) are "
        f"every row's teacher tokens. Held-out: {policies['teacher']['tasks']} tasks x {k} samples at "
        f"T={results['temperature']}; the 90 % column uses k = 1 at each checkpoint. Intervals: 95 %, bootstrap "
        "over tasks.",
        "",
        f"| policy | pass@1 [95 %] | pass@{k} | % of teacher | optimizer steps to 90 % of teacher | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name in results["rows"]:
        r, lin = policies[name], lineages.get(name)
        share = f"{r['pass@1'] / teacher:.0%}" if teacher > 0 else ""
        offset = run_dir.recipe.sft.steps if name == "SFT on half, then on-policy" else 0  # its SFT part came first
        to_90 = steps_to(curves[name], 0.9 * teacher, offset) if name in curves else ""
        seconds = f"{lin.seconds:.0f}" if lin is not None and lin.stages else ""
        pass_1 = evaluate.fmt(r["pass@1"], r.get("pass@1_ci"))
        lines.append(f"| {name} | {pass_1} | {evaluate.fmt(r[f'pass@{k}'])} | {share} | {to_90} | {seconds} |")
    lines += comparison_lines(results.get("comparisons", []))
    (run_dir.root / "kd-report.md").write_text("\n".join(lines) + "\n")
