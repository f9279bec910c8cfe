"""What several stages share: the tasks of a split, prompt text for decontamination, and the check that a
training stage's output replaces no model the run reads or another stage wrote."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from ..config import Recipe
from ..curation.text import matching_key
from ..envs import make_env
from ..envs.base import Environment
from ..envs.judge import Judged, NoTools, RubricJudge
from ..errors import WarmstartError
from ..policies import make_policy
from ..runs.costs import CostLedger
from ..runs.directory import RunDir
from ..runs.jsonl import read_records
from ..types import Message, Task, Trajectory, Usage

log = logging.getLogger(__name__)


def make_environment(recipe: Recipe) -> Environment:
    """The recipe's environment, wrapped with its LLM judge when `[env.judge]` is set."""
    env = make_env(recipe.env)
    cfg = recipe.env.judge
    if cfg is None:
        return env
    return Judged(
        env,
        RubricJudge(
            lambda: make_policy(cfg.policy, NoTools(), "env.judge.policy", recipe), cfg.rubric, cfg.max_new_tokens
        ),
        cfg.use,
    )


def judge_policy(env: Environment):
    """The API policy of the environment's LLM judge (`[env.judge]`), made now; None without a judge, or
    where it runs locally (its cost is compute time, as a local teacher's)."""
    judge = getattr(env, "judge", None)
    if not isinstance(judge, RubricJudge):
        return None
    policy = judge.made_policy()
    return policy if getattr(policy, "request_tally", None) is not None else None


def bill_judge(policy, ledger: CostLedger, note: Callable[[Usage], None] | None = None) -> None:
    """Bill every reply the judge's API `policy` pays for in `ledger` as it arrives (after `note`, where
    given: a journal a killed run leaves behind). Its verdicts keep only the judge's text, so this is the
    only place its spend is seen: a stage with a judge bills it as its own line (`judge_cost`)."""
    ledger.api = True  # an API judge: money is its cost, none spent (all from the cache) included

    def paid(usage: Usage) -> None:
        if note is not None:
            note(usage)
        ledger.add_usage(usage, policy.backend.model)

    policy.paid = paid


def judge_cost(policy, ledger: CostLedger) -> dict:
    """The judge's line of a stage's summary, `{"api_cost_judge": ...}` (costs.json's `api_judge`, counted in
    the stage's and the run's totals), with what its requests came to; {} without an API judge."""
    if policy is None:
        return {}
    ledger.count_requests(policy.request_tally.summary())
    return {"api_cost_judge": ledger.summary()}


def tasks_read(recipe: Recipe, splits: tuple[str, ...]) -> tuple[dict, list[Path]]:
    """What decides the tasks a stage reads (its `splits`), for its fingerprint: each split's count, or its
    task file's content (an input, by resolved path: `./train.jsonl` is `train.jsonl`); neither the count a
    task file makes unused nor another split's settings. Without task files the config is as it always was
    (every split's count), so runs made before keep their fingerprints."""
    tasks = recipe.tasks
    if not tasks.train_file and not tasks.eval_file:
        return tasks.model_dump(), []
    config, files = {}, []
    for split in splits:
        file = tasks.train_file if split == "train" else tasks.eval_file
        if file:
            config[f"{split}_file"] = "its content"
            files.append(Path(file).resolve())
        else:
            config[split] = tasks.train if split == "train" else tasks.eval
    return config, files


def load_tasks(recipe: Recipe, env: Environment, split: str) -> list[Task]:
    file = recipe.tasks.train_file if split == "train" else recipe.tasks.eval_file
    if file is None:
        try:
            tasks = env.tasks(split, recipe.tasks.train if split == "train" else recipe.tasks.eval, recipe.run.seed)
        except ValueError as exc:
            raise WarmstartError(f"tasks.{split}: {exc}") from None
        return unique_ids(tasks, f"tasks.{split}: the {env.name} environment")
    tasks = read_records(Path(file), Task, torn_tail=False)  # the user's file: a bad last line is no torn tail
    if not tasks:
        raise WarmstartError(f"tasks.{split}_file: {file} has no tasks")
    wrong = [t for t in tasks if t.split != split or t.env != env.name]
    if wrong:
        raise WarmstartError(
            f"tasks.{split}_file: {file}: task {wrong[0].id} is of env {wrong[0].env!r}, split {wrong[0].split!r} "
            f"(this run's: env {env.name!r}, split {split!r})"
        )
    check_fields = getattr(env, "task_problem", None)  # what an environment reads from hidden / meta, where it says
    for task in tasks if check_fields else []:
        problem = check_fields(task)
        if problem:
            raise WarmstartError(f"tasks.{split}_file: {file}: task {task.id}: {problem}")
    return unique_ids(tasks, f"tasks.{split}_file: {file}")


def unique_ids(tasks: list[Task], source: str) -> list[Task]:
    """`tasks`, once each id is known to be unique: records name their task by id (trajectories, the
    curated data, pass@k per task), so two tasks under one id would mix their records."""
    seen: set[str] = set()
    for task in tasks:
        if task.id in seen:
            raise WarmstartError(f"{source} gives task id {task.id!r} more than once (each task needs its own id)")
        seen.add(task.id)
    return tasks


def latest_attempts(trajectories: list[Trajectory]) -> list[Trajectory]:
    """The last record of each (task, sample index), in the order the keys first appear: a rerun of
    generate appends a new attempt for a rollout that ended in an error, and the newest one stands."""
    latest: dict[tuple[str, int], Trajectory] = {}
    for trajectory in trajectories:
        latest[trajectory.key] = trajectory
    return list(latest.values())


def prompt_key(messages: list[Message]) -> str:
    """Prompt text normalised for matching: user and system turns, as exact dedup compares texts
    (`curation.text.normalize`: case, Unicode forms, a digit's script, number separators, invisible characters
    folded), whitespace collapsed. One dataset exported twice, its digits rendered once as `٤٦` and once as `46`
    or in fullwidth forms, asks one prompt; `46+88` and `46+89` stay two."""
    return matching_key(" ".join(m.content or "" for m in messages if m.role in ("system", "user")))


def check_disjoint(train: list[Task], eval_: list[Task]) -> None:
    train_prompts = {prompt_key(t.prompt) for t in train}
    shared = [t for t in eval_ if prompt_key(t.prompt) in train_prompts]
    if shared:
        raise WarmstartError(
            f"the eval split overlaps train: {len(shared)} eval task(s) share a prompt with a train task "
            f"(first: {shared[0].id})"
        )


def check_output_free(run_dir: RunDir, stage: str, key: str, out: Path, reads: dict[str, Path | None]) -> None:
    """Refuse a training stage's output (`key`: sft.output, grpo.output) whose models/<output> is a model the
    stage reads (`reads`: its role -> directory, e.g. "grpo.init") or one another stage of the run wrote.
    Publishing would replace that model: the manifest would name it the output of two stages, a resume would
    meet that stage's checkpoints, and a model the stage reads, replaced by its own result, changes the
    stage's inputs, so every rerun would refuse the checkpoints it wrote. Called before anything is written."""
    for role, model in reads.items():
        if model is not None and model.resolve() == out.resolve():
            raise WarmstartError(
                f"{key} = {out.name!r}: models/{out.name} is {role}, a model this run reads; publishing would "
                "replace it. Name the trained model otherwise"
            )
    claimed = str(out.relative_to(run_dir.root))
    for other, entry in run_dir.manifest()["stages"].items():
        if other != stage and claimed in entry.get("outputs", []):
            raise WarmstartError(
                f"{key} = {out.name!r}: models/{out.name} is the model stage {other} wrote; publishing would "
                "replace it. Name the trained model otherwise"
            )


@contextmanager
def summary_if_stopped(stopped: Callable[[dict], None] | None, summary: Callable[[], dict | None]):
    """Where the block stops with an exception (Ctrl-C's included), `stopped(summary())` first, where there is
    a summary: a training run stopped part-way records what it spent (`Stage.stopped`: a failed run, or one
    beside the finished run whose record still describes the stage's outputs), which costs.json counts and
    the report shows; it had recorded nothing, its seconds lost."""
    try:
        yield
    except BaseException:
        if stopped is not None:
            try:
                spent = summary()
            except Exception as also:  # the error that stopped the run is the one to say
                log.warning("what the stopped run spent could not be summed up: %s", also)
                spent = None
            if spent is not None:
                stopped(spent)
        raise
