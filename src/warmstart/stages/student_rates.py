"""The student's side of difficulty: how often the model being taught already solves each task.

A task the student (by default the model SFT starts from) passes every time teaches it nothing; one
it never passes may still be out of reach. `curate.student_pass_rate = [lo, hi]` keeps the tasks in
between, from a cheap sampling pass: `curate.student_samples` answers per candidate task (only the
tasks still kept after every other filter), sampled as eval samples, verified by the same verifier.
"""

from __future__ import annotations

from ..config import Recipe
from ..curation.difficulty import PassRate, pass_rates
from ..envs.verification import Verifier
from ..policies import make_policy
from ..runs.costs import CostLedger, load_prices
from ..runs.progress import progress_bar
from ..types import Request, Sampling, Task, Trajectory
from .common import load_tasks, make_environment


def student_pass_rates(recipe: Recipe, task_ids: set[str]) -> tuple[dict[str, PassRate], list[Trajectory], dict]:
    """Per task of `task_ids`, the share of the student's verified samples that passed; the samples; and
    what they cost (an API student is paid for: the ledger's summary, for the stage's costs.json entry)."""
    cfg, env = recipe.curate, make_environment(recipe)
    tasks = [t for t in load_tasks(recipe, env, "train") if t.id in task_ids]
    policy = make_policy(cfg.student, env, "curate.student", recipe)
    ledger = CostLedger(load_prices(recipe.api.prices), recipe.api.batch_discount)
    samples = sample(policy, env, tasks, recipe, ledger)
    if getattr(policy, "request_tally", None) is not None:
        ledger.count_requests(policy.request_tally.summary())
    return pass_rates(samples), samples, ledger.summary()


def sample(policy, env, tasks: list[Task], recipe: Recipe, ledger: CostLedger) -> list[Trajectory]:
    """The student's samples of `tasks`, verified; every one entered in `ledger` (a failed one was billed too)."""
    by_id = {t.id: t for t in tasks}
    sampling = Sampling(recipe.eval.temperature, recipe.eval.top_p, recipe.eval.max_new_tokens)
    requests = [Request(t, i) for t in tasks for i in range(recipe.curate.student_samples)]
    out: list[Trajectory] = []
    with (
        Verifier(env, recipe.env.verify_timeout) as verifier,
        progress_bar("curate: student samples", len(requests)) as advance,
    ):
        for start in range(0, len(requests), recipe.eval.batch_size):
            chunk = requests[start : start + recipe.eval.batch_size]
            rollouts = policy.rollout(chunk, sampling, recipe.run.seed)
            answered = [t for t in rollouts if t.error is None]
            for trajectory, verdict in zip(answered, verifier.verify_all([(by_id[t.task_id], t) for t in answered])):
                trajectory.verdict = verdict
            for trajectory in rollouts:
                ledger.add(trajectory, trajectory.verdict is not None and trajectory.verdict.passed)
            out += answered
            advance(len(chunk))
    return out
