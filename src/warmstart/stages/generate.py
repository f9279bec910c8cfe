"""`generate`: a policy answers the train tasks, n samples each; every answer is verified.

Resumable: records already in `trajectories/<output>.jsonl` are skipped by (task, sample index), so a
killed run is rerun without losing or duplicating anything. Records go out one flushed line each, each
(task, sample index) once per run. A file written under another config is refused rather than mixed with
new records. With `[ray]` the teacher and the verifier are the cluster's (`cluster/`); this process
still writes every file.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from .. import cluster
from ..config import FINGERPRINT, Recipe
from ..errors import WarmstartError
from ..policies.api import NOT_SENT, finished_rollouts
from ..runs.budget import BudgetGuard, ModelBudget, RequestBounds, crossed_said, stop_said
from ..runs.costs import CostLedger, describe, load_prices, load_terms, money, terms_of
from ..runs.directory import RunDir, Stage
from ..runs.jsonl import JsonlAppender, read_records, write_json_atomic
from ..runs.progress import progress_bar
from ..types import Request, Sampling, Task, Trajectory
from . import estimate
from .common import (
    bill_judge,
    check_disjoint,
    judge_cost,
    judge_policy,
    latest_attempts,
    load_tasks,
    make_environment,
    tasks_read,
)
from .estimate import PILOT_TASKS
from .paid_replies import judge_paid_path, paid, paid_replies_path, unrecorded
from .sampling_plan import SamplingPlan, open_errors

log = logging.getLogger(__name__)


def stage_config(recipe: Recipe) -> tuple[dict, list[Path]]:
    """What decides the answers: the config (not its batching, error tolerance or dollar cap: a rerun with a
    higher cap continues the same job), the teacher and the environment's judge by backend and model (not by
    their URLs: the same server on another port is the same model), and the task file."""
    not_results = {"concurrency", "max_error_rate", "budget_usd", "require_logprobs"}
    config = {
        "generate": recipe.generate.model_dump(exclude=not_results, context=FINGERPRINT),
        "env": recipe.env.model_dump(context=FINGERPRINT),
        "tasks": train_tasks_config(recipe),
        "seed": recipe.run.seed,
    }
    return config, tasks_read(recipe, ("train",))[1]


def train_tasks_config(recipe: Recipe) -> dict:
    """What decides the train tasks: their count, or a task file's content (`common.tasks_read`), not the
    count it makes unused nor how its path is spelt. Either had made generate refuse its own trajectories as
    another config's (review 81). Without a task file, generate's own form as before (the eval split's
    count never counted): its runs keep their fingerprints."""
    if recipe.tasks.train_file:
        return tasks_read(recipe, ("train",))[0]
    return recipe.tasks.model_dump(exclude={"eval", "eval_file"})  # {"train": n, "train_file": None}


def run(recipe: Recipe, pilot_only: bool = False) -> Path:
    """The stage; with `pilot_only` (`warmstart estimate`), its pilot tasks and the projected bill only
    (written to estimates/<output>.json), the stage left undone: the pilot is the job's beginning."""
    cfg, run_dir = recipe.generate, RunDir(recipe)
    env = make_environment(recipe)
    cluster.connect(recipe)  # an unreachable cluster fails here, before the stage writes anything
    out = run_dir.trajectories(cfg.output)
    # Done only with no rollout ended in an error: a rerun asks for exactly those again.
    with (
        sigterm_as_interrupt(),
        run_dir.stage(
            f"generate:{cfg.output}", *stage_config(recipe), [out], lambda entry: not entry.get("errors")
        ) as stage,
    ):
        if stage.done:
            if pilot_only:
                raise WarmstartError(f"{stage.name} is already done: what it cost is in {run_dir.root}/costs.json")
            check_done_logprobs(recipe, stage.name, out)
            return out
        job, tasks = start_job(recipe, run_dir, stage, env, out)
        # The first tasks are the pilot the bill is projected from (stated before the rest is asked).
        pilot, rest = tasks[:PILOT_TASKS], tasks[PILOT_TASKS:]
        earlier = latest_attempts(job.earlier)
        plans = [SamplingPlan(cfg, pilot, earlier), SamplingPlan(cfg, rest, earlier)]
        with job.progress(), billing_if_stopped(job, stage):
            job.ask_all(plans[0])
            if (pilot_only or job.policy.request_tally is not None) and not job.stopped:
                stage.summary["estimate"] = job.estimate(tasks, pilot)
            if pilot_only:
                if stage.summary.get("estimate") is None:
                    raise WarmstartError(no_estimate(stage.name, job, pilot))
                write_json_atomic(run_dir.root / "estimates" / f"{cfg.output}.json", stage.summary["estimate"])
                # Not done (the rest of the tasks are still to ask), but the pilot was paid for: in costs.json.
                stage.summary |= job.costs()
                stage.record_unfinished("pilot")
                return run_dir.root / "estimates" / f"{cfg.output}.json"
            job.ask_all(plans[1])
        finish_job(job, stage, plans)
    return out


def check_done_logprobs(recipe: Recipe, stage: str, out: Path) -> None:
    """A finished stage is not asked again for log-probs asked for now (api.top_logprobs is how they are
    asked, not what the answers are): where its records carry none, say so (an error with
    generate.require_logprobs), rather than hand them on as if they had them."""
    if not recipe.api.top_logprobs:
        return
    answered = [t for t in latest_attempts(read_records(out, Trajectory)) if t.error is None]
    without = sum(not any(t.logprobs or []) for t in answered)
    if not without:
        return
    said = (
        f"{stage}: already done, but {without} of {len(answered)} records carry no log-probs (asked without "
        f"api.top_logprobs, or the teacher gave none); to ask again for them, remove {out} or set generate.output"
    )
    if recipe.generate.require_logprobs:
        raise WarmstartError(said)
    log.warning(said)


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a scheduler's stop, `docker stop`, `kill`, `timeout`) handled as Ctrl-C while the stage runs:
    the rollouts that had finished are written and the spend recorded (`Job.answer`, `billing_if_stopped`).
    Python's default for SIGTERM is to die at once, leaving replies paid for and never written. Where
    SIGINT is ignored (a background job of a shell), SIGTERM keeps its default: it must still end the process.
    Signals reach only the main thread; elsewhere nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_on_sigterm(signum, frame) -> None:
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        return
    signal.raise_signal(signal.SIGINT)  # to whichever handler has SIGINT now: asyncio's, or Python's


@contextmanager
def billing_if_stopped(job: Job, stage: Stage):
    """A job stopped by an error or an interrupt records what it spent: the stage's summary (its manifest
    entry, status "failed") and so costs.json, as a finished job does (`finish_job`)."""
    try:
        yield
    except BaseException:
        job.bill_unwritten()  # replies it paid for and never wrote (a call stopped while it asked again)
        stage.summary |= job.costs()
        raise


def no_estimate(stage: str, job: Job, pilot: list[Task]) -> str:
    """Why `warmstart estimate` has no bill to project: the dollar cap stopped the pilot, or no pilot task
    was answered (its first error)."""
    ids = {t.id for t in pilot}
    if job.stopped and job.guard is not None:
        answered = {t.task_id for t in latest_attempts([*job.earlier, *job.answered]) if t.task_id in ids}
        return (
            f"{stage}: generate.budget_usd = ${job.guard.cap:g} stopped the pilot after {len(answered)} of its "
            f"{len(pilot)} tasks (${job.guard.spent:.4f} spent), so there is no bill to project; what was paid is "
            "kept, and a rerun with a higher budget_usd goes on from there"
        )
    errors = [t.error for t in latest_attempts([*job.earlier, *job.answered]) if t.task_id in ids and t.error]
    why = f" (first error: {errors[0]})" if errors else ""
    return f"{stage}: no pilot task was answered, so there is no bill to project{why}; what was paid is kept"


def start_job(recipe: Recipe, run_dir: RunDir, stage: Stage, env, out: Path) -> tuple[Job, list[Task]]:
    """The teacher, the train tasks and the ledger of what earlier runs of the stage spent, checked."""
    cfg = recipe.generate
    if cfg.budget_usd is not None and recipe.api.batch_discount:
        raise WarmstartError(
            "generate.budget_usd with api.batch_discount = true: the cap would count batch prices, but warmstart "
            "sends every request as it goes, billed at the full price; unset one of them"
        )
    # A bad spec (or a cluster's worker that cannot make the policy) fails before any file is read.
    policy = cluster.make_policy(cfg.teacher, env, "generate.teacher", recipe)
    note = unrequested_logprobs(policy, recipe)
    if note:
        log.info("%s: %s", stage.name, note)
    tasks = load_tasks(recipe, env, "train")  # bad tasks (a plugin's, a dataset's) refused before anything is written
    check_disjoint(tasks, load_tasks(recipe, env, "eval"))
    _claim_output(run_dir, stage, out)
    ledger = CostLedger(load_prices(recipe.api.prices), recipe.api.batch_discount)
    ledger.api = policy.request_tally is not None  # an API teacher's cost is money, even before any reply
    job = Job(policy, env, {t.id: t for t in tasks}, out, ledger, recipe, stage.name)
    for trajectory in job.earlier:  # earlier runs' replies cost money too, failed attempts included
        ledger.add(trajectory, trajectory.verdict is not None and trajectory.verdict.passed)
    job.bill_unwritten()  # and those a killed run paid for and never wrote
    for usage in paid(job.judge_paid_path) if job.judge is not None else []:  # the judge's, every run's
        job.judge_ledger.add_usage(usage, job.judge.backend.model)
    job.guard = budget_guard(policy, [ledger, job.judge_ledger], recipe)
    if job.guard is not None and job.judge is not None:  # the judge's requests spend under the same cap
        job.judge.budget = judge_budget(job.guard, job.judge, ledger)
    if policy.request_tally is not None:
        log.info("%s: %s", stage.name, limits_note(len(tasks), recipe, policy.request_tally.worst_case_s))
    return job, tasks


def finish_job(job: Job, stage: Stage, plans: list[SamplingPlan]) -> None:
    """The stage's summary and log lines; its error where the dollar cap or the error rate stopped it."""
    cfg, ledger = job.cfg, job.ledger
    job.bill_unwritten()  # replies paid for and not written: those whose judging the dollar cap kept from being sent
    cost = job.cost()
    final = latest_attempts([*job.earlier, *job.answered])  # the output file's records, without reading it again
    errors = open_errors(cfg, list(job.by_id.values()), final)
    sampling = plan_summary(plans)
    stage.summary |= {
        "records": len(final),
        "errors": len(errors),  # a rerun asks these again; the stage is done once there are none
        "sampling": sampling,
        **job.costs(),
    }
    if moot := sum(t.error is not None for t in final) - len(errors):
        stage.summary["errors_moot"] = moot  # of tasks their other samples decided: no rerun asks them
    if stage.summary.get("estimate"):
        stage.summary["actual"] = estimate.actual(final, cfg.teacher.name, ledger.prices, ledger.batch)
    log.info("%s; %s", describe(stage.name, cost), describe_sampling(sampling))  # the stage's one closing line
    if "api_cost_judge" in stage.summary:
        log.info("%s", describe(f"{stage.name} (its judge, env.judge)", stage.summary["api_cost_judge"]))
    if job.guard is not None and job.guard.exhausted:
        raise WarmstartError(stop_said(stage.name, job.guard))
    if job.guard is not None and job.guard.spent > job.guard.cap:  # finished, but not within the cap
        log.warning("%s: %s", stage.name, crossed_said(job.guard))
    check_error_rate(final, errors, cfg.max_error_rate, stage.name)


def budget_guard(policy, ledgers: list[CostLedger], recipe: Recipe) -> BudgetGuard | None:
    """The dollar cap on the policy's requests, counting what earlier runs of the stage spent (the ledgers':
    the teacher's and its judge's)."""
    cap = recipe.generate.budget_usd
    if cap is None:
        return None
    if policy.request_tally is None:
        log.warning("generate.budget_usd: %s is not an API teacher; its cost is compute time, not capped", policy.spec)
        return None
    unknown = sorted({model for ledger in ledgers for model in ledger.unknown})
    if unknown:
        raise WarmstartError(
            f"generate.budget_usd: earlier replies were served by models with no price "
            f"({', '.join(unknown)}), so a dollar cap cannot be kept; add them to api.prices"
        )
    spent = sum(ledger.summary()["usd"] for ledger in ledgers)
    ledger = ledgers[0]
    try:
        guard = BudgetGuard(cap, spent, policy.backend.model, ledger.prices, ledger.batch)
    except ValueError as exc:
        raise WarmstartError(f"generate.budget_usd: {exc}; add it to api.prices") from None
    if recipe.ray is not None:  # one actor keeps the cap for every worker's requests together (cluster/budget.py)
        return policy.share_budget(guard)
    policy.budget = guard
    return guard


def judge_budget(guard, judge, ledger: CostLedger) -> ModelBudget:
    """The stage's cap as the LLM judge's requests meet it: the same guard (with [ray], the shared one),
    each request bounded at the judge model's price."""
    try:
        bounds = RequestBounds(judge.backend.model, ledger.prices, ledger.batch)
    except ValueError as exc:
        raise WarmstartError(
            f"generate.budget_usd: the judge (env.judge.policy): {exc}; add it to api.prices"
        ) from None
    return ModelBudget(guard, bounds)


def plan_summary(plans: list[SamplingPlan]) -> dict:
    """The plans' summaries added up (the most samples of a task: the largest)."""
    parts = [p.summary() for p in plans]
    total = {key: sum(part[key] for part in parts) for key in parts[0]}
    return total | {"most_samples_of_a_task": max(part["most_samples_of_a_task"] for part in parts)}


def describe_sampling(summary: dict) -> str:
    return (
        f"{summary['samples']:,} samples of {summary['tasks']:,} tasks (at most {summary['most_samples_of_a_task']} "
        f"of one), {summary['verified_samples']:,} verified, {summary['tasks_verified']:,} tasks with a verified sample"
    )


def limits_note(tasks: int, recipe: Recipe, worst_case_s: float) -> str:
    """What the stage will ask and how long a request may take at worst (its retries and waits included)."""
    api = recipe.api
    return (
        f"{tasks} tasks to answer, at most {api.concurrency} requests in flight; a request gives up after "
        f"at most {worst_case_s:,.0f} s ({api.max_retries} retries of up to api.timeout_s = {api.timeout_s:g} s, "
        f"waits capped at api.max_retry_after_s = {api.max_retry_after_s:g} s"
        + (f", api.deadline_s = {api.deadline_s:g} s" if api.deadline_s else "")
        + "; rate-limit queueing aside)"
    )


def check_error_rate(records: list[Trajectory], errors: list[Trajectory], max_rate: float, stage: str) -> None:
    """A stage whose records ended in an error a rerun asks again (`errors`) more often than `max_rate` fails
    (it is not done: a rerun asks again for exactly those)."""
    if records and len(errors) / len(records) > max_rate:
        raise WarmstartError(
            f"{stage}: {len(errors)} of {len(records)} rollouts ended in an error, more than generate.max_error_rate "
            f"= {max_rate:g} (first: {errors[0].error}); a rerun asks again for exactly those"
        )


class Job:
    """The stage's work: rounds of a sampling plan, each request answered, verified, written and billed."""

    def __init__(self, policy, env, by_id: dict, out: Path, ledger: CostLedger, recipe: Recipe, name: str):
        self.policy, self.env, self.by_id, self.out, self.ledger, self.recipe = policy, env, by_id, out, ledger, recipe
        self.name, self.cfg = name, recipe.generate
        self.sampling = Sampling(self.cfg.temperature, self.cfg.top_p, self.cfg.max_new_tokens)
        self.passed, self.planned, self.stopped, self.logprobs_checked = 0, 0, False, False
        self.answered: list[Trajectory] = []  # this run's records, for the pilot's projection
        self.written: set[tuple[str, int]] = set()  # their (task, sample index): each written once per run
        self.earlier = read_records(out, Trajectory) if out.exists() else []  # every record of earlier runs
        self.guard: BudgetGuard | None = None
        self.terms = load_terms(recipe.api.prices)  # provider -> terms of use, recorded on each trajectory
        self.paid_path = paid_replies_path(out)
        self.unwritten_billed: set[str] = set()  # reply ids of paid replies no record bills, in the ledger
        self.judge = judge_policy(env)  # an API judge's requests are billed on their own line, and capped
        self.judge_ledger = CostLedger(ledger.prices, ledger.batch)
        self.judge_paid_path = judge_paid_path(out)

    def bill_unwritten(self) -> None:
        """Put in the ledger the replies the journal says were paid for that no record bills and it does not
        hold yet (stages/paid_replies.py): an earlier run's, or this run's where it stops before writing them."""
        for usage in unrecorded(self.paid_path, [*self.earlier, *self.answered]):
            if usage.reply_id not in self.unwritten_billed:
                self.unwritten_billed.add(usage.reply_id)
                self.ledger.add_unwritten(usage, self.cfg.teacher.name)

    def cost(self) -> dict:
        """The ledger's summary, with what this process's requests came to."""
        if self.policy.request_tally is not None:
            self.ledger.count_requests(self.policy.request_tally.summary())
        return self.ledger.summary()

    def costs(self) -> dict:
        """The stage summary's money: the teacher's (`api_cost`) and its judge's (`api_cost_judge`), apart."""
        return {"api_cost": self.cost(), **judge_cost(self.judge, self.judge_ledger)}

    @contextmanager
    def progress(self):
        # One Verifier for all rounds: its workers (python's sandboxes) start once and stop with the job.
        with (
            cluster.stopping(self.policy, self.recipe),
            JsonlAppender(self.out) as self.writer,
            self.paid_replies(),
            cluster.make_verifier(self.env, self.recipe) as self.verifier,
            progress_bar(f"generate {self.cfg.output}", 0) as self.advance,
        ):
            yield

    @contextmanager
    def paid_replies(self):
        """Each billed reply of an API teacher noted as it arrives (stages/paid_replies.py). With [ray] the
        replies arrive in the workers and reach the driver with their records, in one piece: not noted."""
        with self.judge_paid():
            if not hasattr(self.policy, "paid"):
                yield
                return
            with JsonlAppender(self.paid_path) as journal:
                self.policy.paid = journal.append
                try:
                    yield
                finally:
                    self.policy.paid = None

    @contextmanager
    def judge_paid(self):
        """Each billed reply of an API judge noted (the judge's own journal: no record bills it) and billed."""
        if self.judge is None:
            yield
            return
        with JsonlAppender(self.judge_paid_path) as journal:
            bill_judge(self.judge, self.judge_ledger, journal.append)
            try:
                yield
            finally:
                self.judge.paid = None

    def ask_all(self, plan: SamplingPlan) -> None:
        """Ask `plan`'s rounds until it has nothing left, or the dollar cap stops the job. The bar's total
        grows round by round: a budget-aware plan does not know its later rounds in advance."""
        while not self.stopped:
            pending = plan.next_round()
            if not pending:
                break
            self.planned += len(pending)
            self.advance(0, total=self.planned)
            for start in range(0, len(pending), self.cfg.concurrency):
                for trajectory in self.answer(pending[start : start + self.cfg.concurrency]):
                    plan.record(trajectory)
                if self.stopped:
                    break

    def answer(self, chunk: list[Request]) -> list[Trajectory]:
        """The policy answers `chunk`; each answer is verified, then appended to the output (one flushed
        line) and entered in the ledger. Rollouts the dollar cap kept from being sent are not written.
        A chunk stopped by an error or an interrupt (Ctrl-C) still writes the rollouts that had finished
        (policies/api.py `finished_rollouts`): they were paid for, and a rerun must find them in the output,
        not answer them from the response cache as if they had cost nothing."""
        try:
            trajectories = self.policy.rollout(chunk, self.sampling, self.recipe.run.seed)
        except BaseException as stop:
            self.keep(finished_rollouts(stop))
            raise
        return self.keep(trajectories)

    def keep(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        """Verify, write and bill a chunk's rollouts (see `answer`)."""
        trajectories = [t for t in trajectories if not is_unsent(t) and t.key not in self.written]
        answered = [t for t in trajectories if t.error is None]
        for trajectory, verdict in zip(
            answered, self.verifier.verify_all([(self.by_id[t.task_id], t) for t in answered])
        ):
            trajectory.verdict = verdict
        # After verifying: the judge's requests spend under the cap too. A rollout whose judging the cap
        # kept from being sent is not written: a rerun judges it (its reply from the cache; the paid journal
        # bills it once).
        self.stopped = self.guard is not None and self.guard.exhausted
        trajectories = [t for t in trajectories if not judge_unsent(t)]
        answered = [t for t in answered if not judge_unsent(t)]
        self.passed += sum(t.verdict.passed for t in answered)
        for trajectory in trajectories:
            if trajectory.provenance.terms is None:
                trajectory.provenance.terms = terms_of(self.terms, trajectory.provenance)
            self.writer.append(trajectory)
            self.written.add(trajectory.key)
            self.ledger.add(trajectory, trajectory.verdict is not None and trajectory.verdict.passed)
        self.answered += trajectories
        self.advance(len(trajectories), note=f"verified {self.passed}")
        self.check_logprobs(answered)  # after the chunk is written: its replies were paid for
        return trajectories

    def check_logprobs(self, answered: list[Trajectory]) -> None:
        """Log-probs asked (api.top_logprobs) and a reply has none: one warning at the first such reply, or
        the stage's error with generate.require_logprobs. Any teacher (the reference one gives none): the
        same rule `check_done_logprobs` applies to a finished stage."""
        if self.logprobs_checked or not self.recipe.api.top_logprobs:
            return
        lacking = next((t for t in answered if t.logprobs is None), None)
        if lacking is None:
            return
        self.logprobs_checked = True
        missing = (
            f"{self.name}: api.top_logprobs = {self.recipe.api.top_logprobs} was asked but {self.cfg.teacher} "
            f"returned no log-probs (first: task {lacking.task_id})"
        )
        if self.cfg.require_logprobs:
            raise WarmstartError(f"{missing} and generate.require_logprobs = true")
        log.warning("%s; SFT will train on the teacher's tokens only", missing)

    def estimate(self, tasks: list[Task], pilot: list[Task]) -> dict | None:
        """The whole stage's bill projected from the pilot's tasks (logged; None without a usable pilot)."""
        records = latest_attempts([*self.earlier, *self.answered])
        figures = estimate.task_costs(pilot, records, list(self.env.tools))
        if not figures:
            return None
        model = self.cfg.teacher.name if self.policy.request_tally is not None else None  # None: a local teacher
        projection = estimate.project(
            figures, tasks, list(self.env.tools), model, self.ledger.prices, self.ledger.batch
        )
        log.info(estimate.describe(self.name, projection))
        if self.judge is not None:
            log.info(
                "%s: the estimate leaves out the LLM judge's requests (env.judge); they have cost %s so far",
                self.name,
                money(self.judge_ledger.usd),
            )
        return projection


def is_unsent(trajectory: Trajectory) -> bool:
    """A rollout the dollar cap stopped before any reply: nothing to keep (a rerun asks it)."""
    return (trajectory.error or "").startswith(NOT_SENT) and not trajectory.usage and not trajectory.rejected_usage


def judge_unsent(trajectory: Trajectory) -> bool:
    """A rollout whose judge request the dollar cap kept from being sent: its verdict lacks the judgement."""
    verdict = trajectory.verdict
    said = [verdict.infra_error, verdict.details.get("judge_error")] if verdict is not None else []
    return any(isinstance(s, str) and NOT_SENT in s for s in said)


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
    if out.exists() and claims.get(out.name, stage.fingerprint) not in stage.accepted:
        raise WarmstartError(
            f"{out}: was written by a generate stage (or an estimate) with another config; "
            "remove it or set generate.output"
        )
    claims[out.name] = stage.fingerprint
    write_json_atomic(run_dir.manifest_path, manifest)
