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

from ..config import PolicySpec, Recipe
from ..envs.verification import Verifier
from ..errors import WarmstartError
from ..metrics.passk import mean_pass_at_k
from ..policies import make_policy
from ..policies.spec import resolve
from ..runs.costs import CostLedger, load_prices
from ..runs.directory import RunDir
from ..runs.jsonl import write_json_atomic
from ..runs.progress import progress_bar
from ..types import Request, Sampling
from .common import check_disjoint, load_tasks, make_environment

log = logging.getLogger(__name__)


def policy_inputs(spec: PolicySpec) -> list[Path]:
    """Files whose content decides a resolved policy's answers (for the skip-if-done fingerprint)."""
    if not spec.is_local_model:
        return []
    path = Path(spec.name)
    weights = path / "model.safetensors"
    return [weights] if weights.exists() else [path] if path.is_file() else []


def evaluate_policy(
    name: str, spec: PolicySpec, recipe: Recipe, env, tasks, ledger: CostLedger, verifier: Verifier | None = None
) -> dict:
    """`verifier`: the caller's, shared by several policies; without one, this policy's batches get their own."""
    cfg, started = recipe.eval, time.time()
    policy = make_policy(spec, env, f"eval.policies.{name}", recipe)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    requests = [Request(t, i) for t in tasks for i in range(cfg.k)]
    by_id = {t.id: t for t in tasks}
    tally = Tally(tasks)
    with (
        nullcontext(verifier) if verifier else Verifier(env) as verifier,
        progress_bar(f"eval {name}", len(requests)) as advance,
    ):
        for start in range(0, len(requests), cfg.batch_size):
            chunk = requests[start : start + cfg.batch_size]
            trajectories = policy.rollout(chunk, sampling, recipe.run.seed)
            for trajectory in trajectories:
                if trajectory.error is not None:  # a failed request is never a 0
                    ledger.add(trajectory, False)  # it may still have cost tokens
                    tally.infra_errors += 1
            answered = [t for t in trajectories if t.error is None]
            for trajectory, verdict in zip(answered, verifier.verify_all([(by_id[t.task_id], t) for t in answered])):
                ledger.add(trajectory, verdict.passed and verdict.infra_error is None)
                tally.add(by_id[trajectory.task_id], trajectory, verdict)
            advance(len(chunk))
    return {"policy": str(spec), **tally.row(name, cfg.k, bool(env.tools)), "seconds": round(time.time() - started, 2)}


class Tally:
    """One policy's eval samples: per task how many were judged and passed (infra errors left out, not
    scored 0), and what rides along (tokens, tool use by task size, judge agreement)."""

    def __init__(self, tasks):
        self.tasks = tasks
        self.passed = {t.id: 0 for t in tasks}
        self.judged = {t.id: 0 for t in tasks}  # samples with a verdict
        self.tokens_out, self.infra_errors = 0, 0
        self.by_size, self.agreement = BySize(), Agreement()

    def add(self, task, trajectory, verdict) -> None:
        if verdict.infra_error is not None:
            self.infra_errors += 1
            return
        self.judged[task.id] += 1
        self.passed[task.id] += verdict.passed
        self.tokens_out += sum(u.tokens_out for u in trajectory.usage)
        self.by_size.add(task, trajectory, verdict.passed)
        self.agreement.add(verdict.details)

    def row(self, name: str, k: int, tools: bool) -> dict:
        counts = [(self.judged[t.id], self.passed[t.id]) for t in self.tasks]
        if not any(n for n, _ in counts):
            raise WarmstartError(
                f"eval.policies.{name}: every sample ended in a verifier infra error ({self.infra_errors})"
            )
        full = [c for c in counts if c[0] >= k]  # tasks that kept all k samples
        return {
            "pass@1": mean_pass_at_k([c for c in counts if c[0] >= 1], 1),
            f"pass@{k}": mean_pass_at_k(full, k) if full else None,  # None: no task kept k judged samples
            "infra_errors": self.infra_errors,
            "tasks": len(self.tasks),
            "samples_per_task": k,
            "tokens_out": self.tokens_out,
            **(self.by_size.summary() if tools else {}),
            **({"judge_agreement": self.agreement.summary()} if self.agreement.samples else {}),
        }


class Agreement:
    """Judge vs verifier on the samples where both gave an opinion (see envs/judge.py)."""

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
    cfg, run_dir = recipe.eval, RunDir(recipe)
    env = make_environment(recipe)
    specs = {name: resolve(spec, recipe) for name, spec in cfg.policies.items()}
    config = {
        "eval": cfg.model_dump(),
        "specs": {name: str(spec) for name, spec in specs.items()},
        "env": recipe.env.model_dump(),
        "tasks": recipe.tasks.model_dump(),
        "seed": recipe.run.seed,
    }
    inputs = [p for spec in specs.values() for p in policy_inputs(spec)]
    out = run_dir.eval_results
    with run_dir.stage("eval", config, inputs, [out]) as stage:
        if stage.done:
            print_table(json.loads(out.read_text()), cfg.k)
            return out
        tasks = load_tasks(recipe, env, "eval")
        check_disjoint(load_tasks(recipe, env, "train"), tasks)
        ledger = CostLedger(load_prices(recipe.api.prices), recipe.api.batch_discount)
        with Verifier(env) as verifier:  # one for every policy: its workers (python's sandboxes) start once
            results = {
                name: evaluate_policy(name, spec, recipe, env, tasks, ledger, verifier) for name, spec in specs.items()
            }
        for name in results:
            results[name]["gap_closed"] = gap_closed(results, name)
        summary = {"k": cfg.k, "temperature": cfg.temperature, "rows": list(results), "policies": results}
        write_json_atomic(out, summary)
        stage.summary = {"api_cost": ledger.summary()}
    print_table(summary, cfg.k)
    return out


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_table(summary: dict, k: int) -> None:
    table = Table(
        title=f"held-out pass@k ({summary['policies'][next(iter(summary['policies']))]['tasks']} tasks, T={summary['temperature']})"
    )
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
