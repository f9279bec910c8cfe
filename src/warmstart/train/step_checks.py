"""A training step's loss checked before anything is saved from it."""

from __future__ import annotations

import math

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
