"""`eval`: k samples per held-out task for each policy; unbiased pass@1 and pass@k side by side.

Policy names in `eval.policies` map to policy strings; three words mean the run's own models:
`base` (the student before training), `student` (models/student) and `teacher` (generate.teacher);
`run:NAME` means the run's models/NAME. The table also gives the share of the teacher-base gap each
policy closed: (pass@1 - base) / (teacher - base).

Every number comes with its uncertainty: pass@1 and pass@k with 95 % bootstrap intervals over tasks, and
paired differences of pass@1 on the same tasks (each policy minus `base`, and the pairs of
`eval.compare`), marked "within noise" where the interval holds 0 (`metrics/`). Every sample is kept with
its verdict in eval/<policy>.jsonl, so what a policy answered, and why it failed, can be read. With
`[ray]` the policies and the verifier are the cluster's (`cluster/`); this process writes every file.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import cluster
from ..config import FINGERPRINT, PolicySpec, Recipe
from ..errors import WarmstartError
from ..lm.paths import resolve_model_path
from ..metrics.tally import PassTally, compare, comparison_note, unscored
from ..policies.api import finished_rollouts
from ..policies.spec import resolve
from ..runs.costs import CostLedger, carried_spend, load_prices
from ..runs.directory import RunDir, Stage, fingerprint_of, input_label, model_files, relabelled, sample_paths
from ..runs.jsonl import JsonlAppender, read_json, write_json_atomic
from ..runs.progress import progress_bar
from ..types import Request, Sampling
from .common import bill_judge, check_disjoint, judge_cost, judge_policy, load_tasks, make_environment, tasks_read

log = logging.getLogger(__name__)


def policy_inputs(spec: PolicySpec) -> list[Path]:
    """Files whose content decides a resolved policy's answers (for the skip-if-done fingerprint)."""
    return model_files(Path(spec.name)) if spec.is_local_model else []


def scored_files(spec: PolicySpec, digests: dict[str, str | None], root: Path) -> dict[str, str | None]:
    """The digest of each file of the local model a row scored, by file name (read once, for the stage's
    fingerprint, by their labels in the run directory `root`): the report tells by them whether the model's files are still those, and which training
    record is of that model, whatever the clocks of the machines the stages ran on said."""
    return {path.name: digests.get(input_label(path, root)) for path in policy_inputs(spec)}


def evaluate_policy(
    name: str,
    spec: PolicySpec,
    recipe: Recipe,
    env,
    tasks,
    ledger: CostLedger,
    verifier=None,
    samples: Path | None = None,
    publish: bool = True,
    tallies: list[dict] | None = None,
) -> dict:
    """`verifier`: the caller's (a local or a Ray verifier), shared by several policies; without one, this
    policy's batches get their own.
    `samples`: where to keep every sample with its verdict (JSONL), replaced whole when the policy is done;
    with `publish=False` left beside it (`unpublished`) for the caller to replace it with its other results.
    `tallies`: where an API policy's request counts go (sent, failed, retried, refused: costs.json's)."""
    cfg, started = recipe.eval, time.time()
    policy = cluster.make_policy(spec, env, f"eval.policies.{name}", recipe)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    requests = [Request(t, i) for t in tasks for i in range(cfg.k)]
    by_id = {t.id: t for t in tasks}
    tally = PassTally([t.id for t in tasks])
    kept = unpublished(samples) if samples else None
    if kept:
        kept.unlink(missing_ok=True)  # a stopped run's: this row's samples are all written again
    seen: set[tuple[str, int]] = set()  # (task, sample index) counted: each once
    first_error: str | None = None
    first_infra_error: str | None = None
    with (
        cluster.stopping(policy, recipe),
        nullcontext(verifier) if verifier else cluster.make_verifier(env, recipe) as verifier,
        JsonlAppender(kept) if kept else nullcontext() as writer,
        progress_bar(f"eval {name}", len(requests)) as advance,
    ):
        for start in range(0, len(requests), cfg.batch_size):
            chunk = requests[start : start + cfg.batch_size]
            try:
                answered_chunk = policy.rollout(chunk, sampling, recipe.run.seed)
            except BaseException as stop:  # what had finished was paid for: in the ledger before it stops
                for trajectory in finished_rollouts(stop):
                    ledger.add(trajectory, False)
                raise
            trajectories = [t for t in answered_chunk if t.key not in seen]
            seen.update(t.key for t in trajectories)
            for trajectory in trajectories:
                if trajectory.error is not None:  # a failed request is never a 0
                    ledger.add(trajectory, False)  # it may still have cost tokens
                    tally.request_errors += 1
                    first_error = first_error or trajectory.error
            answered = [t for t in trajectories if t.error is None]
            for trajectory, verdict in zip(answered, verifier.verify_all([(by_id[t.task_id], t) for t in answered])):
                ledger.add(trajectory, verdict.passed and verdict.infra_error is None)
                tally.add(by_id[trajectory.task_id], trajectory, verdict)
                first_infra_error = first_infra_error or verdict.infra_error
                trajectory.verdict = verdict
            if writer:
                for trajectory in trajectories:
                    writer.append(trajectory)
            advance(len(chunk))
    if tallies is not None and getattr(policy, "request_tally", None) is not None:
        tallies.append(policy.request_tally.summary())
    if kept and publish:
        os.replace(kept, samples)
    check_request_errors(name, tally.request_errors, len(requests), first_error, cfg.max_error_rate)
    check_infra_errors(name, tally.infra_errors, len(requests), first_infra_error, cfg.max_error_rate)
    try:
        row = tally.row(cfg.k, bool(env.tools))
    except ValueError as exc:
        raise WarmstartError(f"eval.policies.{name}: {exc}") from None
    return {"policy": str(spec), **row, "seconds": round(time.time() - started, 2)}


def row_fingerprints(
    config: dict,
    specs: dict[str, PolicySpec],
    samples: dict[str, Path],
    tasks: list[Path],
    stage: Stage,
    by_path: bool = False,
) -> dict:
    """What decides each row's results apart from the other rows: the stage's settings but the list of rows
    and the comparisons, the row's policy with its model's files, and where its samples are kept. The files'
    digests are the stage's (`Stage.input_digests`: each file read once); a file in the run directory is
    named by its place in it (`runs.directory.input_label`), or, `by_path`, every file by its path, as an
    earlier warmstart named them."""
    shared = {**config, "eval": {k: v for k, v in config["eval"].items() if k not in ("policies", "compare")}}
    shared.pop("specs")
    root = stage.run_dir.root
    prints = {}
    for name, spec in specs.items():
        row = {"shared": shared, "row": name, "policy": spec.identity, "samples": samples[name].name}
        files = [(path, stage.input_digests[input_label(path, root)]) for path in [*tasks, *policy_inputs(spec)]]
        if by_path:
            prints[name] = fingerprint_of(row, [(str(path), digest) for path, digest in files])
        else:
            prints[name] = fingerprint_of(relabelled(row, root), [(input_label(p, root), d) for p, d in files])
    return prints


def unchanged_rows(
    out: Path, row_prints: dict[str, str], samples: dict[str, Path], earlier_prints: dict[str, str] | None = None
) -> dict[str, dict]:
    """The rows of the last results (`out`) that this run would compute again the same (a row is sampled
    with the run's seed whatever rows stand beside it, and API answers come from the response cache):
    adding a row to eval.policies samples that row, not every local model again. `earlier_prints`: each row's
    fingerprint as an earlier warmstart made it (`row_fingerprints` without the run directory), also accepted."""
    try:
        earlier = read_json(out) or {}
    except WarmstartError as exc:  # a damaged results file is replaced, not read
        log.warning("eval: %s; every row is evaluated again", exc)
        return {}
    prints, rows = earlier.get("row_fingerprints") or {}, earlier.get("policies") or {}
    kept = {
        name: rows[name]
        for name, row_print in row_prints.items()
        if prints.get(name) in {row_print, (earlier_prints or {}).get(name, row_print)}
        and isinstance(rows.get(name), dict)
        and samples[name].is_file()
    }
    if kept:
        log.info("eval: %s as in the last results (nothing they depend on changed)", ", ".join(kept))
    return kept


def unpublished(samples: Path) -> Path:
    """Where a row's samples are written until they are published at `samples`."""
    return samples.with_name(samples.name + ".tmp")


def check_request_errors(name: str, errors: int, samples: int, first: str | None, max_rate: float) -> None:
    """A policy whose requests failed is scored only on the samples that were answered: past
    `eval.max_error_rate` that would be another test than the other rows', so eval stops (not marked done:
    a rerun asks again, the response cache answering what had succeeded)."""
    if errors > max_rate * samples:
        raise WarmstartError(
            f"eval.policies.{name}: {errors} of {samples} samples' requests failed, more than eval.max_error_rate "
            f"= {max_rate:g} (first: {first}); a rerun asks them again"
        )


def check_infra_errors(name: str, errors: int, samples: int, first: str | None, max_rate: float) -> None:
    """Samples the verifier could not judge are left out of the row as failed requests are: past
    `eval.max_error_rate` the row would be scored on the samples its verifier happened to judge."""
    if errors > max_rate * samples:
        raise WarmstartError(
            f"eval.policies.{name}: {errors} of {samples} samples could not be verified, more than "
            f"eval.max_error_rate = {max_rate:g} (first: {first})"
        )


def check_compare(pairs: list[list[str]], rows) -> None:
    """Each pair of `eval.compare` names two different rows: a row against itself differs by exactly 0,
    and resampling its tasks would still draw an interval around that 0 as if it were a measurement."""
    unknown = [name for pair in pairs for name in pair if name not in rows]
    if unknown:
        raise WarmstartError(f"eval.compare: {unknown[0]!r} is not a policy of eval.policies")
    same = [a for a, b in pairs if a == b]
    if same:
        raise WarmstartError(f"eval.compare: [{same[0]!r}, {same[0]!r}] compares a row with itself")


def comparisons(results: dict[str, dict], pairs: list[list[str]]) -> list[dict]:
    """Paired differences of pass@1: every policy against `base` (where it is a row), then `pairs`; a pair
    that scored no task in common is said and left out (it had stopped eval with a traceback, its spend
    unrecorded)."""
    against_base = [[name, "base"] for name in results if name != "base"] if "base" in results else []
    seen, out = set(), []
    for a, b in [*against_base, *pairs]:
        if (a, b) not in seen:
            seen.add((a, b))
            if (comparison := compare(results[a], results[b])) is None:
                log.warning("eval: %s and %s scored no task in common: no paired difference of them", a, b)
                continue
            out.append({"a": a, "b": b, **comparison})
    return out


def gap_closed(results: dict, name: str) -> float | None:
    """The share of the teacher's lead over the base that row `name` closed; None where that lead is within
    noise (its paired interval holds 0): a ratio over noise is no measurement, and over equal pass counts,
    summed in another order, it had divided by 1e-16 (review 83)."""
    if "base" not in results or "teacher" not in results:
        return None
    lead = compare(results["teacher"], results["base"])
    if lead is None or lead["within_noise"] or lead["diff"] <= 0:
        return None
    base, teacher = results["base"]["pass@1"], results["teacher"]["pass@1"]
    return (results[name]["pass@1"] - base) / (teacher - base)


def run(recipe: Recipe) -> Path:
    cfg, run_dir = recipe.eval, RunDir(recipe)
    env = make_environment(recipe)
    specs = {name: resolve(spec, recipe) for name, spec in cfg.policies.items()}
    tasks_config, task_files = tasks_read(recipe, ("train", "eval"))  # the train split: checked disjoint
    config = {
        "eval": cfg.model_dump(context=FINGERPRINT),
        "specs": {name: spec.identity for name, spec in specs.items()},
        "env": recipe.env.model_dump(context=FINGERPRINT),
        "tasks": tasks_config,
        "seed": recipe.run.seed,
    }
    inputs = [*task_files, *(p for spec in specs.values() for p in policy_inputs(spec))]
    out = run_dir.eval_results
    cluster.connect(recipe)  # an unreachable cluster fails here, before the stage writes anything
    with run_dir.stage("eval", config, inputs, [out]) as stage:
        if stage.done:
            print_table(read_json(out), cfg.k)
            return out
        tasks = load_tasks(recipe, env, "eval")
        check_disjoint(load_tasks(recipe, env, "train"), tasks)
        if cfg.temperature == 0 and cfg.k > 1:
            log.warning(
                "eval: temperature 0 with k = %d: a policy that decodes greedily gives the same answer k times, so "
                "pass@%d tells nothing pass@1 does not",
                cfg.k,
                cfg.k,
            )
        ledger = CostLedger(load_prices(recipe.api.prices), recipe.api.batch_discount)
        judge, judge_ledger, tallies = judge_policy(env), CostLedger(ledger.prices, ledger.batch), []
        if judge is not None:  # an API judge's requests: billed on their own line of the stage's cost
            bill_judge(judge, judge_ledger)
        earlier = carried_spend(run_dir.manifest()["stages"].get("eval"))  # this entry replaces theirs
        spent = {"api_cost_earlier_runs": earlier} if earlier else {}
        check_compare(cfg.compare, specs)
        for name, spec in specs.items():  # every local model there, before any policy's samples are written
            if spec.is_local_model:
                resolve_model_path(spec.name, f"eval.policies.{name}")
        samples = sample_paths(run_dir.root, list(specs))
        row_prints = row_fingerprints(config, specs, samples, task_files, stage)
        by_path = row_fingerprints(config, specs, samples, task_files, stage, by_path=True)
        unchanged = unchanged_rows(out, row_prints, samples, by_path)
        results = dict(unchanged)
        # Opened before any sampling: a log.to backend that cannot start (W&B online without a key, a directory
        # it cannot write) is one error before the work, and never after results.json was replaced.
        with run_dir.tracker("eval") as tracker:
            # One verifier for every policy: its workers (python's sandboxes, local or Ray actors) start once.
            try:
                with cluster.make_verifier(env, recipe) as verifier:
                    for name, spec in specs.items():
                        if name not in results:
                            results[name] = evaluate_policy(
                                name, spec, recipe, env, tasks, ledger, verifier, samples[name], False, tallies
                            )
            except BaseException:  # a stopped eval's spend is in costs.json too
                stage.summary = {**eval_costs(ledger, tallies, judge, judge_ledger), **spent}
                raise
            results = {name: results[name] for name in specs}  # the recipe's order
            for name, spec in specs.items():  # a kept row's too: its fingerprint says its model's files are the same
                if spec.is_local_model:
                    results[name]["model_files"] = scored_files(spec, stage.input_digests, run_dir.root)
            for name in results:
                results[name]["gap_closed"] = gap_closed(results, name)
            summary = {
                "k": cfg.k,
                "temperature": cfg.temperature,
                "top_p": cfg.top_p,
                "max_new_tokens": cfg.max_new_tokens,
                "seed": recipe.run.seed,
                "rows": list(results),
                "policies": results,
                "comparisons": comparisons(results, cfg.compare),
                "row_fingerprints": row_prints,
            }
            # Every row's samples with the results they were counted in: a rerun stopped by a later row had
            # replaced the earlier rows' sample files while results.json still held the run before.
            for name, path in samples.items():
                if name not in unchanged:  # a kept row's file is already its results' (a .tmp beside it is older)
                    os.replace(unpublished(path), path)
            write_json_atomic(out, summary)
            tracker.log(0, {f"pass@1/{name}": r["pass@1"] for name, r in results.items()})
        stage.summary = {**eval_costs(ledger, tallies, judge, judge_ledger), **spent}
    print_table(summary, cfg.k)
    warn_of_judge_failures(summary)
    return out


def warn_of_judge_failures(summary: dict) -> None:
    """A judge beside the verifier (`use = "compare"`) that failed: the verifier decided those samples, so
    nothing is masked, but the agreement is over fewer samples, or none."""
    for name, r in summary["policies"].items():
        agreement = r.get("judge_agreement") or {}
        if errors := agreement.get("judge_errors"):
            log.warning(
                "eval: the judge failed on %d samples of row %r (its agreement is over the other %d): %s",
                errors,
                name,
                agreement["samples"],
                agreement.get("first_judge_error", ""),
            )


def fmt(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    # The interval to the value's places: to 2, 0.999's [0.9962, 1.0] read [1.00, 1.00], the value outside it.
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def agreement_text(agreement: dict | None) -> str:
    if not agreement:
        return ""
    share = "" if agreement["agreement"] is None else f"{agreement['agreement']:.0%} of {agreement['samples']}"
    errors = agreement.get("judge_errors", 0)  # older results lack it
    return "; ".join([*([share] if share else []), *([f"judge failed on {errors}"] if errors else [])])


def eval_costs(ledger: CostLedger, tallies: list[dict], judge, judge_ledger: CostLedger) -> dict:
    """The stage summary's money: the rows' (`api_cost`, with their API requests' counts added up) and the LLM
    judge's (`api_cost_judge`), apart."""
    if tallies:
        ledger.count_requests({field: sum(t[field] for t in tallies) for field in tallies[0]})
    return {"api_cost": ledger.summary(), **judge_cost(judge, judge_ledger)}


def print_table(summary: dict, k: int) -> None:
    first = summary["policies"][next(iter(summary["policies"]))]
    table = Table(
        title=f"held-out pass@k ({first['tasks']} tasks, T={summary['temperature']}; 95 % intervals over tasks)"
    )
    tools = any("tool_use" in r for r in summary["policies"].values())
    judged = any("judge_agreement" in r for r in summary["policies"].values())
    erred = any(unscored(r) for r in summary["policies"].values())
    extra = [
        *(["uses tool"] if tools else []),
        *(["judge agrees"] if judged else []),
        *(["not scored"] if erred else []),
    ]
    pass_k = [f"pass@{k}"] if k > 1 else []  # with k = 1 it is the pass@1 column
    for column in ("policy", "pass@1", *pass_k, "gap closed", "seconds", *extra):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name in summary["rows"]:  # the recipe's order (the JSON file sorts its keys)
        r = summary["policies"][name]
        gap = "" if r["gap_closed"] is None or name in ("base", "teacher") else f"{r['gap_closed']:.0%}"
        row = [
            escape(name),  # a row's name is the user's text: `qwen3 [/no_think]` is no markup tag
            fmt(r["pass@1"], r.get("pass@1_ci")),
            *([fmt(r[f"pass@{k}"], r.get(f"pass@{k}_ci"))] if k > 1 else []),
            gap,
            f"{r['seconds']:.1f}",
        ]
        agrees = agreement_text(r.get("judge_agreement"))
        table.add_row(
            *row,
            *([tool_use_text(r.get("tool_use", {}))] if tools else []),
            *([escape(agrees)] if judged else []),
            *([escape(unscored(r))] if erred else []),
        )
    Console().print(table)
    print_comparisons(summary.get("comparisons", []))


def print_comparisons(rows: list[dict]) -> None:
    if not rows:
        return
    table = Table(title="paired differences of pass@1 on the same tasks (95 % intervals)")
    for column in ("policy", "minus", "difference", "interval", ""):
        table.add_column(column, justify="left" if column in ("policy", "minus", "") else "right")
    for c in rows:
        interval = f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"
        table.add_row(escape(c["a"]), escape(c["b"]), f"{c['diff']:+.3f}", escape(interval), comparison_note(c))
    Console().print(table)


def tool_use_text(rates: dict[str, float]) -> str:
    return ", ".join(f"{size} {rate:.0%}" for size, rate in rates.items())
