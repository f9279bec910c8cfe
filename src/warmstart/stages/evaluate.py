"""`eval`: k samples per held-out task for each policy; unbiased pass@1 and pass@k side by side.

Policy names in `eval.policies` map to policy strings; three words mean the run's own models:
`base` (the student before training), `student` (models/student) and `teacher` (generate.teacher);
`run:NAME` means the run's models/NAME. The table also gives the share of the teacher-base gap each
policy closed: (pass@1 - base) / (teacher - base).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..config import Recipe
from ..costs import CostLedger, load_prices
from ..errors import WarmstartError
from ..jsonl import write_json_atomic
from ..passk import mean_pass_at_k
from ..policies import Request, Sampling, make_policy
from ..progress import progress_bar
from ..runs import RunDir, fingerprint
from .common import Verifier, check_disjoint, load_tasks, make_environment
from .sft import base_model_path

log = logging.getLogger(__name__)


def resolve_policy(spec: str, recipe: Recipe) -> str:
    run_dir = RunDir(recipe)
    if spec == "base":
        return f"hf:{base_model_path(recipe)}"
    if spec == "student":
        return f"hf:{run_dir.model(recipe.sft.output)}"
    if spec == "teacher":
        return recipe.generate.teacher
    if spec.startswith("run:"):
        return f"hf:{run_dir.model(spec[4:])}"
    return spec


def policy_inputs(spec: str) -> list[Path]:
    """Files whose content decides a policy's answers (for the skip-if-done fingerprint)."""
    if not spec.startswith("hf:"):
        return []
    path = Path(spec[3:])
    weights = path / "model.safetensors"
    return [weights] if weights.exists() else [path] if path.is_file() else []


def evaluate_policy(name: str, spec: str, recipe: Recipe, env, tasks, ledger: CostLedger, verifier: Verifier | None = None) -> dict:
    """`verifier`: the caller's, shared by several policies; without one, this policy's batches get their own."""
    cfg, started = recipe.eval, time.time()
    policy = make_policy(spec, env, f"eval.policies.{name}", recipe)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    requests = [Request(t, i) for t in tasks for i in range(cfg.k)]
    passed = {t.id: 0 for t in tasks}
    judged = {t.id: 0 for t in tasks}  # samples with a verdict: infra errors are left out, not scored 0
    tokens_out, infra_errors = 0, 0
    by_id = {t.id: t for t in tasks}
    by_size = BySize()
    agreement = Agreement()
    with (nullcontext(verifier) if verifier else Verifier(env)) as verifier, progress_bar(f"eval {name}", len(requests)) as advance:
        for start in range(0, len(requests), cfg.batch_size):
            chunk = requests[start : start + cfg.batch_size]
            trajectories = policy.rollout(chunk, sampling, recipe.run.seed)
            failed = [t for t in trajectories if t.error is not None]  # a failed request is never a 0
            for trajectory in failed:
                ledger.add(trajectory, False)  # it may still have cost tokens
            infra_errors += len(failed)
            answered = [t for t in trajectories if t.error is None]
            for trajectory, verdict in zip(answered, verifier.verify_all([(by_id[t.task_id], t) for t in answered])):
                ledger.add(trajectory, verdict.passed and verdict.infra_error is None)
                if verdict.infra_error is not None:
                    infra_errors += 1
                    continue
                judged[trajectory.task_id] += 1
                passed[trajectory.task_id] += verdict.passed
                tokens_out += sum(u.tokens_out for u in trajectory.usage)
                by_size.add(by_id[trajectory.task_id], trajectory, verdict.passed)
                agreement.add(verdict.details)
            advance(len(chunk))
    counts = [(judged[t.id], passed[t.id]) for t in tasks]
    if not any(n for n, _ in counts):
        raise WarmstartError(f"eval.policies.{name}: every sample ended in a verifier infra error ({infra_errors})")
    full = [c for c in counts if c[0] >= cfg.k]  # tasks that kept all k samples
    return {
        "policy": spec,
        "pass@1": mean_pass_at_k([c for c in counts if c[0] >= 1], 1),
        f"pass@{cfg.k}": mean_pass_at_k(full, cfg.k) if full else None,  # None: no task kept k judged samples
        "infra_errors": infra_errors,
        "tasks": len(tasks),
        "samples_per_task": cfg.k,
        "tokens_out": tokens_out,
        "seconds": round(time.time() - started, 2),
        **(by_size.summary() if env.tools else {}),
        **({"judge_agreement": agreement.summary()} if agreement.samples else {}),
    }


class Agreement:
    """Judge vs verifier on the samples where both gave an opinion (see judge.py)."""

    def __init__(self):
        self.samples, self.agree, self.judge_only, self.verifier_only = 0, 0, 0, 0

    def add(self, details: dict) -> None:
        judge, verifier = details.get("judge_passed"), details.get("verifier_passed")
        if judge is None or verifier is None:
            return
        self.samples += 1
        self.agree += judge == verifier
        self.judge_only += judge and not verifier
        self.verifier_only += verifier and not judge

    def summary(self) -> dict:
        return {
            "samples": self.samples,
            "agreement": round(self.agree / self.samples, 4),
            "judge_pass_verifier_fail": self.judge_only,
            "judge_fail_verifier_pass": self.verifier_only,
        }


class BySize:
    """Per task size (`meta["size"]`, where tasks have one): the share of samples that called a tool
    (did the student learn *when* to use one, not only how) and the share that passed."""

    def __init__(self):
        self.samples: dict[str, list[tuple[bool, bool]]] = {}

    def add(self, task, trajectory, passed: bool) -> None:
        used = any(m.tool_calls for m in trajectory.messages if m.role == "assistant")
        self.samples.setdefault(task.meta.get("size", "all"), []).append((used, passed))

    def summary(self) -> dict:
        def share(values) -> float:
            return round(sum(values) / len(values), 4)

        sizes = sorted(self.samples.items())
        return {
            "tool_use": {size: share([used for used, _ in s]) for size, s in sizes},
            "passed_by_size": {size: share([passed for _, passed in s]) for size, s in sizes},
        }


def gap_closed(results: dict, name: str) -> float | None:
    if "base" not in results or "teacher" not in results:
        return None
    base, teacher = results["base"]["pass@1"], results["teacher"]["pass@1"]
    if teacher <= base:
        return None
    return (results[name]["pass@1"] - base) / (teacher - base)


def run(recipe: Recipe) -> Path:
    started, cfg, run_dir = time.time(), recipe.eval, RunDir(recipe)
    env = make_environment(recipe)
    specs = {name: resolve_policy(spec, recipe) for name, spec in cfg.policies.items()}
    inputs = [p for spec in specs.values() for p in policy_inputs(spec)]
    print_ = fingerprint({"eval": cfg.model_dump(), "specs": specs, "env": recipe.env.model_dump(), "tasks": recipe.tasks.model_dump(), "seed": recipe.run.seed}, inputs)
    out = run_dir.eval_results
    if run_dir.is_done("eval", print_, [out]):
        log.info("eval: already done, nothing to do")
        print_table(json.loads(out.read_text()), cfg.k)
        return out
    tasks = load_tasks(recipe, env, "eval")
    check_disjoint(load_tasks(recipe, env, "train"), tasks)
    ledger = CostLedger(load_prices(recipe.api.prices), recipe.api.batch_discount)
    with Verifier(env) as verifier:  # one for every policy: its workers (python's sandboxes) start once
        results = {name: evaluate_policy(name, spec, recipe, env, tasks, ledger, verifier) for name, spec in specs.items()}
    for name in results:
        results[name]["gap_closed"] = gap_closed(results, name)
    summary = {"k": cfg.k, "temperature": cfg.temperature, "rows": list(results), "policies": results}
    write_json_atomic(out, summary)
    run_dir.mark_done("eval", print_, [out], started, {"api_cost": ledger.summary()})
    print_table(summary, cfg.k)
    return out


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_table(summary: dict, k: int) -> None:
    table = Table(title=f"held-out pass@k ({summary['policies'][next(iter(summary['policies']))]['tasks']} tasks, T={summary['temperature']})")
    tools = any("tool_use" in r for r in summary["policies"].values())
    judged = any("judge_agreement" in r for r in summary["policies"].values())
    extra = [*(["uses tool"] if tools else []), *(["judge agrees"] if judged else [])]
    pass_k = [f"pass@{k}"] if k > 1 else []  # with k = 1 it is the pass@1 column
    for column in ("policy", "pass@1", *pass_k, "gap closed", "seconds", *extra):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name in summary["rows"]:  # the recipe's order (the JSON file sorts its keys)
        r = summary["policies"][name]
        gap = "" if r["gap_closed"] is None or name in ("base", "teacher") else f"{r['gap_closed']:.0%}"
        row = [name, f"{r['pass@1']:.3f}", *([fmt(r[f"pass@{k}"])] if k > 1 else []), gap, f"{r['seconds']:.1f}"]
        agreement = r.get("judge_agreement")
        agrees = f"{agreement['agreement']:.0%} of {agreement['samples']}" if agreement else ""
        table.add_row(*row, *([tool_use_text(r.get("tool_use", {}))] if tools else []), *([agrees] if judged else []))
    Console().print(table)


def tool_use_text(rates: dict[str, float]) -> str:
    return ", ".join(f"{size} {rate:.0%}" for size, rate in rates.items())
