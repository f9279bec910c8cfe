"""Train-inference mismatch: truncated importance sampling keeps the update the on-policy one in
expectation (an exact small case), the per-step statistics report a sampler's perturbation, the local
sampler's log-probs match the trainer's, and a sampler far from the trainer stops the step before it
updates anything."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from helpers import tiny_model
from warmstart.config import GrpoConfig
from warmstart.errors import WarmstartError
from warmstart.lm.generation import sample_ids_pruned
from warmstart.lm.rollout import Episode
from warmstart.lm.scoring import sequence_logprobs
from warmstart.stages.grpo import step_scalars
from warmstart.train.grpo import Group, batch_tensors, update
from warmstart.train.losses import clipped_policy_loss
from warmstart.train.mismatch import MismatchTally, tis_weights
from warmstart.types import Sampling

REWARDS = torch.tensor([1.0, 0.0, 0.5, 0.0, 1.0])


def expected_gradient(theta: torch.Tensor, sampler_logits: torch.Tensor | None, cap: float | None) -> torch.Tensor:
    """E over one token x ~ sampler (the policy itself where None) of the gradient of GRPO's per-token loss
    at x, weighted by TIS against the sampler: computed exactly, summing over the whole vocabulary."""
    logp_all = torch.log_softmax(theta, dim=0)
    p = logp_all.exp().detach()
    q = p if sampler_logits is None else torch.softmax(sampler_logits, dim=0)
    advantages = REWARDS - (p * REWARDS).sum()  # against the policy's own mean reward
    total = torch.zeros(())
    for x in range(len(theta)):
        logp = logp_all[x].reshape(1, 1)
        weights = tis_weights(logp, q[x].log().reshape(1, 1), cap)
        loss = clipped_policy_loss(logp, logp.detach(), advantages[x].reshape(1), torch.ones(1, 1), weights=weights)
        total = total + q[x] * loss
    (gradient,) = torch.autograd.grad(total, theta)
    return gradient


def test_tis_makes_the_update_from_a_perturbed_sampler_the_on_policy_one_in_expectation():
    theta = torch.tensor([0.3, -1.0, 0.8, 0.0, -0.4], requires_grad=True)
    sampler = theta.detach() + torch.tensor([0.9, 0.5, -0.7, 0.2, -1.1])  # a sampler that is not the policy
    on_policy = expected_gradient(theta, None, None)
    ratios = torch.softmax(theta.detach(), 0) / torch.softmax(sampler, 0)
    corrected = expected_gradient(theta, sampler, cap=float(ratios.max()) + 1.0)  # a cap that never binds
    uncorrected = expected_gradient(theta, sampler, cap=None)
    torch.testing.assert_close(corrected, on_policy, atol=1e-6, rtol=0)
    assert (uncorrected - on_policy).abs().max() > 0.02  # without the weights the update is another one
    capped = expected_gradient(theta, sampler, cap=1.0)  # binding: biased, between the two
    assert (capped - on_policy).abs().max() > 1e-3


def test_the_mismatch_statistics_report_the_perturbation():
    trainer = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last token is not the policy's: not counted
    tally = MismatchTally()
    tally.add(trainer, trainer - 0.25, mask, cap=2.0)  # a sampler 0.25 nats less sure of each token
    stats = tally.stats()
    assert stats["mismatch_abs_logp"] == pytest.approx(0.25)
    assert stats["mismatch_tokens"] == 3
    assert stats["is_ratio_p50"] == pytest.approx(torch.exp(torch.tensor(0.25)).item())
    assert stats["tis_capped_fraction"] == 0.0
    unknown = MismatchTally()
    unknown.add(trainer, torch.full_like(trainer, float("nan")), mask, cap=2.0)
    assert unknown.stats() == {}  # a sampler without log-probs: nothing to report, weights 1
    assert tis_weights(trainer, torch.full_like(trainer, float("nan")), 2.0).eq(1.0).all()


def test_the_largest_ratio_is_over_every_token_not_the_quantiles_subsample():
    """10,000 tokens (the quantiles read a subsample of them): the one ratio of e^3 the cap cut is the max."""
    trainer, sampler = torch.zeros(1, 10_000), torch.zeros(1, 10_000)
    sampler[0, 1] = -3.0
    stats = MismatchTally()
    stats.add(trainer, sampler, torch.ones_like(trainer), cap=2.0)
    stats = stats.stats()
    assert stats["is_ratio_max"] == pytest.approx(math.exp(3.0)) and stats["tis_capped_fraction"] == 1e-4


def test_every_ratio_statistic_reaches_the_trackers():
    entry = {"mean_reward": 0.5, "zero_variance_fraction": 0.0, "loss": 0.1, "seconds": 1.0, "rollouts": 4}
    entry |= {"filter_rollouts": 0, "sampled_tokens": 8, "filter_sampled_tokens": 0}
    entry |= {"is_ratio_p05": 0.9, "is_ratio_p50": 1.0, "is_ratio_p95": 1.1, "is_ratio_max": 2}
    scalars = step_scalars(entry)
    assert [scalars[f"is_ratio_{q}"] for q in ("p05", "p50", "p95", "max")] == [0.9, 1.0, 1.1, 2]


def rollouts(model, tokenizer, n: int = 4) -> list[Episode]:
    prompt = tokenizer("What is 1+1?")["input_ids"]
    sampled = sample_ids_pruned(
        model, tokenizer.pad_token_id, [prompt] * n, Sampling(1.0, 1.0, 12), [], 7, [str(i) for i in range(n)]
    )
    return [
        Episode(
            None,
            i,
            [],
            prompt + s.completion_ids,
            [0] * len(prompt) + [1] * len(s.completion_ids),
            [None] * len(prompt) + s.logprobs,
        )
        for i, s in enumerate(sampled)
    ]


def test_the_local_sampler_agrees_with_the_trainer_and_a_perturbed_one_is_reported():
    model, tokenizer = tiny_model()
    episodes = rollouts(model, tokenizer)
    group = Group(episodes, rewards=[1.0, 0.0, 1.0, 0.0], valid=[True] * 4)
    cfg = GrpoConfig(updates_per_batch=1, lr=1e-3)
    batch = batch_tensors([group], cfg, tokenizer.pad_token_id)
    with torch.no_grad():
        trainer = sequence_logprobs(model, batch)
    known = ~torch.isnan(batch["sampler_logp"][:, 1:])
    assert known.sum() == batch["loss_mask"][:, 1:].sum()  # every policy token has its sampler log-prob
    assert (trainer - batch["sampler_logp"][:, 1:])[known].abs().max() < 1e-4  # KV-cached sampling = full pass

    untouched = copy.deepcopy(model)
    _, stats = update(untouched, None, torch.optim.SGD(untouched.parameters(), lr=0.0), batch, cfg)
    assert stats["mismatch_abs_logp"] < 1e-4 and stats["tis_capped_fraction"] == 0.0

    perturbed = {**batch, "sampler_logp": batch["sampler_logp"] + 0.4}  # a sampler more sure of each token
    trained = copy.deepcopy(model)
    _, stats = update(trained, None, torch.optim.SGD(trained.parameters(), lr=1e-3), perturbed, cfg)
    assert stats["mismatch_abs_logp"] == pytest.approx(0.4, abs=1e-3)
    assert stats["is_ratio_p50"] == pytest.approx(torch.exp(torch.tensor(-0.4)).item(), abs=1e-3)


def test_a_sampler_far_from_the_trainer_stops_the_step_before_any_update():
    model, tokenizer = tiny_model()
    group = Group(rollouts(model, tokenizer), rewards=[1.0, 0.0, 1.0, 0.0], valid=[True] * 4)
    cfg = GrpoConfig(updates_per_batch=1, lr=1e-2, mismatch_limit=1.0)
    batch = batch_tensors([group], cfg, tokenizer.pad_token_id)
    before = copy.deepcopy(model.state_dict())
    far = {**batch, "sampler_logp": batch["sampler_logp"] - 3.0}
    with pytest.raises(WarmstartError, match="mismatch_limit"):
        update(model, None, torch.optim.SGD(model.parameters(), lr=1e-2), far, cfg)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_a_ratio_past_floats_range_is_infinite_not_an_overflow_error():
    """A sampler's log-prob of -800 for a token the trainer finds likely: e^800 had raised OverflowError and
    stopped GRPO in its statistics."""
    trainer, sampler = torch.zeros(1, 4), torch.zeros(1, 4)
    sampler[0, 2] = -800.0
    stats = MismatchTally()
    stats.add(trainer, sampler, torch.ones_like(trainer), cap=2.0)
    assert stats.stats()["is_ratio_max"] == math.inf
