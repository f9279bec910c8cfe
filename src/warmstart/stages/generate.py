"""`generate`: a policy answers the train tasks, n samples each; every answer is verified.

Resumable: records already in `trajectories/<output>.jsonl` are skipped by (task, sample index), so a
killed run is rerun without losing or duplicating anything. Records go out one flushed line each.
A file written under another config is refused rather than mixed with new records.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import Recipe
from ..envs.verification import Verifier
from ..errors import WarmstartError
from ..policies import make_policy
from ..runs.costs import CostLedger, describe, load_prices
from ..runs.directory import RunDir, Stage
from ..runs.jsonl import JsonlAppender, read_records, write_json_atomic
from ..runs.progress import progress_bar
from ..types import Request, Sampling, Trajectory
from .common import check_disjoint, latest_attempts, load_tasks, make_environment

log = logging.getLogger(__name__)


def stage_config(recipe: Recipe) -> tuple[dict, list[Path]]:
    """What decides the answers: the config (not its batching or error tolerance), the teacher by backend
    and model (not by its URL: the same server on another port is the same teacher), and the task file."""
    generate = recipe.generate.model_dump(exclude={"concurrency", "max_error_rate"})
    teacher = recipe.generate.teacher
    generate["teacher"] = f"{teacher.kind}:{teacher.name}" if teacher.base_url else str(teacher)
    config = {
        "generate": generate,
        "env": recipe.env.model_dump(),
        "tasks": recipe.tasks.model_dump(exclude={"eval", "eval_file"}),
        "seed": recipe.run.seed,
    }
    return config, [Path(recipe.tasks.train_file)] if recipe.tasks.train_file else []


def run(recipe: Recipe) -> Path:
    cfg, run_dir = recipe.generate, RunDir(recipe)
    env = make_environment(recipe)
    out = run_dir.trajectories(cfg.output)
    # Done only with no rollout ended in an error: a rerun asks for exactly those again.
    with run_dir.stage(
        f"generate:{cfg.output}", *stage_config(recipe), [out], lambda entry: not entry.get("errors")
    ) as stage:
        if stage.done:
            return out
        # A bad spec or path fails before any file is read.
        policy = make_policy(cfg.teacher, env, "generate.teacher", recipe)
        note = unrequested_logprobs(policy, recipe)
        if note:
            log.info("%s: %s", stage.name, note)
        _claim_output(run_dir, stage, out)
        tasks = load_tasks(recipe, env, "train")
        check_disjoint(tasks, load_tasks(recipe, env, "eval"))
        earlier = read_records(out, Trajectory) if out.exists() else []
        done = {t.key for t in latest_attempts(earlier) if t.error is None}  # errors are asked again
        pending = [Request(t, i) for t in tasks for i in range(cfg.samples_per_task) if (t.id, i) not in done]
        ledger = CostLedger(load_prices(recipe.api.prices), recipe.api.batch_discount)
        for trajectory in earlier:  # earlier runs' replies cost money too, failed attempts included
            ledger.add(trajectory, trajectory.verdict is not None and trajectory.verdict.passed)
        if policy.request_tally is not None:
            log.info("%s: %s", stage.name, limits_note(len(pending), recipe, policy.request_tally.worst_case_s))
        answer_all(policy, env, pending, {t.id: t for t in tasks}, out, ledger, recipe)
        if policy.request_tally is not None:
            ledger.count_requests(policy.request_tally.summary())
        cost = ledger.summary()
        log.info(describe(stage.name, cost))
        final = latest_attempts(read_records(out, Trajectory))
        stage.summary = {"records": len(final), "errors": sum(t.error is not None for t in final), "api_cost": cost}
        check_error_rate(final, cfg.max_error_rate, stage.name)
    return out


def limits_note(pending: int, recipe: Recipe, worst_case_s: float) -> str:
    """What the stage will ask and how long a request may take at worst (its retries and waits included)."""
    api = recipe.api
    return (
        f"{pending} rollouts to ask for, at most {api.concurrency} requests in flight; a request gives up after "
        f"at most {worst_case_s:,.0f} s ({api.max_retries} retries of up to api.timeout_s = {api.timeout_s:g} s, "
        f"waits capped at api.max_retry_after_s = {api.max_retry_after_s:g} s"
        + (f", api.deadline_s = {api.deadline_s:g} s" if api.deadline_s else "")
        + "; rate-limit queueing aside)"
    )


def check_error_rate(records: list[Trajectory], max_rate: float, stage: str) -> None:
    """A stage whose records ended in an error more often than `max_rate` fails (it is not done: a rerun
    asks again for exactly those)."""
    errors = [t for t in records if t.error is not None]
    if records and len(errors) / len(records) > max_rate:
        raise WarmstartError(
            f"{stage}: {len(errors)} of {len(records)} rollouts ended in an error, more than generate.max_error_rate "
            f"= {max_rate:g} (first: {errors[0].error}); a rerun asks again for exactly those"
        )


def answer_all(policy, env, pending: list[Request], by_id: dict, out: Path, ledger: CostLedger, recipe: Recipe) -> None:
    """The policy answers `pending` in chunks of `generate.concurrency`; each answer is verified, then
    appended to `out` (one flushed line) and entered in the ledger."""
    cfg, passed = recipe.generate, 0
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    # One Verifier for all chunks: its workers (python's sandboxes) start once and stop with the loop.
    with (
        JsonlAppender(out) as writer,
        Verifier(env) as verifier,
        progress_bar(f"generate {cfg.output}", len(pending)) as advance,
    ):
        for start in range(0, len(pending), cfg.concurrency):
            chunk = pending[start : start + cfg.concurrency]
            trajectories = policy.rollout(chunk, sampling, recipe.run.seed)
            answered = [t for t in trajectories if t.error is None]
            for trajectory, verdict in zip(answered, verifier.verify_all([(by_id[t.task_id], t) for t in answered])):
                trajectory.verdict = verdict
                passed += verdict.passed
            for trajectory in trajectories:
                writer.append(trajectory)
                ledger.add(trajectory, trajectory.verdict is not None and trajectory.verdict.passed)
            advance(len(chunk), note=f"verified {passed}")


def unrequested_logprobs(policy, recipe: Recipe) -> str | None:
    """A note when an API teacher could give top-k log-probs that nobody asked for.

    Not requested automatically: some models behind a backend that has them refuse them (OpenAI's
    reasoning models answer 400), and they make every response several times larger.
    """
    capabilities = getattr(getattr(policy, "backend", None), "capabilities", None)
    if capabilities is None or not capabilities.top_logprobs or recipe.api.top_logprobs or recipe.sft.kd_weight == 0:
        return None
    return f"{recipe.generate.teacher} can return top-k log-probs but api.top_logprobs = 0: SFT will train on its tokens only (api.top_logprobs = 5 enables sparse KD)"


def _claim_output(run_dir: RunDir, stage: Stage, out: Path) -> None:
    """Record which config is writing `out`, refusing to append to a file another config began."""
    manifest = run_dir.manifest()
    claims = manifest.setdefault("claims", {})
    if out.exists() and claims.get(out.name, stage.fingerprint) != stage.fingerprint:
        raise WarmstartError(
            f"{out}: was written by a generate stage with another config; remove it or set generate.output"
        )
    claims[out.name] = stage.fingerprint
    write_json_atomic(run_dir.manifest_path, manifest)
