"""What a GRPO run records and shows: each step's scalars for the trackers, the progress bar (in steps, or in
percent of a budget), the run's summary for the manifest (its totals and its own part of them), and the
warning where no step had a signal. The loop itself is `stages/grpo.py`."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import GrpoConfig
from ..runs.progress import progress_bar
from ..train import memory_plan
from ..train.distributed import World, silent_bar

log = logging.getLogger(__name__)


def budget_used(history: list[dict], cfg: GrpoConfig) -> float | None:
    """The share of its budget (seconds or teacher tokens, whichever is further along) a run has used;
    None without a budget."""
    shares = []
    if cfg.seconds_budget:
        shares.append(sum(h["seconds"] for h in history) / cfg.seconds_budget)
    if cfg.teacher_tokens_budget:
        shares.append(sum(h.get("teacher_tokens", 0) for h in history) / cfg.teacher_tokens_budget)
    return max(shares) if shares else None


def progress_note(entry: dict) -> str:
    note = f"reward {entry['mean_reward']:.3f} flat {entry['zero_variance_fraction']:.2f}"
    return note + (f" reverse KL {entry['reverse_kl']:.3f}" if "reverse_kl" in entry else "")


def warn_if_nothing_learned(history: list[dict], cfg: GrpoConfig) -> None:
    """Say so where every group of every step was flat: the run took no update that moved the weights,
    and the model it publishes is `grpo.init`'s, which the manifest's flat-group share alone would leave
    to be noticed. A teacher's per-token advantages move the weights whatever the rewards."""
    if cfg.teacher is None and all(h["zero_variance_fraction"] == 1.0 for h in history):
        log.warning(
            "grpo: every group of all %d steps was flat (each sample of a task got the same reward: all "
            "passed or all failed), so no update had a signal (a group needs two verified samples) and models/%s holds grpo.init's weights. A "
            "model that never (or always) passes gets nothing from GRPO: start from a better student, use "
            "harder or easier tasks, or a larger grpo.group_size",
            len(history),
            cfg.output,
        )


def step_scalars(entry: dict) -> dict:
    """The step's scalars for the trackers; the filter's estimates on the steps that refreshed it."""
    refresh = entry.get("task_filter")
    sampled = entry["sampled_tokens"] + entry["filter_sampled_tokens"]
    return {
        "reward": entry["mean_reward"],
        "flat_groups": entry["zero_variance_fraction"],
        "loss": entry["loss"],
        "reverse_kl": entry.get("reverse_kl"),
        "tokens_per_s": sampled / max(entry["seconds"], 1e-9),
        "rollouts": entry["rollouts"],
        "filter_rollouts": entry["filter_rollouts"],
        "filter_learnable": refresh["learnable"] / max(1, refresh["candidates"]) if refresh else None,
        "filter_pass_rate": refresh["mean_pass_rate"] if refresh else None,
        "mismatch_abs_logp": entry.get("mismatch_abs_logp"),
        **{name: entry.get(name) for name in ("is_ratio_p05", "is_ratio_p50", "is_ratio_p95", "is_ratio_max")},
        "tis_capped_fraction": entry.get("tis_capped_fraction"),
        "policy_version": entry.get("policy_version"),
    }


class BudgetProgress:
    """The progress bar: in steps, or for a budgeted run in percent of its budget (not of its step cap)."""

    def __init__(self, cfg: GrpoConfig, history: list[dict], done: int, shown: bool = True):
        self.cfg = cfg
        self.budgeted = budget_used(history, cfg) is not None
        self.shown = min(100, int(100 * budget_used(history, cfg))) if self.budgeted else done
        label = f"grpo {cfg.output}" + (" (% of budget)" if self.budgeted else "")
        # The other processes of a data-parallel run: the main one shows the progress.
        self.bar = progress_bar(label, 100 if self.budgeted else cfg.steps) if shown else silent_bar()

    def __enter__(self) -> BudgetProgress:
        self.move = self.bar.__enter__()
        self.move(self.shown)
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.__exit__(*exc_info)

    def advance(self, history: list[dict], entry: dict) -> bool:
        """Show the step just taken; whether the budget is spent."""
        used = budget_used(history, self.cfg)
        moved = min(100, int(100 * used)) - self.shown if self.budgeted else 1
        self.shown += moved
        self.move(moved, note=progress_note(entry))
        return used is not None and used >= 1.0


def stage_summary(history: list[dict], cfg: GrpoConfig, start_from: Path, world: World, resumed: int) -> dict:
    """The run's record; `resumed`: the steps of `history` a checkpoint had taken before this run."""
    this_run = history[resumed:]
    return {
        **summary(history, cfg),
        "init": str(start_from),
        "processes": world.size,
        # This run's own part of the totals: what a resumed run that failed or stopped spent (the report's failed runs).
        "this_run": {
            "train_seconds": sum(h["seconds"] for h in this_run),
            "flops_estimate": sum(h["flops_estimate"] for h in this_run),
        },
    }


def summary(history: list[dict], cfg: GrpoConfig) -> dict:
    return {
        "steps": len(history),
        "train_seconds": sum(h["seconds"] for h in history),
        "flops_estimate": sum(h["flops_estimate"] for h in history),
        "zero_variance_fraction": sum(h["zero_variance_fraction"] for h in history) / len(history),
        "updates": sum(h["groups_used"] > 0 for h in history) * cfg.updates_per_batch,
        "rollouts": sum(h["rollouts"] for h in history),
        "filter_rollouts": sum(h["filter_rollouts"] for h in history),
        **({"task_filter": filter_summary(history)} if cfg.task_filter == "learnable" else {}),
        **({"teacher_tokens": sum(h.get("teacher_tokens", 0) for h in history)} if cfg.teacher else {}),
        "peak_rss_mb": memory_plan.peak_rss_mb(),  # this process's (see sft's summary)
        "history": history,
    }


def filter_summary(history: list[dict]) -> dict:
    """The refreshes of a learnable-filtered run: how many, how many were topped up (too few learnable
    tasks), and the share of candidates found learnable."""
    records = [h["task_filter"] for h in history if "task_filter" in h]
    return {
        "refreshes": len(records),
        "topped_up_refreshes": sum(r["topped_up"] > 0 for r in records),
        "learnable_share": sum(r["learnable"] for r in records) / max(1, sum(r["candidates"] for r in records)),
        "filter_seconds": sum(h["filter_seconds"] for h in history),
    }
