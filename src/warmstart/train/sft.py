"""One SFT / logit-distillation optimizer step, and what it needs: the packed-row stream, the
optimizer and its schedule, the masked cross-entropy.

Loss: cross-entropy on assistant tokens only (the loss mask of `lm/chat.py`), summed over the whole
optimizer step and divided by its number of target tokens, so gradient accumulation gives the same
update as one big batch. With a KD setup (`distill/step.py`) each micro-batch mixes that cross-entropy
with KL to the teacher's distribution, chunk by chunk. AdamW, linear warmup then cosine decay to
`min_lr_ratio`, gradient clipping.

Speed: each micro-batch is only as wide as its longest packed row (padding beyond it is never
computed), and the output head and cross-entropy run only at positions that predict a scored
(assistant) token, not at every position of the row. `precision = "bf16"` runs the forward and backward
under CPU bfloat16 autocast with linear layers' backward in the layouts CPU kernels run fast
(`lm/precision.py`); it pays only on CPUs with native bf16 matmul (AVX512-BF16 / AMX).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from ..config import SftConfig
from ..distill.step import KdSetup, KdTotals, kd_backward, scored_hidden
from ..lm.device import autocast as device_autocast
from ..lm.device import wants_bf16
from ..lm.linear_ce import head_ce_sum
from ..lm.scoring import logit_transforms
from ..lm.tied_embedding import HeadGradient, embed, tied_embedding
from ..lm.weight_casts import WeightCasts
from .clipping import clipped_step, gradient_norm
from .data import Example, collate, epoch_order, pack, row_width
from .distributed import SINGLE, World, sum_gradients
from .sharding import is_sharded
from .step_checks import StepChecks, random_state_kept


def lr_factor(step: int, cfg: SftConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def masked_ce_sum(model, batch: dict[str, torch.Tensor], casts: WeightCasts | None = None) -> torch.Tensor:
    """Sum of next-token cross-entropy over target tokens (loss mask 1).

    The head runs only at the N positions that predict a target, chunk by chunk with the loss and its
    gradient (lm/linear_ce.py: no [N, V] fp32 logits; `casts`: the bf16 context's kept weight casts, for
    the head's); a model whose config transforms its logits (soft-capping, scaling) gets the full
    forward pass instead."""
    positions = batch["loss_mask"][:, 1:] > 0
    targets = batch["input_ids"][:, 1:][positions]
    if not logit_transforms(model):
        head, embedding = model.get_output_embeddings(), tied_embedding(model)
        if embedding is None or not torch.is_grad_enabled():
            return head_ce_sum(head, scored_hidden(model, batch, positions), targets, casts)
        slot = HeadGradient()  # one gradient tensor for the tied weight (lm/tied_embedding.py)
        hidden = scored_hidden(model, batch, positions, embed(embedding, batch["input_ids"], slot))
        return head_ce_sum(head, hidden, targets, casts, slot)
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    return F.cross_entropy(logits[:, :-1][positions].float(), targets, reduction="sum")


class RowStream:
    """Packed rows in a seeded order, epoch after epoch; its position is saved in checkpoints."""

    def __init__(
        self, examples: list[Example], cfg: SftConfig, seed: int, position: dict | None = None, packed: bool = True
    ):
        self.examples, self.cfg, self.seed, self.packed = examples, cfg, seed, packed
        self.epoch, self.row = (position["epoch"], position["row"]) if position else (0, 0)
        self.rows = self.rows_of(self.epoch)

    def rows_of(self, epoch: int) -> list[list[int]]:
        """The epoch's rows: examples packed in its seeded order, or one a row (train/packing.py)."""
        order = epoch_order(len(self.examples), self.seed, epoch)
        return pack(self.examples, order, self.cfg.seq_len) if self.packed else [[index] for index in order]

    def next_rows(self, n: int) -> list[list[int]]:
        out = []
        while len(out) < n:
            if self.row == len(self.rows):
                self.epoch, self.row = self.epoch + 1, 0
                self.rows = self.rows_of(self.epoch)
            out.append(self.rows[self.row])
            self.row += 1
        return out

    @property
    def position(self) -> dict:
        return {"epoch": self.epoch, "row": self.row}

    def ahead(self) -> RowStream:
        """A copy at this position, to read the rows this stream would give next without moving it. Shallow:
        it shares this epoch's packed rows (packing an epoch again costs seconds on a large dataset) and, at
        an epoch's end, packs the next one for itself."""
        return copy.copy(self)


def make_optimizer(model, cfg: SftConfig):
    """AdamW (betas 0.9, 0.95) and the warmup + cosine schedule of `lr_factor`."""
    # fused: one kernel over all parameters instead of a Python loop of per-tensor ops — ~5x faster
    # optimizer steps on CPU (0.1 vs 0.6 s for SmolLM2-135M), a quarter of a step there.
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],  # all of them, or a LoRA adapter's
        lr=cfg.lr,
        betas=(0.9, 0.95),
        weight_decay=cfg.weight_decay,
        fused=True,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def autocast(cfg: SftConfig, model, device: torch.device):
    """bf16 autocast for `precision = "bf16"` (or "auto" on a GPU with bf16: lm/device.py), else nothing.
    On the CPU the weights' bf16 copies are kept between steps, except for a sharded model (whose layers'
    whole weights FSDP frees after use)."""
    return device_autocast(cfg.precision, device, keep_casts=not is_sharded(model))


def train_step(
    model,
    optimizer,
    stream: RowStream,
    cfg: SftConfig,
    pad_id: int,
    kd: KdSetup | None = None,
    kd_totals: KdTotals | None = None,
    world: World = SINGLE,
    checks: StepChecks | None = None,
) -> tuple[float, int]:
    """One optimizer step over `grad_accum` micro-batches of the stream's next rows: (loss, real tokens).
    With several processes (train/distributed.py) each takes its share of the step's rows and the
    gradients are summed across them before the step: the same step as one process would take. `checks`:
    the step's divergence checks (train/step_checks.py), of its loss before the update is taken and of the
    clip's gradient norm after (a non-finite norm has written NaN into the weights)."""
    row_groups = step_rows(stream, cfg)
    device = next(model.parameters()).device
    loss, targets = accumulate_gradients(model, row_groups, stream.examples, cfg, pad_id, kd, kd_totals, world)
    if checks is not None:
        checks.cross_entropy(loss)
    # Under bf16 autocast a clipping factor goes into the fused AdamW's step (train/clipping.py).
    norm = clipped_step(optimizer, model.parameters(), cfg.grad_clip, fold=wants_bf16(cfg.precision, device))
    if checks is not None:
        checks.gradient_norm(norm, lambda: targets > 0)
    optimizer.zero_grad(set_to_none=True)
    real_tokens = sum(len(stream.examples[i].input_ids) for rows in row_groups for row in rows for i in row)
    return loss, real_tokens


def step_rows(stream: RowStream, cfg: SftConfig) -> list[list[list[int]]]:
    """The stream's next rows, in a step's `grad_accum` micro-batches of `rows_per_micro_batch` (every process's)."""
    return [stream.next_rows(cfg.rows_per_micro_batch) for _ in range(cfg.grad_accum)]


def accumulate_gradients(
    model,
    row_groups: list[list[list[int]]],
    examples: list[Example],
    cfg: SftConfig,
    pad_id: int,
    kd: KdSetup | None = None,
    kd_totals: KdTotals | None = None,
    world: World = SINGLE,
) -> tuple[float, float]:
    """The loss of a step's rows, its gradient added to the parameters' and summed over the processes (each
    computes its share of the rows): (the loss, its target tokens), both over every process."""
    mine = row_groups if world.size == 1 else in_groups(world.share(sum(row_groups, [])), cfg.rows_per_micro_batch)
    device = next(model.parameters()).device
    micro_batches = [to_device(collate(rows, examples, row_width(rows, examples), pad_id), device) for rows in mine]
    targets = world.total(sum(float(b["loss_mask"][:, 1:].sum()) for b in micro_batches))
    kd_before = (kd_totals.kd_sum, kd_totals.kd_positions) if kd_totals is not None else None
    total = 0.0
    for batch in micro_batches:
        if kd is not None:  # backward inside, chunk by chunk
            with autocast(cfg, model, device):
                step_totals = kd_backward(model, batch, kd, 1.0 / max(targets, 1.0))
            total += step_totals.loss
            kd_totals.kd_sum += step_totals.kd_sum
            kd_totals.kd_positions += step_totals.kd_positions
            continue
        with autocast(cfg, model, device) as casts:
            # A sharded model (train/sharding.py) runs the loss as a forward of its own, where FSDP gathers
            # the weights and reduces the gradients (summed over the processes, as sum_gradients does).
            ce_sum = model.scored_ce_sum(batch) if is_sharded(model) else masked_ce_sum(model, batch, casts)
            loss = ce_sum / max(targets, 1.0)
        loss.backward()
        total += loss.item()
    if not is_sharded(model):
        sum_gradients(model, world)
    if kd_before is not None and world.size > 1:  # the step's KD totals over every process
        kd_totals.kd_sum = kd_before[0] + world.total(kd_totals.kd_sum - kd_before[0])
        kd_totals.kd_positions = kd_before[1] + int(world.total(kd_totals.kd_positions - kd_before[1]))
    return world.total(total), targets


def check_unseen_update(
    model,
    stream: RowStream,
    cfg: SftConfig,
    pad_id: int,
    checks: StepChecks,
    kd: KdSetup | None = None,
    world: World = SINGLE,
) -> None:
    """The weights after a step's update, which no step's loss has seen yet, checked before a checkpoint saves
    them (and the last one before it is published) as the next step would check them: its loss and gradient
    on the rows it would take. No update is taken, the gradient is dropped, and the stream and the random
    state (dropout's draws; a checkpoint keeps it) are left as they were."""
    with random_state_kept(model):
        loss, targets = accumulate_gradients(
            model, step_rows(stream.ahead(), cfg), stream.examples, cfg, pad_id, kd, KdTotals() if kd else None, world
        )
    norm = gradient_norm(model.parameters())
    model.zero_grad(set_to_none=True)
    checks.cross_entropy(loss)
    checks.gradient_norm(norm, lambda: targets > 0)


def repeated_rows(stream: RowStream, cfg: SftConfig) -> str | None:
    """Where an epoch packs into fewer rows than a step takes, every step repeats rows: a sentence saying
    so (to be logged once), else None. Not refused: the update is well defined (a row taken twice in a step
    weighs twice in it, and over the run every row is taken as often as the others, epoch after epoch), and
    a smoke test on a handful of examples should not need its batch settings changed."""
    batch, rows = cfg.rows_per_micro_batch * cfg.grad_accum, len(stream.rows)
    if rows >= batch:
        return None
    return (
        f"{len(stream.examples)} examples pack into {rows} rows of sft.seq_len = {cfg.seq_len} tokens, fewer than "
        f"the {batch} rows a step takes (sft.rows_per_micro_batch x sft.grad_accum): every step repeats rows "
        f"(a step spans {batch / rows:.1f} epochs)"
    )


def in_groups(rows: list, size: int) -> list[list]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]
