"""`sft`: supervised fine-tuning of the student on curated teacher trajectories.

Loss: cross-entropy on assistant tokens only (the loss mask of `chat.py`), summed over the whole
optimizer step and divided by its number of target tokens, so gradient accumulation gives the same
update as one big batch. Examples are packed into rows (`data.py`). AdamW, linear warmup then cosine
decay to `min_lr_ratio`, gradient clipping. Checkpoints are atomic (`checkpoint.py`); a rerun resumes
from the newest complete one and continues exactly as if it had never stopped.

Distillation beyond one-hot tokens (`kd_signal.py` picks the signal, `sft.distill`): with a local
teacher that shares the student's tokenizer, KL to its full next-token distribution computed on the fly
(dense KD, `kd_step.py`); with trajectories that carry the teacher's top-k log-probs, KL on that
support plus a tail bucket (sparse KD, `kd_losses.py`); else plain SFT. Mixed with cross-entropy by
`kd_weight`; the choice and its reason are logged and recorded in the manifest.

Speed: each micro-batch is only as wide as its longest packed row (padding beyond it is never
computed), and the output head and cross-entropy run only at positions that predict a scored
(assistant) token, as in KD, not at every position of the row. `sft.precision = "bf16"` runs the
forward and backward under CPU bfloat16 autocast (weights, optimizer state and the loss stay float32),
with linear layers' backward in the layouts CPU kernels run fast (bf16_cpu: 4x faster steps here);
it pays only on CPUs with native bf16 matmul (AVX512-BF16 / AMX): without them bf16 matmul is emulated
and ~5x slower than fp32 (see bench/results/utilisation.md).

Left out on purpose: distributed training (accelerate arrives with scale-out), LoRA (peft) for large
students.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from ..bf16_cpu import bf16_autocast
from ..chat import check_template, template_messages
from ..checkpoint import complete_checkpoints, load_state, publish, save
from ..config import Recipe, SftConfig
from ..data import Example, collate, epoch_order, pack, row_width, tokenize
from ..envs import make_env
from ..errors import WarmstartError
from ..jsonl import read_records
from ..kd_data import token_index
from ..kd_signal import Signal, choose, local_teacher_path
from ..kd_step import KdSetup, KdTotals, check_plain_head, kd_backward, logit_transforms, scored_hidden
from ..models import gguf_to_pretrained, load_model_and_tokenizer, resolve_model_path
from ..progress import progress_bar
from ..runs import RunDir, fingerprint
from ..tinymodel import save_tiny_student
from ..types import Trajectory

log = logging.getLogger(__name__)
BASE_INFO = "warmstart_base.json"


def base_model_path(recipe: Recipe) -> Path:
    """The student before training: the run's tiny model or converted GGUF, or the user's model path."""
    if recipe.sft.student == "tiny":
        return RunDir(recipe).model("base")
    path = resolve_model_path(recipe.sft.student, "sft.student")
    converted = RunDir(recipe).model("base")
    return converted if path.suffix == ".gguf" and converted.exists() else path


def prepare_user_base(recipe: Recipe) -> Path:
    """The user's student; a GGUF file is converted once to models/base (a plain float checkpoint)."""
    path = resolve_model_path(recipe.sft.student, "sft.student")
    if path.suffix != ".gguf":
        return path
    converted = RunDir(recipe).model("base")
    return converted if converted.exists() else gguf_to_pretrained(path, converted)


def prepare_tiny_base(recipe: Recipe, trajectories: list[Trajectory]) -> Path:
    """Build the tiny student once per run (ablations share it); refuse a base built differently."""
    path, tiny = RunDir(recipe).model("base"), recipe.sft.tiny.model_dump()
    info = {"tiny": tiny, "seed": recipe.run.seed}
    if (path / BASE_INFO).exists():
        if json.loads((path / BASE_INFO).read_text()) != info:
            raise WarmstartError(f"{path}: was built with another sft.tiny config or seed; remove it to rebuild")
        return path
    # Role names are in the corpus so that chat-template headers become a few tokens, not one per byte.
    texts = ["\n".join(corpus_line(m) for m in template_messages(t.messages)) for t in trajectories]
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tiny_student(texts, tmp, recipe.sft.tiny, recipe.run.seed)
    (tmp / BASE_INFO).write_text(json.dumps(info))
    os.replace(tmp, path)
    return path


def corpus_line(message: dict) -> str:
    calls = "".join(f"<tool_call>\n{json.dumps(c['function'])}\n</tool_call>" for c in message.get("tool_calls", []))
    return f"{message['role']}\n{message['content']}{calls}"


def lr_factor(step: int, cfg: SftConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def masked_ce_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of next-token cross-entropy over target tokens (loss mask 1).

    Logits are computed only at the N positions that predict a target ([N, V], not [B, T, V]); a model
    whose config transforms its logits (soft-capping, scaling) gets the full forward pass instead."""
    positions = batch["loss_mask"][:, 1:] > 0
    targets = batch["input_ids"][:, 1:][positions]
    if logit_transforms(model):
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[:, :-1][positions]
    else:
        logits = model.get_output_embeddings()(scored_hidden(model, batch, positions))
    return F.cross_entropy(logits.float(), targets, reduction="sum")


class RowStream:
    """Packed rows in a seeded order, epoch after epoch; its position is saved in checkpoints."""

    def __init__(self, examples: list[Example], cfg: SftConfig, seed: int, position: dict | None = None):
        self.examples, self.cfg, self.seed = examples, cfg, seed
        self.epoch, self.row = (position["epoch"], position["row"]) if position else (0, 0)
        self.rows = pack(examples, epoch_order(len(examples), seed, self.epoch), cfg.seq_len)

    def next_rows(self, n: int) -> list[list[int]]:
        out = []
        while len(out) < n:
            if self.row == len(self.rows):
                self.epoch, self.row = self.epoch + 1, 0
                self.rows = pack(self.examples, epoch_order(len(self.examples), self.seed, self.epoch), self.cfg.seq_len)
            out.append(self.rows[self.row])
            self.row += 1
        return out

    @property
    def position(self) -> dict:
        return {"epoch": self.epoch, "row": self.row}


def run(recipe: Recipe) -> Path:
    started, cfg, run_dir = time.time(), recipe.sft, RunDir(recipe)
    data_path, out = run_dir.curated(cfg.data), run_dir.model(cfg.output)
    stage = f"sft:{cfg.output}"
    if not data_path.exists():
        raise WarmstartError(f"sft.data: {data_path} does not exist (run curate first)")
    teacher = local_teacher_path(recipe) if cfg.kd_weight > 0 and cfg.distill in ("auto", "logits") else None
    teacher_weights = [teacher / "model.safetensors"] if teacher and (teacher / "model.safetensors").exists() else []
    print_ = fingerprint({"sft": cfg.model_dump(), "seed": recipe.run.seed}, [data_path, *teacher_weights])
    if run_dir.is_done(stage, print_, [out]):
        log.info("%s: already done, nothing to do", stage)
        return out
    trajectories = read_records(data_path, Trajectory)
    if not trajectories:
        raise WarmstartError(f"{data_path}: has no trajectories to train on")
    base = prepare_tiny_base(recipe, trajectories) if cfg.student == "tiny" else prepare_user_base(recipe)
    stats = train(recipe, base, trajectories)
    publish(complete_checkpoints(run_dir.checkpoints(cfg.output))[-1], out)
    run_dir.mark_done(stage, print_, [out], started, stats)
    return out


def train(recipe: Recipe, base: Path, trajectories: list[Trajectory]) -> dict:
    cfg, seed = recipe.sft, recipe.run.seed
    ckpt_root = RunDir(recipe).checkpoints(cfg.output)
    resume = complete_checkpoints(ckpt_root)
    model, tokenizer = load_model_and_tokenizer(resume[-1] if resume else base, "sft.student")
    check_template(tokenizer, "sft.student")
    wants_topk = cfg.kd_weight > 0 and cfg.distill in ("auto", "topk") and any(t.logprobs for t in trajectories)
    index = token_index(tokenizer) if wants_topk else None
    examples, too_long, alignment = tokenize(tokenizer, trajectories, cfg.seq_len, list(make_env(recipe.env).tools), index)
    if not examples:
        raise WarmstartError(f"sft: every example is longer than sft.seq_len={cfg.seq_len} tokens")
    signal = choose(recipe, tokenizer, alignment if wants_topk else None)
    log.info("sft:%s: training signal %s: %s", cfg.output, signal.kind, signal.reason)
    if signal.kind != "topk":
        for example in examples:
            example.teacher = None
    kd = kd_setup(signal, cfg, model)
    torch.manual_seed(seed)
    optimizer, scheduler = make_optimizer(model, cfg)
    step, position, earlier = 0, None, {"tokens": 0, "seconds": 0.0}
    if resume:
        state = load_state(resume[-1])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, position = state["step"], state["position"]
        earlier = position["totals"]
        log.info("sft:%s resuming from %s", cfg.output, resume[-1])
    stream = RowStream(examples, cfg, seed, position)
    model.train()
    tokens, losses, t0, kd_totals = 0, [], time.time(), KdTotals()
    with progress_bar(f"sft {cfg.output}", cfg.steps) as advance:
        advance(step)
        while step < cfg.steps:
            loss_value, step_tokens = train_step(model, optimizer, stream, cfg, tokenizer.pad_token_id, kd, kd_totals)
            scheduler.step()
            step += 1
            tokens += step_tokens
            losses.append(loss_value)
            advance(1, note=f"loss {loss_value:.4f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                totals = {"tokens": earlier["tokens"] + tokens, "seconds": earlier["seconds"] + time.time() - t0}
                save(ckpt_root, step, model, tokenizer, optimizer, scheduler, {**stream.position, "totals": totals}, cfg.keep_checkpoints)
    seconds = time.time() - t0
    teacher_params = sum(p.numel() for p in kd.teacher.parameters()) if kd and kd.teacher is not None else 0
    return {
        "distill": {**signal.record(), "kd_weight": cfg.kd_weight, **alignment_record(alignment, signal)},
        # Mean KL to the teacher over the positions that had its distribution, this run.
        "mean_kd": kd_totals.kd_sum / kd_totals.kd_positions if kd_totals.kd_positions else None,
        "examples": len(examples),
        "dropped_too_long": too_long,
        "first_loss": losses[0] if losses else None,  # of this run (a resumed run starts mid-way)
        "final_loss": losses[-1] if losses else None,
        "tokens_this_run": tokens,
        # Over the whole training, resumed parts included: the compute the student cost.
        "train_seconds": earlier["seconds"] + seconds,
        # Training compute estimate: 6 x parameters x tokens (forward + backward; attention left out).
        # Dense KD adds the teacher's forward pass: 2 x its parameters per token.
        "flops_estimate": (6 * sum(p.numel() for p in model.parameters()) + 2 * teacher_params) * (earlier["tokens"] + tokens),
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
    }


def make_optimizer(model, cfg: SftConfig):
    """AdamW (betas 0.9, 0.95) and the warmup + cosine schedule of `lr_factor`."""
    # fused: one kernel over all parameters instead of a Python loop of per-tensor ops — ~5x faster
    # optimizer steps on CPU (0.1 vs 0.6 s for SmolLM2-135M), a quarter of a step there.
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay, fused=True)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


def autocast(cfg: SftConfig):
    """bf16 autocast on CPU for `precision = "bf16"` (linear backward in fast layouts: bf16_cpu), else nothing."""
    return bf16_autocast() if cfg.precision == "bf16" else contextlib.nullcontext()


def kd_setup(signal: Signal, cfg: SftConfig, model) -> KdSetup | None:
    """None for plain SFT; else the KD loss's settings, with the local teacher loaded for dense KD."""
    if signal.kind == "tokens":
        return None
    check_plain_head(model, "sft.student")
    teacher = None
    if signal.kind == "logits":
        teacher = load_model_and_tokenizer(signal.teacher_path, "sft.teacher")[0].eval().requires_grad_(False)
        check_plain_head(teacher, "sft.teacher")
    return KdSetup(signal.kind, cfg.kd_weight, cfg.kd_chunk, teacher)


def alignment_record(alignment, signal: Signal) -> dict:
    if signal.kind != "topk":
        return {}
    return {"turns_with_logprobs": alignment.turns, "turns_aligned": alignment.aligned}


def train_step(model, optimizer, stream: RowStream, cfg: SftConfig, pad_id: int, kd: KdSetup | None = None, kd_totals: KdTotals | None = None) -> tuple[float, int]:
    row_groups = [stream.next_rows(cfg.rows_per_micro_batch) for _ in range(cfg.grad_accum)]
    micro_batches = [collate(rows, stream.examples, row_width(rows, stream.examples), pad_id) for rows in row_groups]
    targets = sum(float(b["loss_mask"][:, 1:].sum()) for b in micro_batches)
    total = 0.0
    for batch in micro_batches:
        if kd is not None:  # backward inside, chunk by chunk
            with autocast(cfg):
                step_totals = kd_backward(model, batch, kd, 1.0 / max(targets, 1.0))
            total += step_totals.loss
            kd_totals.kd_sum += step_totals.kd_sum
            kd_totals.kd_positions += step_totals.kd_positions
            continue
        with autocast(cfg):
            loss = masked_ce_sum(model, batch) / max(targets, 1.0)
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    real_tokens = sum(len(stream.examples[i].input_ids) for rows in row_groups for row in rows for i in row)
    return total, real_tokens

