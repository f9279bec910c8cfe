"""A training step's loss, gradient and weights checked before anything is saved from it.

A step's checks read what it has computed anyway (the loss, the clip's gradient norm, the log-probs of
GRPO's next update): they cost nothing per step. What reads more runs only where a checkpoint is due:
the scan of every parameter (`check_finite_weights`) and the check of an update no step has seen (below).
A run is stopped as diverged where:

- the loss or the gradient norm is NaN or infinite. A non-finite norm makes the clip's factor 0 or NaN and
  the update writes NaN into the weights, which the next step's loss may not see (a NaN row of the
  embedding that its tokens do not use): the step is stopped at once.
- a cross-entropy is above 2 ln V (V: the rows of the output head). ln V is what a uniform guess over the
  vocabulary scores, and where a freshly initialised model starts; a model that far above it gives the
  right token V times less probability than a uniform guess (geometric mean over the tokens). Measured on
  the tiny student (V = 300, ln V = 5.70): healthy runs stay below their first loss (5.70); `sft.lr = 1`
  reaches 26.9 by step 4, `sft.lr = 10` 226 at step 2. KD's mixed loss is bounded the same way: a uniform
  student's KL to any teacher is at most ln V.
- the gradient is exactly 0 where the loss has a signal: the loss no longer depends on the weights. Weights
  grown huge make a norm layer's variance overflow to infinity and its output 0: the logits are then 0 at
  every position, the loss is exactly ln V (finite, below the bound above) and no gradient reaches any
  weight. Measured: the tiny student at `sft.lr = 1e4` from its first update on, at `sft.lr = 1e3` from its
  fourth; GRPO at `grpo.lr = 1e4` likewise.
- GRPO: the batch's updates made the tokens the policy sampled more than V times less likely (their mean
  log-prob fell by more than ln V): no healthy update moves a policy further than a uniform guess is from
  it. Measured on the tiny student: at most 0.06 per token at `grpo.lr` 1e-4 to 1e-2, up to 5.1 at 0.1 (a
  policy rewritten at each update, still below ln 300 = 5.70), 23 at 1, 2e5 at 100.

The loss a step reports is computed before its update, so the update a checkpoint holds is one no step
has measured yet (the last one never is, and in GRPO a step whose groups are all flat takes none, a
resumed run's first ones included): it is checked once more before the checkpoint saves it, as a next step
would (`after_update`; train/sft.py and train/grpo.py `check_unseen_update`). Saved unchecked, a diverged
update was the checkpoint a rerun resumed from, to stop again at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from ..errors import WarmstartError


def check_finite_loss(loss: float | None, step: int, stage: str, lr_key: str) -> None:
    """A loss that is NaN or infinite means the weights have diverged: stop before a checkpoint, the
    published model or a metrics line holds them. The checkpoints of earlier steps are kept."""
    if loss is not None and not math.isfinite(loss):
        raise diverged(stage, f"the loss is {loss} at step {step}", lr_key)


def check_finite_weights(model, step: int, stage: str, lr_key: str, total=float) -> None:
    """Weights holding NaN or infinity stop the run before a checkpoint (and so the published model) holds
    them: the last line of defence behind `StepChecks`, for what no scalar of a step showed. `total`: the
    sum over the processes (`World.total`), so that every process stops where any one's shard is not finite."""
    name = nonfinite_parameter(model)
    if total(float(name is not None)) > 0:
        where = f" ({name})" if name else ""
        raise diverged(stage, f"the weights are NaN or infinite after step {step}{where}", lr_key)


def diverged(stage: str, what: str, lr_key: str) -> WarmstartError:
    """The one-line error of every divergence check."""
    return WarmstartError(
        f"{stage}: {what}: training diverged (a lower {lr_key}, more warmup or gradient clipping may help); "
        "the checkpoints of earlier steps are kept"
    )


def nonfinite_parameter(model) -> str | None:
    """The name of the first parameter holding NaN or infinity, or None. A sharded parameter (DTensor) is
    checked in this process's shard."""
    for name, parameter in model.named_parameters():
        local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
        if not bool(torch.isfinite(local.detach()).all()):
            return name
    return None


def output_vocabulary(model) -> int:
    """V: the number of logits the model's softmax is over (its output head's rows)."""
    return int(model.get_output_embeddings().weight.shape[0])


@dataclass(frozen=True)
class StepChecks:
    """One step's divergence checks (module docstring), each naming in its error the stage, the step and
    the learning rate's key. `after_update`: the check of the weights after the step's update, before a
    checkpoint saves them."""

    stage: str
    step: int
    lr_key: str
    vocab_size: int
    after_update: bool = False

    @property
    def uniform_guess(self) -> float:
        """ln V: the cross-entropy of a uniform guess over the vocabulary."""
        return math.log(self.vocab_size)

    def cross_entropy(self, loss: float) -> None:
        """A (mixed) cross-entropy: finite, and at most 2 ln V."""
        if not math.isfinite(loss):
            raise self.diverged(f"the loss is {loss}")
        if loss > 2 * self.uniform_guess:
            raise self.diverged(
                f"the loss is {loss:.4g}",
                f", above 2 ln V = {2 * self.uniform_guess:.4g} (V = {self.vocab_size}: worse than a uniform guess "
                "over the vocabulary, by as much again)",
            )

    def gradient_norm(self, norm, has_signal: Callable[[], bool]) -> None:
        """The global gradient norm (the clip's): finite, and not 0 where `has_signal()` (asked only then)."""
        value = as_float(norm)
        if not math.isfinite(value):
            raise self.diverged(f"the gradient norm is {value}")
        if value == 0 and has_signal():
            raise self.diverged(
                "the gradient is 0",
                " though the loss has a signal (the output no longer depends on the weights: they grew so large "
                f"that activations overflow, the logits are a uniform guess, loss ln V = {self.uniform_guess:.4g})",
            )

    def policy_move(self, move: float | None) -> None:
        """GRPO: the mean fall of the sampled tokens' log-probs over the batch's updates; None: not measured."""
        if move is not None and move > self.uniform_guess:
            raise self.diverged(
                f"the sampled tokens' log-prob fell by {move:.4g} per token",
                f", more than ln V = {self.uniform_guess:.4g} (V = {self.vocab_size}: the updates moved the policy "
                "further from what it was than a uniform guess is)",
            )

    def diverged(self, what: str, detail: str = "") -> WarmstartError:
        when = f"after the update of step {self.step}" if self.after_update else f"at step {self.step}"
        return diverged(self.stage, f"{what} {when}{detail}", self.lr_key)


def as_float(value) -> float:
    """A scalar tensor (a sharded run's norm is a DTensor: its full value) or number as a float."""
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)


def random_state_kept(model) -> AbstractContextManager:
    """A block after which the random state is as before it (dropout's draws in a check's forward): the CPU's
    generator, and the model's GPU's where it is on one (`fork_rng(devices=[])` alone leaves CUDA's drawn)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.random.fork_rng(devices=[device.index or 0], device_type="cuda")
    return torch.random.fork_rng(devices=[])
