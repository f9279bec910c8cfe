"""`generate`: a policy answers the train tasks, n samples each; every answer is verified.

Resumable: records already in `trajectories/<output>.jsonl` are skipped by (task, sample index), so a
killed run is rerun without losing or duplicating anything. Records go out one flushed line each.
A file written under another config is refused rather than mixed with new records.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..config import Recipe
from ..costs import CostLedger, describe, load_prices
from ..errors import WarmstartError
from ..jsonl import JsonlAppender, read_records, write_json_atomic
from ..kd_signal import unrequested_logprobs
from ..policies import Request, Sampling, make_policy
from ..progress import progress_bar
from ..runs import RunDir, fingerprint
from ..types import Trajectory
from .common import Verifier, check_disjoint, load_tasks, make_environment

log = logging.getLogger(__name__)


def stage_fingerprint(recipe: Recipe) -> str:
    config = {
        "generate": recipe.generate.model_dump(exclude={"concurrency"}),  # batching changes no answer
        "env": recipe.env.model_dump(),
        "tasks": recipe.tasks.model_dump(exclude={"eval", "eval_file"}),
        "seed": recipe.run.seed,
    }
    return fingerprint(config, [Path(recipe.tasks.train_file)] if recipe.tasks.train_file else [])


def run(recipe: Recipe) -> Path:
    started, cfg, run_dir = time.time(), recipe.generate, RunDir(recipe)
    env = make_environment(recipe)
    out = run_dir.trajectories(cfg.output)
    stage, print_ = f"generate:{cfg.output}", stage_fingerprint(recipe)
    if run_dir.is_done(stage, print_, [out]):
        log.info("%s: already done, nothing to do", stage)
        return out
    policy = make_policy(cfg.teacher, env, "generate.teacher", recipe)  # a bad spec or path fails before any file is read
    note = unrequested_logprobs(policy, recipe)
    if note:
        log.info("%s: %s", stage, note)
    _claim_output(run_dir, stage, print_, out)
    tasks = load_tasks(recipe, env, "train")
    check_disjoint(tasks, load_tasks(recipe, env, "eval"))
    earlier = read_records(out, Trajectory) if out.exists() else []
    done = {t.key for t in earlier}
    pending = [Request(t, i) for t in tasks for i in range(cfg.samples_per_task) if (t.id, i) not in done]
    by_id = {t.id: t for t in tasks}
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    passed = 0
    ledger = CostLedger(load_prices(recipe.api.prices), recipe.api.batch_discount)
    for trajectory in earlier:  # earlier, killed runs cost money too
        ledger.add(trajectory, trajectory.verdict is not None and trajectory.verdict.passed)
    # One Verifier for all chunks: its workers (python's sandboxes) start once and stop with the loop.
    with JsonlAppender(out) as writer, Verifier(env) as verifier, progress_bar(f"generate {cfg.output}", len(pending)) as advance:
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
    cost = ledger.summary()
    log.info(describe(stage, cost))
    run_dir.mark_done(stage, print_, [out], started, {"records": len(done) + len(pending), "api_cost": cost})
    return out


def _claim_output(run_dir: RunDir, stage: str, print_: str, out: Path) -> None:
    """Record which config is writing `out`, refusing to append to a file another config began."""
    manifest = run_dir.manifest()
    claims = manifest.setdefault("claims", {})
    if out.exists() and claims.get(out.name, print_) != print_:
        raise WarmstartError(f"{out}: was written by a generate stage with another config; remove it or set generate.output")
    claims[out.name] = print_
    write_json_atomic(run_dir.manifest_path, manifest)
