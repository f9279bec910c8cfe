"""GRPO's zero-advantage curriculum (`grpo.task_filter = "learnable"`): train only on tasks the current
policy passes sometimes.

A group whose rewards are all equal (every sample passed, or every one failed) has zero advantage: it
costs as many rollouts as any other and teaches nothing. Dynamic sampling (`drop_zero_variance`) drops
such groups after paying for them; this filter avoids most of them beforehand. Every
`task_filter_every` steps the current policy answers each candidate task `task_filter_samples` times,
and the tasks it passed sometimes (0 < estimated pass rate < 1) become the pool the next steps draw
their groups from, in order, cycling.

The estimate is cheap by construction: a few samples per task (fewer than a group), sampled under no
gradient in batches no larger than a training step's (`tasks_per_step x group_size` rollouts, the
memory the recipe already sized), at the training temperature and token limit, so it estimates the
pass rate the groups will see (a shorter limit would cut answers and read as failures).

The candidates of a refresh are the next `tasks_per_step x task_filter_every` train tasks in order: the
ones an unfiltered run would take over the same steps (before refills). Which tasks and which seeds are
a function of the step, and the pool a refresh chose is kept in the checkpoint, so a resumed run trains
on exactly the tasks an uninterrupted one would.

Fewer learnable tasks than `tasks_per_step` (a student that passes, or fails, nearly everything): the
pool is topped up with the other candidates nearest a 0.5 pass rate (candidate order among equals,
unknown rates last), so a step never trains one task twice; the stage warns and records how many
(`topped_up`), never silently.

The filter's rollouts are counted apart from training's (`filter_rollouts`, `filter_sampled_tokens`,
`filter_seconds` in the step's history entry) and added to the step's seconds and FLOPs, so reward per
compute compares honestly with an unfiltered run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import GrpoConfig
from ..envs.verification import Verifier
from ..types import Sampling, Task
from .distributed import SINGLE, World
from .rollouts import sample_and_verify

# The filter's sampling seeds sit far from the training's (run seed + 1000 x step + task cursor), so no
# filter sample reuses a training sample's random numbers.
SEED_OFFSET = 500_000_000


@dataclass
class PassRates:
    """What the policy did on each candidate task: samples passed, and samples verified without an
    infra error (an infra error is no evidence either way); and what it cost."""

    tasks: list[Task]
    passed: list[int]
    verified: list[int]
    rollouts: int
    sampled_tokens: int

    @property
    def rates(self) -> list[float | None]:
        """Estimated pass rate per task; None where fewer than two samples were verified."""
        return [p / v if v >= 2 else None for p, v in zip(self.passed, self.verified)]


def refresh_due(step: int, every: int) -> bool:
    """Steps 1, 1 + every, 1 + 2 x every, ...: the first step always has a pool to draw from."""
    return (step - 1) % every == 0


def filter_seed(run_seed: int, step: int) -> int:
    return run_seed + SEED_OFFSET + 1000 * step


def candidates(tasks: list[Task], step: int, cfg: GrpoConfig) -> list[Task]:
    """The train tasks the refresh at `step` estimates: the window of the train order an unfiltered run
    would use over the period (cycling through the tasks, none twice)."""
    count = min(cfg.tasks_per_step * cfg.task_filter_every, len(tasks))
    start = (step - 1) // cfg.task_filter_every * count
    return [tasks[(start + i) % len(tasks)] for i in range(count)]


def estimate_pass_rates(
    model,
    tokenizer,
    env,
    tasks: list[Task],
    cfg: GrpoConfig,
    stop_ids,
    seed: int,
    max_turns: int,
    verifier: Verifier,
    world: World = SINGLE,
) -> PassRates:
    """`task_filter_samples` rollouts per task from the current policy, verified, in chunks of at most
    one training step's rollouts (each process sampling its share: train/rollouts.py)."""
    per_chunk = max(1, cfg.tasks_per_step * cfg.group_size // cfg.task_filter_samples)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    rates = PassRates(tasks, [], [], 0, 0)
    for number, start in enumerate(range(0, len(tasks), per_chunk)):
        chunk = tasks[start : start + per_chunk]
        starts = [(t, i) for t in chunk for i in range(cfg.task_filter_samples)]
        episodes, verdicts = sample_and_verify(
            model, tokenizer, env, starts, sampling, stop_ids, seed + number, max_turns, verifier, world
        )
        for t in range(len(chunk)):
            mine = verdicts[t * cfg.task_filter_samples : (t + 1) * cfg.task_filter_samples]
            rates.passed.append(sum(v.passed for v in mine if v.infra_error is None))
            rates.verified.append(sum(v.infra_error is None for v in mine))
        rates.rollouts += len(episodes)
        rates.sampled_tokens += sum(len(e.ids) for e in episodes)
    return rates


def is_learnable(rate: float | None) -> bool:
    return rate is not None and 0.0 < rate < 1.0


def select_pool(rates: PassRates, at_least: int) -> tuple[list[Task], int]:
    """The learnable tasks in candidate order, topped up to `at_least` with the rest nearest a 0.5 pass
    rate; (the pool, how many were topped up)."""
    estimates = rates.rates
    pool = [t for t, r in zip(rates.tasks, estimates) if is_learnable(r)]
    if len(pool) >= at_least:
        return pool, 0
    rest = [i for i, r in enumerate(estimates) if not is_learnable(r)]
    rest.sort(key=lambda i: 1.0 if estimates[i] is None else abs(estimates[i] - 0.5))  # stable: ties in order
    extra = [rates.tasks[i] for i in rest[: at_least - len(pool)]]
    return pool + extra, len(extra)


def describe(rates: PassRates, pool: list[Task], topped_up: int) -> dict:
    """The refresh's record: how many candidates, how many learnable, the pool, and the estimates as a
    histogram (`pass_counts[k]`: tasks passed k times) with their mean."""
    known = [r for r in rates.rates if r is not None]
    samples = max(rates.verified, default=0)
    return {
        "candidates": len(rates.tasks),
        "learnable": sum(is_learnable(r) for r in rates.rates),
        "pool": len(pool),
        "topped_up": topped_up,
        "pass_counts": [rates.passed.count(k) for k in range(samples + 1)],
        "mean_pass_rate": sum(known) / len(known) if known else None,
        "unknown": len(rates.tasks) - len(known),
    }
