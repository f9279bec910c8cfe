"""The GRPO maths against hand-computed values and autograd on tiny cases."""

from __future__ import annotations

import math

import pytest
import torch

from warmstart.lm.scoring import token_logprobs
from warmstart.train.losses import (
    K3_TANGENT_FROM,
    clipped_policy_loss,
    group_advantages,
    kl_to_reference,
    overlong_penalty,
    reduce_tokens,
    zero_variance_groups,
)


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    # Group 1: mean 0.5, population std 0.5 -> +-1. Group 2: no variance -> 0 (no signal, no NaN).
    expected = torch.tensor([[1.0, -1.0, -1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(group_advantages(rewards), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(group_advantages(rewards, scale_by_std=False), expected * 0.5, atol=1e-6, rtol=0)
    assert zero_variance_groups(rewards).tolist() == [False, True]


def test_token_logprobs_matches_softmax_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = [1/4, 3/4]
    assert token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))


def test_clipped_loss_by_hand():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    mask = torch.ones(1, 3)
    # A = +1: min(r, clip(r)) = 1.2, 0.5, 1.1 -> loss = -(2.8)/3
    assert clipped_policy_loss(new, old, torch.tensor([1.0]), mask).item() == pytest.approx(-2.8 / 3, abs=1e-6)
    # A = -1: min(-r, -clip(r)) = -1.5, -0.8, -1.1 -> loss = 3.4/3
    assert clipped_policy_loss(new, old, torch.tensor([-1.0]), mask).item() == pytest.approx(3.4 / 3, abs=1e-6)
    # clip-higher: with clip_high = 0.6 the first ratio (1.5) is no longer clipped for A > 0.
    value = clipped_policy_loss(new, old, torch.tensor([1.0]), mask, clip_high=0.6).item()
    assert value == pytest.approx(-(1.5 + 0.5 + 1.1) / 3, abs=1e-6)


def test_clipped_loss_gradient_matches_the_analytic_one():
    torch.manual_seed(0)
    old = torch.randn(3, 5)
    new = (old + 0.4 * torch.randn(3, 5)).requires_grad_()
    adv = torch.tensor([1.0, -0.5, 2.0])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=torch.float32)
    clipped_policy_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.28).backward()
    ratio = torch.exp(new.detach() - old)
    a = adv.unsqueeze(1)
    # d/dlogp of -min(rA, clip(r)A): -rA where the unclipped term is the smaller (or the clip is inactive), else 0.
    inside = (ratio >= 0.8) & (ratio <= 1.28)
    active = inside | ((ratio * a) < (ratio.clamp(0.8, 1.28) * a))
    expected = torch.where(active, -ratio * a, torch.zeros_like(ratio)) * mask / mask.sum()
    torch.testing.assert_close(new.grad, expected, atol=1e-6, rtol=1e-5)


def test_masked_tokens_contribute_nothing():
    torch.manual_seed(1)
    old, new = torch.randn(2, 4), torch.randn(2, 4).requires_grad_()
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32)
    base = clipped_policy_loss(new, old, torch.tensor([1.0, -1.0]), mask)
    base.backward()
    assert (new.grad[mask == 0] == 0).all()
    changed = new.detach().clone()
    changed[mask == 0] += 10.0
    assert clipped_policy_loss(changed, old, torch.tensor([1.0, -1.0]), mask).item() == pytest.approx(base.item())


def test_normalizations_by_hand():
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float32)
    assert reduce_tokens(per_token, mask, "token").item() == pytest.approx(8 / 5)  # every token weighs the same
    assert reduce_tokens(per_token, mask, "sequence").item() == pytest.approx(
        (1 + 4) / 2
    )  # every sequence weighs the same
    assert reduce_tokens(per_token, mask, "constant", length=8).item() == pytest.approx(8 / 16)  # Dr. GRPO
    with pytest.raises(ValueError):
        reduce_tokens(per_token, mask, "constant")


def test_kl_to_reference_is_zero_at_equality_and_matches_kl_in_expectation():
    logp = torch.log(torch.tensor([[0.2, 0.5]]))
    assert kl_to_reference(logp, logp).abs().max().item() == 0.0
    # Expectation over tokens sampled from p of the estimator equals KL(p || q).
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    estimate = (p * kl_to_reference(p.log(), q.log())).sum()
    assert estimate.item() == pytest.approx((p * (p / q).log()).sum().item(), abs=1e-6)
    assert (kl_to_reference(p.log(), q.log()) >= 0).all()


def test_kl_to_reference_grows_linearly_past_its_bound_and_is_never_inf_or_nan():
    """One token the policy made far less likely than the reference had a k3 of 7.7e6, outweighing every
    other token's clipped objective; at a log-ratio past 709 it was inf and its gradient nan. Past the bound
    the term follows its tangent: finite, and its gradient still pulls the token back."""
    logp = torch.tensor([[-1.0, -30.0, -800.0, -2.0, -1.0]], requires_grad=True)
    logp_ref = torch.tensor([[-1.2, -1.0, -1.0, -1.0, -20.0]])
    kl = kl_to_reference(logp, logp_ref)
    assert kl[0, 0].item() == pytest.approx(math.exp(-0.2) + 0.2 - 1, rel=1e-6)  # unchanged below the bound
    assert kl[0, 3].item() == pytest.approx(math.e - 2, rel=1e-6)
    assert kl[0, 4].item() == pytest.approx(math.exp(-19) + 19 - 1, rel=1e-6)  # the other side: unchanged
    slope, at_bound = math.exp(K3_TANGENT_FROM) - 1, math.exp(K3_TANGENT_FROM) - K3_TANGENT_FROM - 1
    assert kl[0, 1].item() == pytest.approx(at_bound + slope * (29 - K3_TANGENT_FROM), rel=1e-5)
    assert torch.isfinite(kl).all()
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all()
    assert logp.grad[0, 1].item() == pytest.approx(-slope, rel=1e-5) == logp.grad[0, 2].item()
    assert logp.grad[0, 3].item() == pytest.approx(1 - math.e, rel=1e-6)


def test_overlong_penalty_by_hand():
    lengths = torch.tensor([10, 90, 95, 100, 120])
    assert overlong_penalty(lengths, max_length=100, buffer=20).tolist() == pytest.approx(
        [0.0, -0.5, -0.75, -1.0, -1.0]
    )
