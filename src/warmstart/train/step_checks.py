"""A training step's loss and weights checked before anything is saved from it."""

from __future__ import annotations

import math

import torch

from ..errors import WarmstartError


def check_finite_loss(loss: float | None, step: int, stage: str, lr_key: str) -> None:
    """A loss that is NaN or infinite means the weights have diverged (the step has already applied its
    update): stop before a checkpoint, the published model or a metrics line holds them. The checkpoints
    of earlier steps are kept."""
    if loss is not None and not math.isfinite(loss):
        raise WarmstartError(
            f"{stage}: the loss is {loss} at step {step}: training diverged (a lower {lr_key}, more warmup or "
            "gradient clipping may help); the checkpoints of earlier steps are kept"
        )


def check_finite_weights(model, step: int, stage: str, lr_key: str, total=float) -> None:
    """Weights holding NaN or infinity stop the run before a checkpoint (and so the published model) holds
    them. The loss a step reports is computed before its update, so `check_finite_loss` cannot see what
    the update did: an overflowing gradient (its norm infinite, the clip's factor 0, inf x 0 = NaN) writes
    NaN weights under a finite loss, and at the last step nothing would look again. `total`: the sum over
    the processes (`World.total`), so that every process stops where any one's shard is not finite."""
    name = nonfinite_parameter(model)
    if total(float(name is not None)) > 0:
        where = f" ({name})" if name else ""
        raise WarmstartError(
            f"{stage}: the weights are NaN or infinite after step {step}{where}: training diverged (a lower "
            f"{lr_key}, more warmup or gradient clipping may help); the checkpoints of earlier steps are kept"
        )


def nonfinite_parameter(model) -> str | None:
    """The name of the first parameter holding NaN or infinity, or None. A sharded parameter (DTensor) is
    checked in this process's shard."""
    for name, parameter in model.named_parameters():
        local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
        if not bool(torch.isfinite(local.detach()).all()):
            return name
    return None
