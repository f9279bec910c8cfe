"""`curate`: keep verified trajectories; drop failures, exact duplicates and eval-split prompts.

Writes `curated/<output>.jsonl` and `curated/<output>.dropped.json` with counts per reason. Two
switches exist for the demo's ablations: `require_passed = false` keeps unverified data (what
training without verification would see) and `strip_reasoning = true` removes the chain.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from ..config import Recipe
from ..envs import make_env
from ..errors import WarmstartError
from ..runs.directory import RunDir
from ..runs.jsonl import JsonlAppender, read_records, write_json_atomic
from ..types import Trajectory
from .common import latest_attempts, load_tasks, prompt_key

log = logging.getLogger(__name__)


# Finish reasons that make a reply unusable as training data, whatever the verifier says.
FLAGGED_FINISH = {
    "length": "truncated",
    "refusal": "refused",
    "content_filter": "content filtered",
    "oversized": "oversized (longer than max_new_tokens allows)",
}


def drop_reason(t: Trajectory, require_passed: bool) -> str | None:
    if t.error is not None:
        return "policy error"
    flagged = FLAGGED_FINISH.get(t.finish_reason or "")
    if flagged:
        return flagged
    if t.verdict is None:
        return "not verified"
    if t.verdict.infra_error is not None:
        return "verifier infra error"
    if require_passed and not t.verdict.passed:
        return f"failed verification ({t.verdict.details.get('reason', 'no reason given')})"
    return None


def strip_reasoning(t: Trajectory) -> Trajectory:
    messages = [m.model_copy(update={"reasoning": None}) if m.role == "assistant" else m for m in t.messages]
    return t.model_copy(update={"messages": messages})


def curate(trajectories: list[Trajectory], eval_prompts: set[str], recipe: Recipe) -> tuple[list[Trajectory], Counter]:
    cfg, kept, dropped, seen = recipe.curate, [], Counter(), set()
    for t in trajectories:
        reason = drop_reason(t, cfg.require_passed)
        if reason is None and cfg.decontaminate and prompt_key(t.messages) in eval_prompts:
            reason = "prompt in eval split"
        if cfg.strip_reasoning:
            t = strip_reasoning(t)
        identity = json.dumps([m.model_dump() for m in t.messages], sort_keys=True)
        if reason is None and cfg.dedup and identity in seen:
            reason = "exact duplicate"
        if reason:
            dropped[reason] += 1
            continue
        seen.add(identity)
        kept.append(t)
    return kept, dropped


def run(recipe: Recipe) -> Path:
    cfg, run_dir = recipe.curate, RunDir(recipe)
    source, out, report = run_dir.trajectories(cfg.input), run_dir.curated(cfg.output), run_dir.dropped(cfg.output)
    if not source.exists():
        raise WarmstartError(f"curate.input: {source} does not exist (run generate first)")
    config = {"curate": cfg.model_dump(), "env": recipe.env.model_dump(), "tasks": recipe.tasks.model_dump()}
    with run_dir.stage(f"curate:{cfg.output}", config, [source], [out, report]) as stage:
        if stage.done:
            return out
        records = read_records(source, Trajectory)
        if not records:
            raise WarmstartError(f"{source}: has no trajectories to curate")
        trajectories = latest_attempts(records)  # an attempt a rerun of generate replaced is not data
        eval_prompts = {prompt_key(t.prompt) for t in load_tasks(recipe, make_env(recipe.env), "eval")}
        kept, dropped = curate(trajectories, eval_prompts, recipe)
        write_records(out, kept)
        stage.summary = {"source": cfg.input, "input": len(trajectories), "kept": len(kept), "dropped": dict(dropped)}
        if len(records) > len(trajectories):
            stage.summary["superseded_attempts"] = len(records) - len(trajectories)
        write_json_atomic(report, stage.summary)
        log.info("%s: kept %d of %d; dropped %s", stage.name, len(kept), len(trajectories), dict(dropped) or "none")
        if not kept:
            raise WarmstartError(f"curate: every trajectory of {source} was dropped ({dict(dropped)})")
    return out


def write_records(path: Path, records: list[Trajectory]) -> None:
    """`path` holds exactly `records`, replaced whole (a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with JsonlAppender(tmp) as writer:
        for record in records:
            writer.append(record)
    os.replace(tmp, path)
