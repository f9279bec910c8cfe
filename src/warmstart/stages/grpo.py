"""`grpo`: reinforcement learning on the environment's verifier, from the distilled student.

The loop: each step collects groups and updates the policy (`train/grpo.py`, which says what each
GrpoConfig knob does), logs the step's reward, flat-group share and compute, and checkpoints.

Tasks: every train task in order (`task_filter = "all"`), or only those the current policy passes
sometimes (`"learnable"`: the zero-advantage curriculum of `train/task_filter.py`, refreshed every
`task_filter_every` steps; its rollouts are counted and logged apart from training's).

Resume: a rerun continues from the newest complete checkpoint (policy, optimizer, scheduler, RNG,
step, task cursor, the filter's task pool, history, and the starting model's identity); sampling seeds
derive from the step, so the resumed run continues as if it had never stopped. Only checkpoints the
stage's own fingerprint wrote (grpo config, environment, tasks, seed, the starting model's and a local
teacher's weights) are resumed; others are one error (`resume_position`).

Budgets stop a run early: `seconds_budget` (the demo's equal-wall-time cold start) and, with a teacher
(on-policy distillation), `teacher_tokens_budget` once it has scored that many student tokens (the KD
demo's equal-teacher-tokens ablation).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import FINGERPRINT, NOT_RESULTS, GrpoConfig, Recipe
from ..distill.teacher import make_teacher
from ..envs.base import Environment
from ..envs.verification import Verifier
from ..errors import PEER_FAILED, WarmstartError, peer_failed
from ..lm.chat import check_template, render_prompt, stop_token_ids
from ..lm.compiled import compile_decoder
from ..lm.device import resolve_device
from ..lm.generation import sample_ids_pruned
from ..lm.models import check_ids_embedded, embedded_rows, load_config, load_model_and_tokenizer
from ..lm.precision import enable_activation_checkpointing
from ..policies.spec import resolve
from ..runs.checkpoint import check_replaceable, complete_checkpoints, load_state, publish, save
from ..runs.costs import CostLedger, load_prices, summed
from ..runs.directory import RunDir, Stage, model_files
from ..train import distributed, host_memory, lora, memory_plan
from ..train.distributed import SINGLE, World, silent_tracker
from ..train.dropout import disable_dropout, forward_is_repeatable
from ..train.grpo import batch_tensors, check_unseen_update, collect, repeated_tasks, separate_old_pass, update
from ..train.step_checks import StepChecks, check_finite_loss, check_finite_weights, output_vocabulary
from ..train.task_filter import candidates, describe, estimate_pass_rates, filter_seed, refresh_due, select_pool
from ..types import Task
from . import grpo_server
from .common import (
    bill_judge,
    check_output_free,
    judge_cost,
    judge_policy,
    load_tasks,
    make_environment,
    summary_if_stopped,
    tasks_read,
)
from .grpo_record import BudgetProgress, stage_summary, step_scalars, warn_if_nothing_learned

log = logging.getLogger(__name__)


@dataclass
class Learner:
    """What a GRPO run trains and with what: the policy, its frozen reference (kl_weight > 0) and its
    teacher (on-policy distillation), the optimizer and schedule."""

    model: torch.nn.Module
    tokenizer: object
    reference: torch.nn.Module | None
    teacher: object | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    stop_ids: list[int]

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def trainable_params(self) -> int:
        """The parameters an update computes gradients for: all of them, or a LoRA adapter's."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def load_policy(cfg: GrpoConfig, start_from: Path, resume_from: Path | None, device: torch.device):
    """(policy, tokenizer, KL reference or None) on `device`. With LoRA the policy is the starting model
    plus an adapter (the checkpoint's, or a fresh one) and the reference is that model with it switched off."""
    if lora.enabled(cfg.lora):
        model, tokenizer = lora.load_for_training(start_from, resume_from, cfg.lora, "grpo", device)
        reference = lora.AdapterOff(model) if cfg.kl_weight > 0 else None
    else:
        if resume_from is not None:
            lora.check_resumable(resume_from, None, "grpo")
        model, tokenizer = load_model_and_tokenizer(resume_from or start_from, "grpo.init", device)
        reference = None
        if cfg.kl_weight > 0:
            reference = load_model_and_tokenizer(start_from, "grpo.init", device)[0].eval()
    check_template(tokenizer, "grpo.init")  # rollouts are rendered through it
    quiet_policy(model)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model, tokenizer, reference


def quiet_policy(model: torch.nn.Module) -> None:
    """The policy's dropout off, and a forward that is random all the same said (train/dropout.py)."""
    if turned_off := disable_dropout(model):
        log.info("grpo: the policy's dropout is off (%s): GRPO's passes must see one model", ", ".join(turned_off))
    if not forward_is_repeatable(model, model.get_input_embeddings().num_embeddings):
        log.warning(
            "grpo: the policy's forward is random in training mode after its dropout was turned off (a router's "
            "jitter noise?): the update's ratio to its old log-probs, the TIS weights and the mismatch statistics "
            "will carry that noise"
        )


def load_learner(recipe: Recipe, start_from: Path, resume_from: Path | None) -> Learner:
    cfg = recipe.grpo
    torch.manual_seed(recipe.run.seed)  # a fresh LoRA adapter's random init: the same on every run and process
    model, tokenizer, reference = load_policy(cfg, start_from, resume_from, resolve_device(recipe.run.device))
    compile_decoder(model, cfg.compile, "grpo.compile")  # sampling and update; in place: checkpoints keep their keys
    teacher = make_teacher(resolve(cfg.teacher, recipe), "grpo.teacher", recipe, tokenizer) if cfg.teacher else None
    torch.manual_seed(recipe.run.seed)
    # fused: one kernel over all parameters, ~5x faster than the per-tensor loop on CPU (bench/results.md)
    trained = [p for p in model.parameters() if p.requires_grad]  # all of them, or a LoRA adapter's
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    stop_ids = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    return Learner(model, tokenizer, reference, teacher, optimizer, scheduler, stop_ids)


@dataclass(frozen=True)
class Refresh:
    """A refresh of the task filter: its record (train/task_filter.describe) and what its sampling cost."""

    record: dict
    rollouts: int
    sampled_tokens: int
    seconds: float


def check_prompts_embedded(learner: Learner, tasks: list[Task], env: Environment) -> None:
    """Refuse, before the first step, prompts holding a token the policy has no embedding for (tokens added to
    its tokenizer without resize_token_embeddings): an IndexError in the first rollout's forward otherwise.
    Only a tokenizer longer than the embedding can: the prompts are rendered only then."""
    tokenizer, rows = learner.tokenizer, embedded_rows(learner.model)
    if rows is None or len(tokenizer) <= rows:
        return
    tools = list(env.tools)
    largest = max(
        max(tokenizer(render_prompt(tokenizer, task.prompt, tools), add_special_tokens=False)["input_ids"], default=0)
        for task in tasks
    )
    check_ids_embedded(largest, tokenizer, learner.model, "grpo.init")


def init_path(recipe: Recipe) -> Path:
    """The model RL starts from (`grpo.init`: the run's student or base, run:NAME, or a directory)."""
    return Path(resolve(recipe.grpo.init, recipe).name)


def local_teacher(recipe: Recipe) -> Path | None:
    """The directory of `grpo.teacher` where it is a local model; None without one, or for a server."""
    teacher = resolve(recipe.grpo.teacher, recipe) if recipe.grpo.teacher else None
    return Path(teacher.name) if teacher is not None and teacher.is_local_model else None


def stage_inputs(recipe: Recipe, start_from: Path) -> list[Path]:
    """The weights whose content decides the run: the starting model's and a local teacher's."""
    teacher = local_teacher(recipe)
    return [*model_files(start_from), *(model_files(teacher) if teacher is not None else [])]


def run(recipe: Recipe, env: Environment | None = None) -> Path:
    """`env` replaces the recipe's environment (a custom one from Python)."""
    cfg, run_dir = recipe.grpo, RunDir(recipe)
    start_from = init_path(recipe)
    out = run_dir.model(cfg.output)
    reads = {"grpo.init": start_from, "grpo.teacher": local_teacher(recipe)}
    tasks_config, task_files = tasks_read(recipe, ("train",))  # a task file by its content
    check_output_free(run_dir, f"grpo:{cfg.output}", "grpo.output", out, reads)  # before anything is written
    config = {
        "grpo": cfg.model_dump(exclude=NOT_RESULTS, context=FINGERPRINT),  # NOT_RESULTS: speed, memory, bookkeeping
        "env": recipe.env.model_dump(context=FINGERPRINT),
        "tasks": tasks_config,
        "seed": recipe.run.seed,
    }
    memory_plan.check(
        memory_plan.announce(memory_plan.plan_for(recipe, "grpo"))
    )  # the device too: before anything is written
    if lora.enabled(cfg.lora):  # before anything is loaded or written
        lora.check_targets(load_config(start_from, "grpo.init"), cfg.lora, "grpo.lora")
    device = resolve_device(recipe.run.device)
    if device.type == "cpu":
        host_memory.keep_freed_memory()
    world = distributed.join(device)
    distributed.check_divisible(world, cfg.tasks_per_step * cfg.group_size, "grpo", "tasks_per_step x group_size")
    stage = run_dir.stage(f"grpo:{cfg.output}", config, [*stage_inputs(recipe, start_from), *task_files], [out])
    try:
        run_stage(recipe, world, stage, env, start_from, out)
    except BaseException as exc:
        distributed.abandon(world)  # the others' collectives fail at once, and torchrun ends them
        if world.main and peer_failed(exc):  # the others stop quietly (cli.py); the one that failed first says why
            raise WarmstartError(PEER_FAILED) from None
        raise
    distributed.finish(world)  # after the stage's bookkeeping: the manifest is written when every process leaves
    return out


def stopped_summary(history, cfg, start_from, world, done, judge: JudgeBill | None) -> dict | None:
    """What a run stopped part-way spent: its steps' and its judge's (None where it spent neither)."""
    steps = stage_summary(history, cfg, start_from, world, done) if len(history) > done else None
    paid = judge.cost() if judge is not None else {}
    return {**(steps or {}), **paid} if steps or paid else None


def run_stage(recipe: Recipe, world: World, stage, env: Environment | None, start_from: Path, out: Path) -> None:
    """The stage's work, in every process; only the main one writes (train/distributed.py)."""
    cfg = recipe.grpo
    with distributed.stage_or_follower(world, stage) as stage:
        if world.agree(stage.done):
            return
        env = env or make_environment(recipe)
        judge = JudgeBill(recipe, env)  # an API judge as the reward: what it cost (each process judges its share)
        history, resumed = train(recipe, env, start_from, stage, world, judge)
        judged = judge.cost_of_all(world)  # a collective: every process's requests
        if world.main:
            warn_if_nothing_learned(history, cfg)
            # Before publishing, as sft's: a run stopped while it replaces models/<output> is recorded as failed.
            stage.summary = {**stage_summary(history, cfg, start_from, world, resumed), **judged}
            last = complete_checkpoints(RunDir(recipe).checkpoints(cfg.output))[-1]
            models = RunDir(recipe).root / "models"
            if lora.enabled(cfg.lora):
                check_replaceable(out, models)
                lora.publish(last, start_from, out)
            else:
                publish(last, out, models)


class JudgeBill:
    """An API judge's requests (`[env.judge]`, as GRPO's reward or beside it), billed as they are paid for: the
    stage's `api_cost_judge` (costs.json's `api_judge`). With several processes (torchrun) each judges its
    share and bills it here; a finished run adds them up (`cost_of_all`); a run stopped part-way records the
    main process's (the others may be gone: no collective can be asked of them)."""

    def __init__(self, recipe: Recipe, env: Environment):
        self.policy = judge_policy(env)
        self.ledger = CostLedger(load_prices(recipe.api.prices), recipe.api.batch_discount)
        if self.policy is not None:
            bill_judge(self.policy, self.ledger)

    def cost(self) -> dict:
        """This process's requests."""
        return judge_cost(self.policy, self.ledger)

    def cost_of_all(self, world: World) -> dict:
        """Every process's requests, added up (a collective: every process calls it)."""
        costs = world.gather_shares([self.cost()])
        return {"api_cost_judge": summed([c["api_cost_judge"] for c in costs])} if costs[0] else {}


def train(
    recipe: Recipe,
    env: Environment,
    start_from: Path,
    stage: Stage,
    world: World = SINGLE,
    judge: JudgeBill | None = None,
) -> tuple[list[dict], int]:
    """GRPO steps until `grpo.steps` or a budget runs out, checkpointing as it goes (the main process);
    the steps' history. Every process samples and trains its share of each step (train/rollouts.py)."""
    cfg, ckpt_root = recipe.grpo, RunDir(recipe).checkpoints(recipe.grpo.output)
    tasks = load_tasks(recipe, env, "train")
    # The main process's view of the checkpoints (the run directory must be shared by all).
    resume = world.agree(complete_checkpoints(ckpt_root) if world.main else [])
    learner = load_learner(recipe, start_from, resume[-1] if resume else None)
    check_prompts_embedded(learner, tasks, env)
    fingerprint, accepted = world.agree((stage.fingerprint, stage.accepted) if world.main else None)
    done, cursor, history, pool_ids = resume_position(learner, resume, accepted) if resume else (0, 0, [], None)
    pool = tasks if pool_ids is None else tasks_by_id(tasks, pool_ids)
    if world.main and (repeats := repeated_tasks(len(tasks), cfg)):
        log.warning("grpo:%s: %s", cfg.output, repeats)
    unseen = None  # (step, batch) of the last update no check has seen since (train/grpo.check_unseen_update)
    # One Verifier for the whole run: its workers and their sandboxes start once, not once per step, and
    # stop with the loop, however it ends.
    record = (lambda spent: setattr(stage, "stopped", spent)) if world.main else None
    with (
        # A run stopped part-way (Ctrl-C, a divergence, a server gone) records what it spent (runs/directory.py).
        summary_if_stopped(
            record, lambda: stopped_summary(history, cfg, start_from, world, done, judge if world.main else None)
        ),
        Verifier(env, recipe.env.verify_timeout) as verifier,
        server_rollouts(recipe, learner, env, lambda: pool, verifier, world, done) as served,
        BudgetProgress(cfg, history, done, world.main) as progress,
        RunDir(recipe).tracker(f"grpo:{cfg.output}") if world.main else silent_tracker() as tracker,
    ):
        for step in range(done + 1, cfg.steps + 1):
            filtered = None
            if cfg.task_filter == "learnable" and refresh_due(step, cfg.task_filter_every):
                pool, filtered = refresh_pool(learner, env, tasks, step, recipe, verifier, world)
                cursor = 0  # a new pool is drawn from its start
            entry, cursor, trained_on = grpo_step(
                learner, env, pool, cursor, step, recipe, verifier, filtered, world, served
            )
            unseen = (step, trained_on) if trained_on else unseen
            history.append(entry)
            tracker.log(step, step_scalars(entry))
            # Seconds differ between processes: the main one's decide when a budget is spent.
            out_of_budget = world.agree(progress.advance(history, entry))
            checkpoint_due = step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_budget
            if checkpoint_due:  # what is saved, then published; in every process: the checks add up over them
                if unseen is not None:  # no later step may measure it: flat steps take no update
                    updated_at, batch = unseen  # an error names the step that took the update, not a flat one after it
                    vocab = output_vocabulary(learner.model)
                    checks = StepChecks("grpo", updated_at, "grpo.lr", vocab, after_update=True)
                    check_unseen_update(learner.model, batch, cfg, checks, world)
                    unseen = None
                check_finite_weights(learner.model, step, "grpo", "grpo.lr", world.total)
            if world.main and checkpoint_due:
                position = {
                    "cursor": cursor,
                    # The pool a refresh chose depends on the policy then: kept, not recomputed on resume.
                    "pool": [t.id for t in pool] if cfg.task_filter == "learnable" else None,
                    "history": history,
                    "fingerprint": fingerprint,
                    "init": str(start_from),
                }
                save(
                    ckpt_root,
                    step,
                    learner.model,
                    learner.tokenizer,
                    learner.optimizer,
                    learner.scheduler,
                    position,
                    cfg.keep_checkpoints,
                    fingerprint=fingerprint,
                )
            if step % host_memory.RELEASE_EVERY == 0:
                host_memory.release_freed_memory()  # what the steps kept for reuse (train/host_memory.py)
            if out_of_budget:
                break
    return history, done


@contextlib.contextmanager
def server_rollouts(recipe: Recipe, learner: Learner, env, current_pool, verifier: Verifier, world: World, done: int):
    """With `grpo.rollout_server`: the server's rollouts for the run (stages/grpo_server.py), closed with
    it; else None (the policy samples in this process)."""
    if recipe.grpo.rollout_server is None:
        yield None
        return

    def collect_at(step: int, cursor: int):
        return collect_groups(learner, env, current_pool(), cursor, step, recipe, verifier, world, served.server.sample)

    served = grpo_server.connect(recipe, learner.model, world, done, collect_at)
    try:
        yield served
    finally:
        served.close()


def collect_groups(learner: Learner, env, tasks, cursor: int, step: int, recipe: Recipe, verifier, world, sampler):
    """The step's groups (train/grpo.collect), its seed derived from the step."""
    return collect(
        learner.model,
        learner.tokenizer,
        env,
        tasks,
        cursor,
        recipe.grpo,
        learner.stop_ids,
        recipe.run.seed + 1000 * step,
        recipe.env.max_turns,
        verifier,
        world,
        sampler,
    )


def tasks_by_id(tasks: list[Task], ids: list[str]) -> list[Task]:
    known = {t.id: t for t in tasks}
    missing = [i for i in ids if i not in known]
    if missing:
        raise WarmstartError(f"grpo: the checkpoint's task pool names task {missing[0]}, which is not a train task")
    return [known[i] for i in ids]


def refresh_pool(
    learner: Learner, env, tasks: list[Task], step: int, recipe: Recipe, verifier: Verifier, world: World = SINGLE
) -> tuple[list[Task], Refresh]:
    """The learnable tasks among the step's candidates, estimated with the current policy; (the pool,
    the refresh's record and cost)."""
    cfg, started = recipe.grpo, time.time()
    learner.model.eval()
    rates = estimate_pass_rates(
        learner.model,
        learner.tokenizer,
        env,
        candidates(tasks, step, cfg),
        cfg,
        learner.stop_ids,
        filter_seed(recipe.run.seed, step),
        recipe.env.max_turns,
        verifier,
        world,
    )
    pool, topped_up = select_pool(rates, cfg.tasks_per_step)
    record = describe(rates, pool, topped_up)
    if topped_up:
        log.warning(
            "grpo step %d: only %d of %d candidate tasks are learnable (passed sometimes in %d samples; "
            "passes per task %s); the pool is topped up with %d others nearest a 0.5 pass rate",
            step,
            record["learnable"],
            record["candidates"],
            cfg.task_filter_samples,
            record["pass_counts"],
            topped_up,
        )
    return pool, Refresh(record, rates.rollouts, rates.sampled_tokens, time.time() - started)


def resume_position(
    learner: Learner, resume: list[Path], accepted: set[str]
) -> tuple[int, int, list[dict], list | None]:
    """Optimizer, schedule and RNG from the newest checkpoint, written under one of the fingerprints `accepted`
    (`Stage.accepted`); (its step, task cursor, history, and the filter's task ids: None where the run trains
    on every task)."""
    state = load_state(resume[-1])
    if state["position"]["fingerprint"] not in accepted:
        raise WarmstartError(
            f"{resume[-1].parent}: checkpoints of another grpo config or starting model; remove them or set grpo.output"
        )
    learner.optimizer.load_state_dict(state["optimizer"])
    learner.scheduler.load_state_dict(state["scheduler"])
    log.info("grpo: resuming from %s", resume[-1])
    position = state["position"]
    return state["step"], position["cursor"], position["history"], position.get("pool")


def grpo_step(
    learner: Learner,
    env,
    tasks,
    cursor: int,
    step: int,
    recipe: Recipe,
    verifier: Verifier,
    filtered: Refresh | None = None,
    world: World = SINGLE,
    served: grpo_server.ServerRollouts | None = None,
) -> tuple[dict, int, dict | None]:
    """Collect groups, update on them; the step's history entry, the next task cursor and the batch the
    update was taken on (None without one: every group flat). `filtered`: the task filter's refresh taken
    before this step (`refresh_pool`), whose cost the step counts. `served`: the groups come from a
    rollout server, which gets the new weights after the update."""
    cfg, started = recipe.grpo, time.time()
    learner.model.eval()
    if served is None:
        batch, version = (
            collect_groups(learner, env, tasks, cursor, step, recipe, verifier, world, sample_ids_pruned),
            None,
        )
    else:
        batch, version = served.take(step, cursor, cfg.steps)
    groups, cursor, stats = batch
    sampled_at = time.time()
    learner.model.train()
    loss, trained_tokens, update_stats, batch = None, 0, {}, None
    if groups:  # every group flat: nothing to learn from this step
        batch = batch_tensors(groups, cfg, learner.tokenizer.pad_token_id, next(learner.model.parameters()).device)
        checks = StepChecks("grpo", step, "grpo.lr", output_vocabulary(learner.model))  # train/step_checks.py
        loss, update_stats = update(
            learner.model, learner.reference, learner.optimizer, batch, cfg, learner.teacher, world=world, checks=checks
        )
        learner.scheduler.step()
        check_finite_loss(loss, step, "grpo", "grpo.lr")
        trained_tokens = int(batch["input_ids"].numel())
    trained_at = time.time()
    if served is not None:
        served.after_update(step)  # one step off: first waits for the next batch, sampled meanwhile
    cost = filtered or Refresh({}, 0, 0, 0.0)
    entry = {
        "step": step,
        "mean_reward": stats["reward_sum"] / max(1, stats["samples"]),
        "zero_variance_fraction": stats["zero_variance"] / max(1, stats["groups"]),
        "infra_errors": stats["infra_errors"],
        "groups_used": len(groups),
        "loss": loss,
        # The filter's sampling is compute this step spent: in its FLOPs and seconds, and counted apart.
        "flops_estimate": flops_estimate(learner, cfg, stats["tokens"] + cost.sampled_tokens, trained_tokens),
        "sampled_tokens": stats["tokens"],
        "rollouts": stats["groups"] * cfg.group_size,
        "filter_rollouts": cost.rollouts,
        "filter_sampled_tokens": cost.sampled_tokens,
        "filter_seconds": cost.seconds,
        "seconds": time.time() - started + cost.seconds,
        # Where the step's wall time went: waiting for its batch, training, and with a server the rest
        # (one step off: waiting for the next batch to finish; then publishing the new weights).
        "sample_seconds": sampled_at - started,
        "update_seconds": trained_at - sampled_at,
        **({"publish_seconds": time.time() - trained_at} if served is not None else {}),
        **({"policy_version": version} if served is not None else {}),
        **update_stats,
        **({"task_filter": filtered.record} if filtered else {}),
    }
    return entry, cursor, batch


def flops_estimate(learner: Learner, cfg: GrpoConfig, sampled_tokens: int, trained_tokens: int) -> int:
    """2 x params per sampled token; per trained token 2 for the old log-probs where they take a pass of
    their own (and 2 more for a reference model), and per update 4 (forward, input gradients) plus 2 per
    trainable parameter (weight gradients: all of them, or a LoRA adapter's, as sft counts). A local
    teacher's scoring pass adds 2 x its parameters per trained token."""
    params, trainable = learner.params, learner.trainable_params
    forward_passes = 2 * separate_old_pass(cfg, learner.teacher) + 2 * (learner.reference is not None)
    updates = cfg.updates_per_batch * (4 * params + 2 * trainable)
    teacher_params = learner.teacher.params if learner.teacher else 0
    per_trained_token = params * forward_passes + updates + 2 * teacher_params
    return params * 2 * sampled_tokens + per_trained_token * trained_tokens
