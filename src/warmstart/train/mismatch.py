"""Train-inference mismatch: the sampler's log-probs and the trainer's, and the correction between them.

The tokens GRPO trains on were drawn by a sampler: the local decoding loop (a KV cache, a batch of other
shapes, maybe another precision), an inference server (other kernels), or, one step off policy, the
previous step's weights. Its distribution is not exactly the trainer's, so the update is not exactly the
on-policy one. Truncated importance sampling (TIS) weights each policy token's loss by

    w = min(p_trainer(x) / p_sampler(x), cap)        (detached: a weight, not a path for gradients)

with p_trainer the trainer's probability before the update (the PPO "old" policy). Uncapped, the weighted
update equals the on-policy one in expectation over the sampler's tokens; the cap bounds the variance a
token the sampler found much less likely would add (at the price of a bias where it binds).

Both log-probs are of the model's own distribution (raw logits: no temperature, no top-p), which is what
servers report; a token whose sampler log-prob is unknown (NaN) gets weight 1 and is left out of the
mismatch statistics. The statistics (mean |log p_trainer - log p_sampler|, quantiles of the ratio, the
share of weights the cap cut) are reported per step; a mean beyond `grpo.mismatch_limit` stops the run:
it means the sampler is not sampling this policy (a server serving another model or a stale adapter).
The statistics cover the rows the update computes: rows it skips (advantage 0 and no KL term, or no
policy token; train/grpo.live_chunks) add nothing to the gradient and are not measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .distributed import SINGLE, World

QUANTILE_SAMPLE = 4096  # ratios kept per process for the quantiles: enough for p95, bounded for big batches


def tis_weights(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float | None) -> torch.Tensor:
    """[B, T] -> [B, T] per-token weights min(exp(trainer - sampler), cap), 1 where the sampler's log-prob
    is NaN (unknown) or TIS is off (`cap` None)."""
    known = ~torch.isnan(sampler_logp)
    if cap is None:
        return torch.ones_like(trainer_logp)
    ratio = torch.exp(trainer_logp.detach() - sampler_logp.nan_to_num(0.0))
    return torch.where(known, ratio.clamp(max=cap), torch.ones_like(ratio))


@dataclass
class MismatchTally:
    """A step's mismatch, summed over the chunks (and processes) it was measured on."""

    abs_sum: float = 0.0
    tokens: int = 0
    capped: int = 0
    log_ratios: list[torch.Tensor] = field(default_factory=list)

    def add(self, trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, cap: float | None):
        """Count the policy tokens (`mask` 1) whose sampler log-prob is known."""
        known = (~torch.isnan(sampler_logp)) & (mask > 0)
        delta = (trainer_logp.detach() - sampler_logp)[known].double()
        self.abs_sum += float(delta.abs().sum())
        self.tokens += int(delta.numel())
        if cap is not None:
            self.capped += int((delta > torch.log(torch.tensor(cap, dtype=torch.float64))).sum())
        self.log_ratios.append(delta)

    def stats(self, world: World = SINGLE) -> dict:
        """The step's statistics over every process; {} where no token had a sampler log-prob."""
        tokens = world.total(self.tokens)
        if not tokens:
            return {}
        mine = torch.cat(self.log_ratios) if self.log_ratios else torch.zeros(0, dtype=torch.float64)
        # The largest over every token (a subsample would miss the one ratio the cap cut); the quantiles
        # from a subsample.
        largest = max(world.gather_shares([float(mine.max()) if len(mine) else float("-inf")]))
        mine = mine[:: max(1, len(mine) // QUANTILE_SAMPLE)]
        ratios = torch.tensor(world.gather_shares(mine.tolist()), dtype=torch.float64).exp()
        p05, p50, p95 = torch.quantile(ratios, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
        return {
            "mismatch_abs_logp": world.total(self.abs_sum) / tokens,
            "is_ratio_p05": p05,
            "is_ratio_p50": p50,
            "is_ratio_p95": p95,
            # inf past e^709 (a sampler's log-prob of -800 for a token the trainer finds likely), not OverflowError
            "is_ratio_max": math.inf if largest > 709.78 else math.exp(largest),
            "tis_capped_fraction": world.total(self.capped) / tokens,
            "mismatch_tokens": int(tokens),
        }
