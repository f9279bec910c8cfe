"""`sft`: fine-tuning of the student on curated teacher trajectories (the step itself: `train/sft.py`).

The run's student is built (the tiny model, trained tokenizer included) or converted (a .gguf file, again
when the file changes) once into models/base; training resumes from the newest complete checkpoint (`runs/checkpoint.py`) and
continues exactly as if it had never stopped; the last checkpoint is published as models/<output>. Only a
checkpoint this stage's fingerprint wrote (the same sft config, seed and curated data) is resumed; one of
other data or settings is refused with one error (`checkpoint.check_written_by` says why).

Distillation beyond one-hot tokens (`distill/signal_choice.py` picks the signal, `sft.distill`): with a
local teacher that shares the student's tokenizer, KL to its full next-token distribution computed on
the fly (dense KD); with trajectories that carry the teacher's top-k log-probs, KL on that support plus
a tail bucket (sparse KD); else plain SFT. Mixed with cross-entropy by `kd_weight`; the choice and its
reason are logged and recorded in the manifest.

LoRA (`[sft.lora]`, r > 0; train/lora.py): an adapter is trained instead of the weights; checkpoints
hold the adapter, and models/<output> is the base with it merged in, the adapter beside it.
`sft.gradient_checkpointing` recomputes activations in the backward pass.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import FINGERPRINT, NOT_RESULTS, Recipe, SftConfig
from ..distill.signal_choice import Signal, choose, local_teacher_path
from ..distill.step import KdSetup, KdTotals, check_plain_head
from ..distill.topk import Alignment, foreign_id_teachers, records_ids, token_index
from ..envs import make_env
from ..errors import PEER_FAILED, WarmstartError, peer_failed
from ..lm.chat import check_template
from ..lm.compiled import compile_decoder
from ..lm.device import resolve_device, warn_if_emulated_bf16
from ..lm.models import (
    check_ids_embedded,
    embedded_rows,
    gguf_to_pretrained,
    learned_position_limit,
    load_config,
    load_model_and_tokenizer,
    vocabulary_mismatch,
)
from ..lm.paths import resolve_model_path
from ..lm.precision import enable_activation_checkpointing
from ..lm.scoring import logit_transforms
from ..lm.tinymodel import save_tiny_student, tiny_llama_config, tokenizer_corpus
from ..runs.checkpoint import (
    check_replaceable,
    check_written_by,
    complete_checkpoints,
    load_state,
    publish,
    save,
    written_whole,
)
from ..runs.directory import RunDir, failed_last, file_digest, model_files
from ..runs.jsonl import read_records
from ..runs.progress import progress_bar
from ..train import distributed, host_memory, lora, memory_plan, sharding
from ..train.data import BEYOND_POSITIONS, NO_TARGET, TOO_LONG, Example, check_logprobs, tokenize
from ..train.distributed import SINGLE, World, silent_bar, silent_tracker
from ..train.packing import keeps_examples_apart
from ..train.sft import RowStream, check_unseen_update, make_optimizer, masked_ce_sum, repeated_rows, train_step
from ..train.step_checks import StepChecks, check_finite_weights, output_vocabulary
from ..types import Trajectory
from .common import check_output_free, summary_if_stopped

log = logging.getLogger(__name__)
BASE_INFO = "warmstart_base.json"


def prepare_user_base(recipe: Recipe) -> Path:
    """The user's student; a GGUF file is converted to models/base (a plain float checkpoint) once per
    content: the conversion records the file's digest, and a file replaced since is converted again (the
    stage's fingerprint has its content too, so that a changed file also retrains)."""
    path = resolve_model_path(recipe.sft.student, "sft.student")
    if path.suffix != ".gguf":
        return path
    converted, info = RunDir(recipe).model("base"), {"gguf": str(path), "digest": file_digest(path)}
    if converted.exists() and read_base_info(converted) == info:
        return converted
    shutil.rmtree(converted, ignore_errors=True)  # a conversion of another file, or of unknown origin
    gguf_to_pretrained(path, converted)
    (converted / BASE_INFO).write_text(json.dumps(info))
    return converted


def read_base_info(base: Path) -> dict | None:
    """What models/base records it was built or converted from; None where it records nothing (a conversion
    by an earlier warmstart: converted again)."""
    try:
        return json.loads((base / BASE_INFO).read_text())
    except (OSError, ValueError):
        return None


def student_files(cfg: SftConfig) -> list[Path]:
    """The files of the user's student, for the stage's fingerprint: another model at the same path (or a
    replaced .gguf) is another stage, not one already done. The tiny student is decided by the config."""
    return [] if cfg.student == "tiny" else model_files(resolve_model_path(cfg.student, "sft.student"))


def student_config(cfg: SftConfig):
    """The student's architecture without its weights."""
    return tiny_llama_config(cfg.tiny) if cfg.student == "tiny" else load_config(cfg.student, "sft.student")


def prepare_tiny_base(recipe: Recipe, trajectories: list[Trajectory]) -> Path:
    """Build the tiny student once per run (ablations share it); refuse a base built differently."""
    path, tiny = RunDir(recipe).model("base"), recipe.sft.tiny.model_dump()
    info = {"tiny": tiny, "seed": recipe.run.seed}
    if (path / BASE_INFO).exists():
        if json.loads((path / BASE_INFO).read_text()) != info:
            raise WarmstartError(f"{path}: was built with another sft.tiny config or seed; remove it to rebuild")
        return path
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with written_whole(tmp):
        save_tiny_student(tokenizer_corpus([t.messages for t in trajectories]), tmp, recipe.sft.tiny, recipe.run.seed)
        (tmp / BASE_INFO).write_text(json.dumps(info))
    os.replace(tmp, path)
    return path


def check_last_curate(run_dir: RunDir, data: str, data_path: Path) -> None:
    """Refuse curated data whose last curate run failed: the file is an earlier run's (curate keeps it when a
    later run keeps nothing), made under another config, data the current recipe may call contaminated."""
    if error := failed_last(run_dir.manifest(), f"curate:{data}"):
        raise WarmstartError(
            f"sft.data: {data_path} is an earlier curate run's: the last one failed ({error}); "
            "rerun curate, or set sft.data to other data"
        )


def run(recipe: Recipe) -> Path:
    cfg, run_dir = recipe.sft, RunDir(recipe)
    data_path, out = run_dir.curated(cfg.data), run_dir.model(cfg.output)
    if not data_path.exists():
        raise WarmstartError(f"sft.data: {data_path} does not exist (run curate first)")
    check_last_curate(run_dir, cfg.data, data_path)
    teacher = local_teacher_path(recipe) if cfg.kd_weight > 0 and cfg.distill in ("auto", "logits") else None
    check_output_free(run_dir, f"sft:{cfg.output}", "sft.output", out, {"sft.teacher": teacher})  # before writing
    teacher_weights = model_files(teacher) if teacher else []
    config = {
        "sft": cfg.model_dump(exclude=NOT_RESULTS, context=FINGERPRINT),
        "seed": recipe.run.seed,
    }  # see config.NOT_RESULTS
    memory_plan.check(
        memory_plan.announce(memory_plan.plan_for(recipe, "sft"))
    )  # the device too: before anything is written
    if lora.enabled(cfg.lora):  # before anything is built or written
        lora.check_targets(student_config(cfg), cfg.lora, "sft.lora")
    if cfg.sharding == "fsdp":  # likewise
        sharding.check_wrappable(student_config(cfg))
    device = resolve_device(recipe.run.device)
    warn_if_emulated_bf16(cfg.precision, device, "sft.precision")
    if device.type == "cpu":
        host_memory.keep_freed_memory()
    world = distributed.join(device)
    distributed.check_divisible(
        world, cfg.rows_per_micro_batch * cfg.grad_accum, "sft", "rows_per_micro_batch x grad_accum"
    )
    stage = run_dir.stage(f"sft:{cfg.output}", config, [data_path, *teacher_weights, *student_files(cfg)], [out])
    try:
        run_stage(recipe, world, stage, data_path, out, {"config": config, "inputs": stage.input_digests})
    except BaseException as exc:
        distributed.abandon(world)  # the others' collectives fail at once, and torchrun ends them
        if world.main and peer_failed(exc):  # the others stop quietly (cli.py); the one that failed first says why
            raise WarmstartError(PEER_FAILED) from None
        raise
    distributed.finish(world)  # after the stage's bookkeeping: the manifest is written when every process leaves
    return out


def run_stage(recipe: Recipe, world: World, stage, data_path: Path, out: Path, fingerprinted: dict) -> None:
    """The stage's work, in every process; only the main one writes (train/distributed.py). `fingerprinted`:
    what the stage's fingerprint is made of, kept in each checkpoint (`checkpoint.check_written_by`)."""
    cfg, run_dir, fingerprint, accepted = recipe.sft, RunDir(recipe), stage.fingerprint, stage.accepted
    with distributed.stage_or_follower(world, stage) as stage:
        if world.agree(stage.done):
            return
        trajectories = read_records(data_path, Trajectory)
        if not trajectories:
            raise WarmstartError(f"{data_path}: has no trajectories to train on")
        base = world.agree(prepare_base(recipe, trajectories) if world.main else None)  # built once, by the main one

        def described(spent: dict) -> dict:
            return {**spent, "data": cfg.data, "init": str(base), "processes": world.size}

        def stopped(spent: dict) -> None:  # part-way (Ctrl-C, a divergence): what it spent is recorded
            stage.stopped = described(spent)

        summary = train(
            recipe, base, trajectories, fingerprint, world, stopped if world.main else None, fingerprinted, accepted
        )
        if world.main:
            stage.summary = described(summary)
            last = complete_checkpoints(run_dir.checkpoints(cfg.output))[-1]
            models = run_dir.root / "models"
            if lora.enabled(cfg.lora):
                check_replaceable(out, models)
                lora.publish(last, base, out)
            else:
                publish(last, out, models)


def prepare_base(recipe: Recipe, trajectories: list[Trajectory]) -> Path:
    return prepare_tiny_base(recipe, trajectories) if recipe.sft.student == "tiny" else prepare_user_base(recipe)


@dataclass
class Setup:
    """What an SFT run trains, on what data, with which teacher signal."""

    model: torch.nn.Module
    tokenizer: object
    examples: list[Example]
    dropped: Counter  # examples dropped, per reason (train/data.py: longer than a row, nothing to learn)
    alignment: Alignment  # how the teacher's recorded top-k lined up with the student's tokens
    signal: Signal
    kd: KdSetup | None
    packed: bool = True  # several examples a row; False: one, for a model that lets them see each other


@dataclass
class RunTotals:
    """What this run (since its start or resume) has done."""

    tokens: int = 0
    losses: list[float] = field(default_factory=list)
    kd: KdTotals = field(default_factory=KdTotals)
    started: float = field(default_factory=time.time)

    @property
    def seconds(self) -> float:
        return time.time() - self.started


def load_student(cfg: SftConfig, base: Path, checkpoint: Path | None, device: torch.device):
    """(model, tokenizer) to train on `device`: the newest checkpoint's weights, or with LoRA the base plus
    the checkpoint's adapter (a fresh one to start)."""
    if lora.enabled(cfg.lora):
        model, tokenizer = lora.load_for_training(base, checkpoint, cfg.lora, "sft", device)
    else:
        if checkpoint is not None:
            lora.check_resumable(checkpoint, None, "sft")
        model, tokenizer = load_model_and_tokenizer(checkpoint or base, "sft.student", device)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model, tokenizer


def prepare(recipe: Recipe, base: Path, checkpoint: Path | None, trajectories: list[Trajectory]) -> Setup:
    """The student (from `base` or `checkpoint`), the tokenized examples, and the richest teacher signal
    they carry."""
    cfg = recipe.sft
    device = resolve_device(recipe.run.device)
    torch.manual_seed(recipe.run.seed)  # a fresh LoRA adapter's random init: the same on every run and process
    model, tokenizer = load_student(cfg, base, checkpoint, device)
    check_template(tokenizer, "sft.student")
    wants_topk = cfg.kd_weight > 0 and cfg.distill in ("auto", "topk") and any(t.logprobs for t in trajectories)
    if wants_topk:
        check_logprobs(trajectories)
    index = token_index(tokenizer, embedded_rows(model)) if wants_topk else None
    usable, foreign = without_foreign_ids(trajectories, tokenizer) if wants_topk else (trajectories, None)
    tools = list(make_env(recipe.env).tools)
    positions = learned_position_limit(model)
    examples, dropped, alignment = tokenize(tokenizer, usable, cfg.seq_len, tools, index, positions)
    if examples:
        check_ids_embedded(max(max(e.input_ids) for e in examples), tokenizer, model, "sft.student")
    if foreign:
        alignment.foreign_ids, alignment.foreign_ids_reason = foreign
        log.warning("sft:%s: %s; its %d turns of log-probs are not used", cfg.output, foreign[1], foreign[0])
    if not examples:
        raise WarmstartError(
            f"sft: no example to train on of {len(trajectories)} ({said(dropped, cfg.seq_len, positions)})"
        )
    if dropped:
        log.warning(
            "sft:%s: %d of %d examples left out: %s",
            cfg.output,
            dropped.total(),
            len(trajectories),
            said(dropped, cfg.seq_len, positions),
        )
    signal = choose(recipe, tokenizer, alignment if wants_topk else None, logit_transforms(model))
    log.info("sft:%s: training signal %s: %s", cfg.output, signal.kind, signal.reason)
    if signal.kind != "topk":
        for example in examples:
            example.teacher = None
    kd = kd_setup(signal, cfg, model, device)
    packed = packable(cfg, model, kd.teacher if kd else None)
    return Setup(model, tokenizer, examples, dropped, alignment, signal, kd, packed)


def packable(cfg: SftConfig, model, teacher) -> bool:
    """Whether the student (and a dense-KD teacher, which scores the same rows) keeps packed examples apart
    (train/packing.py); said where not: its rows then hold one example each."""
    leaking = [
        type(m).__name__
        for m in (model, teacher)
        if m is not None and not keeps_examples_apart(m, m.get_input_embeddings().num_embeddings)
    ]
    if leaking:
        log.warning(
            "sft:%s: %s lets packed examples see each other (its attention or state crosses a row's restarted "
            "positions): one example per row, the rest padding",
            cfg.output,
            " and ".join(leaking),
        )
    return not leaking


def without_foreign_ids(trajectories: list[Trajectory], tokenizer) -> tuple[list[Trajectory], tuple[int, str] | None]:
    """The trajectories without the log-probs a local teacher of another vocabulary recorded as token ids (they
    would name other tokens in the student's), and how many turns those were and why; None where there were none."""
    foreign = foreign_id_teachers(trajectories, lambda path: vocabulary_mismatch(path, tokenizer))
    if not foreign:
        return trajectories, None
    dropped = [t for t in trajectories if t.provenance.model in foreign and records_ids(t)]
    model, why = next(iter(foreign.items()))
    turns = sum(len(t.logprobs or []) for t in dropped)
    without = {id(t) for t in dropped}
    usable = [t.model_copy(update={"logprobs": None}) if id(t) in without else t for t in trajectories]
    return usable, (turns, f"the token ids {model} recorded are not the student's ({why})")


def said(dropped: Counter, seq_len: int, positions: int | None = None) -> str:
    """Examples dropped, per reason, in words: `seq_len` names the row it was measured against, `positions`
    the student's learned position table."""
    reasons = {
        TOO_LONG: f"{TOO_LONG} (sft.seq_len = {seq_len} tokens)",
        BEYOND_POSITIONS: f"{BEYOND_POSITIONS} ({positions} positions)",
        NO_TARGET: NO_TARGET,
    }
    return ", ".join(f"{count} {reasons[reason]}" for reason, count in dropped.items())


def train(
    recipe: Recipe,
    base: Path,
    trajectories: list[Trajectory],
    fingerprint: str,
    world: World = SINGLE,
    stopped: Callable[[dict], None] | None = None,
    fingerprinted: dict | None = None,
    accepted: set[str] | None = None,
) -> dict:
    """`sft.steps` optimizer steps from `base` (or the newest checkpoint, written under `fingerprint`, the
    stage's), checkpointing as it goes (the main process; every process trains its share of each step:
    train/distributed.py); the run's summary. A run stopped part-way by an exception (Ctrl-C's included)
    after a step hands `stopped` the summary of what it did: its seconds and FLOPs were spent. `fingerprinted`:
    what `fingerprint` is made of, so that a refused resume names what changed. `accepted`: the fingerprints a
    checkpoint to resume may carry (`Stage.accepted`; `fingerprint` alone where not given)."""
    cfg = recipe.sft
    ckpt_root = RunDir(recipe).checkpoints(cfg.output)
    accepted = accepted or {fingerprint}
    newest = checkpoint_to_resume(cfg, ckpt_root, accepted, fingerprinted) if world.main else []
    resume = world.agree(newest)  # the main process's view (the run directory must be shared by all)
    s = prepare(recipe, base, resume[-1] if resume else None, trajectories)
    shard_if_asked(s, cfg, world)
    compile_decoder(s.model, cfg.compile, "sft.compile")  # in place: checkpoints keep their keys
    torch.manual_seed(recipe.run.seed)
    optimizer, scheduler = make_optimizer(s.model, cfg)
    step, position = resume_state(resume[-1], s.model, optimizer, scheduler, cfg, world) if resume else (0, None)
    earlier = position["totals"] if position else {"tokens": 0, "seconds": 0.0}
    stream = RowStream(s.examples, cfg, recipe.run.seed, position, packed=s.packed)
    if repeats := repeated_rows(stream, cfg):
        log.warning("sft:%s: %s", cfg.output, repeats)
    vocabulary = output_vocabulary(s.model)
    s.model.train()
    run = RunTotals()
    with (
        summary_if_stopped(stopped, lambda: training_summary(s, cfg, run, earlier) if run.losses else None),
        progress_bar(f"sft {cfg.output}", cfg.steps) if world.main else silent_bar() as advance,
        RunDir(recipe).tracker(f"sft:{cfg.output}") if world.main else silent_tracker() as tracker,
    ):
        advance(step)
        while step < cfg.steps:
            started, kd_before = time.time(), (run.kd.kd_sum, run.kd.kd_positions)
            lr = scheduler.get_last_lr()[0]
            checks = StepChecks("sft", step + 1, "sft.lr", vocabulary)  # its loss, its gradient (train/step_checks.py)
            loss, tokens = train_step(
                s.model, optimizer, stream, cfg, s.tokenizer.pad_token_id, s.kd, run.kd, world, checks
            )
            scheduler.step()
            step += 1
            run.tokens += tokens
            run.losses.append(loss)
            advance(1, note=f"loss {loss:.4f}")
            kd_positions = run.kd.kd_positions - kd_before[1]
            tracker.log(
                step,
                {
                    "loss": loss,
                    "lr": lr,
                    "tokens_per_s": tokens / max(time.time() - started, 1e-9),
                    "kl": (run.kd.kd_sum - kd_before[0]) / kd_positions if kd_positions else None,
                },
            )
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                # The update the checkpoint holds, which no step's loss has seen yet: checked before it is saved
                # (a diverged update saved had been what a rerun resumed from, to stop again at once) and
                # published. One more forward and backward per checkpoint.
                checks = StepChecks("sft", step, "sft.lr", vocabulary, after_update=True)
                check_unseen_update(s.model, stream, cfg, s.tokenizer.pad_token_id, checks, s.kd, world)
                check_finite_weights(s.model, step, "sft", "sft.lr", world.total)  # what is saved, then published
                # A sharded model's whole state is gathered by every process, to the main one that writes it.
                sharded = sharding.is_sharded(s.model)
                states = sharding.full_states(s.model, optimizer) if sharded else None
                # Every process's RNG (its dropout masks drew from it apart from the others'): each resumes its own.
                rank_rng = world.gather_shares([torch.get_rng_state()]) if world.size > 1 else None
                if world.main:
                    totals = {"tokens": earlier["tokens"] + run.tokens, "seconds": earlier["seconds"] + run.seconds}
                    position = {**stream.position, "totals": totals, "sharded": sharded, "rank_rng": rank_rng}
                    save(
                        ckpt_root,
                        step,
                        s.model,
                        s.tokenizer,
                        optimizer,
                        scheduler,
                        position,
                        cfg.keep_checkpoints,
                        states,
                        fingerprint=fingerprint,
                        fingerprinted=fingerprinted,
                    )
            if step % host_memory.RELEASE_EVERY == 0:
                host_memory.release_freed_memory()  # what the steps kept for reuse (train/host_memory.py)
    return training_summary(s, cfg, run, earlier)


def checkpoint_to_resume(
    cfg: SftConfig, root: Path, accepted: set[str], fingerprinted: dict | None = None
) -> list[Path]:
    """The newest complete checkpoint (a list of it, or empty), checked to be this run's to resume: of
    the same kind (whole weights or an adapter of these LoRA settings) and written under one of `accepted`;
    else one error. Without the check a changed recipe or curated data would resume the old run's last
    checkpoint, train no step, and publish the old model under the new settings."""
    newest = complete_checkpoints(root)[-1:]
    for checkpoint in newest:
        lora.check_resumable(checkpoint, cfg.lora, "sft")  # first: it names the setting that changed
        check_written_by(checkpoint, accepted, "sft.output", fingerprinted)
    return newest


def shard_if_asked(s: Setup, cfg: SftConfig, world: World) -> None:
    """`sft.sharding = "fsdp"`: the student split over the processes (train/sharding.py)."""
    if cfg.sharding != "fsdp":
        return
    if world.size == 1:
        log.info("sft:%s: sharding = 'fsdp' in one process: nothing to shard over, the model stays whole", cfg.output)
        return
    sharding.check_shardable(cfg, world, uses_kd=s.kd is not None)
    sharding.shard(s.model, masked_ce_sum)


def resume_state(
    checkpoint: Path, model, optimizer, scheduler, cfg: SftConfig, world: World = SINGLE
) -> tuple[int, dict]:
    """Optimizer, schedule and RNG from a checkpoint; (its step, its data position). Each process takes its
    own RNG state where the checkpoint holds one per process of this many (the main process's had been set
    in every process: with dropout, a resumed run of several processes ended on other weights); resumed
    with another number of processes, every one takes the main process's, as one process resumes."""
    state = load_state(checkpoint)
    rank_rng = state["position"].get("rank_rng")
    if rank_rng and len(rank_rng) == world.size:
        torch.set_rng_state(rank_rng[world.rank])
    # Sharded training saves the optimizer's state by parameter name: either resumes the other.
    sharding.load_optimizer(model, optimizer, state["optimizer"], state["position"].get("sharded", False))
    scheduler.load_state_dict(state["scheduler"])
    log.info("sft:%s resuming from %s", cfg.output, checkpoint)
    return state["step"], state["position"]


def training_summary(s: Setup, cfg: SftConfig, run: RunTotals, earlier: dict) -> dict:
    seconds = run.seconds
    teacher_params = sum(p.numel() for p in s.kd.teacher.parameters()) if s.kd and s.kd.teacher is not None else 0
    # Training compute estimate per token (attention left out): forward 2 x parameters, backward 2 x
    # parameters for the activations' gradients and 2 x the trained ones for theirs (6 x parameters
    # without LoRA). Dense KD adds the teacher's forward pass: 2 x its parameters per token.
    flops_per_token = 4 * parameters(s.model) + 2 * parameters(s.model, trainable=True) + 2 * teacher_params
    return {
        "distill": {**s.signal.record(), "kd_weight": cfg.kd_weight, **alignment_record(s.alignment, s.signal)},
        # Mean KL to the teacher over the positions that had its distribution, this run.
        "mean_kd": run.kd.kd_sum / run.kd.kd_positions if run.kd.kd_positions else None,
        "examples": len(s.examples),
        "dropped_too_long": s.dropped[TOO_LONG],
        "dropped_no_assistant_turn": s.dropped[NO_TARGET],
        "first_loss": run.losses[0] if run.losses else None,  # of this run (a resumed run starts mid-way)
        "final_loss": run.losses[-1] if run.losses else None,
        "tokens_this_run": run.tokens,
        # Over the whole training, resumed parts included: the compute the student cost.
        "train_seconds": earlier["seconds"] + seconds,
        "flops_estimate": flops_per_token * (earlier["tokens"] + run.tokens),
        # This run's own part of them: what a resumed run that failed or stopped spent (the report's failed runs).
        "this_run": {"train_seconds": seconds, "flops_estimate": flops_per_token * run.tokens},
        "trainable_parameters": parameters(s.model, trainable=True),
        "tokens_per_second": round(run.tokens / seconds, 1) if seconds > 0 else None,
        # This process's peak host memory (a resumed run's own), beside the plan `warmstart plan` prints.
        "peak_rss_mb": memory_plan.peak_rss_mb(),
    }


def parameters(model, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def kd_setup(signal: Signal, cfg: SftConfig, model, device: torch.device) -> KdSetup | None:
    """None for plain SFT; else the KD loss's settings, with the local teacher loaded for dense KD."""
    if signal.kind == "tokens":
        return None
    check_plain_head(model, "sft.student")
    teacher = None
    if signal.kind == "logits":
        teacher = load_model_and_tokenizer(signal.teacher_path, "sft.teacher", device)[0].eval().requires_grad_(False)
        check_plain_head(teacher, "sft.teacher")
    return KdSetup(signal.kind, cfg.kd_weight, cfg.kd_chunk, teacher)


def alignment_record(alignment, signal: Signal) -> dict:
    if signal.kind != "topk":
        return {}
    return {"turns_with_logprobs": alignment.turns, "turns_aligned": alignment.aligned}
