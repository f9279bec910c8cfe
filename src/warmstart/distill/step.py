"""One micro-batch of logit distillation: CE mixed with KL to the teacher, in bounded memory.

Only the scored positions (loss mask 1) are turned into logits, `chunk` positions at a time, for the
student and (dense KD) the teacher; the student's logits are built from hidden states detached at the
output head, so each chunk's graph is freed after its backward, and the trunk gets one backward of the
accumulated hidden-state gradient at the end. Peak logits memory is chunk x vocabulary instead of
sequence x vocabulary, for both models (a 150k-token vocabulary at 4 x 2048 positions would be 5 GB
of float32 logits per model).

The logits are the output head applied to the last hidden state, which is what causal LMs compute
unless their config scales or soft-caps the logits; such models are refused with a clear error rather
than distilled on the wrong distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import WarmstartError
from ..lm.scoring import logit_transforms
from .losses import dense_kl, mixed_token_loss, sparse_kl


@dataclass
class KdSetup:
    kind: str  # "logits" (dense, from `teacher`) or "topk" (sparse, from the batch's kd_* tensors)
    weight: float
    chunk: int
    teacher: torch.nn.Module | None = None


@dataclass
class KdTotals:
    loss: float = 0.0
    kd_sum: float = 0.0  # KL summed over the positions that had a teacher distribution
    kd_positions: int = 0


def check_plain_head(model, key: str) -> None:
    transforms = logit_transforms(model)
    if transforms:
        raise WarmstartError(
            f"{key}: the model's config transforms its logits ({transforms[0]}), which chunked KD does not reproduce"
        )


def scored_hidden(
    model, batch: dict[str, torch.Tensor], positions: torch.Tensor, embeds: torch.Tensor | None = None
) -> torch.Tensor:
    """Last hidden states at the positions that predict a scored token: [N, H]. `embeds`: the input
    embeddings of the batch's ids, computed by the caller (lm/tied_embedding.py)."""
    inputs = {"input_ids": batch["input_ids"]} if embeds is None else {"inputs_embeds": embeds}
    out = model.get_decoder()(**inputs, position_ids=batch["position_ids"], use_cache=False)
    return out.last_hidden_state[:, :-1][positions]


def kd_backward(model, batch: dict[str, torch.Tensor], setup: KdSetup, scale: float) -> KdTotals:
    """Backward of scale x sum over scored tokens of the mixed loss; returns the summed values."""
    positions = batch["loss_mask"][:, 1:] > 0
    targets = batch["input_ids"][:, 1:][positions]
    hidden = scored_hidden(model, batch, positions)
    leaf = hidden.detach().requires_grad_()
    head = model.get_output_embeddings()
    if setup.kind == "logits":
        with torch.no_grad():
            teacher_hidden = scored_hidden(setup.teacher, batch, positions)
        teacher_head = setup.teacher.get_output_embeddings()
    else:
        kd_ids, kd_logp = batch["kd_ids"][:, 1:][positions], batch["kd_logp"][:, 1:][positions]
        has_teacher = batch["kd_mask"][:, 1:][positions]
    totals = KdTotals()
    for start in range(0, len(targets), setup.chunk):
        part = slice(start, start + setup.chunk)
        logits = head(leaf[part]).float()
        if setup.kind == "logits":
            with torch.no_grad():
                teacher_logits = teacher_head(teacher_hidden[part]).float()
            width = min(logits.shape[-1], teacher_logits.shape[-1])  # embedding matrices padded differently
            kd = dense_kl(logits[:, :width], teacher_logits[:, :width])
            has = torch.ones_like(kd, dtype=torch.bool)
        else:
            kd, has = sparse_kl(logits, kd_ids[part], kd_logp[part]), has_teacher[part]
        ce = F.cross_entropy(logits, targets[part], reduction="none")
        loss = mixed_token_loss(ce, kd, has, setup.weight).sum() * scale
        loss.backward()
        totals.loss += loss.item()
        totals.kd_sum += float(kd.detach()[has].sum())
        totals.kd_positions += int(has.sum())
    if leaf.grad is not None:
        hidden.backward(leaf.grad)
    return totals
