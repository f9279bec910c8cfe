"""clip_gradients: the same gradients as torch's clip_grad_norm_, bit for bit, without writing them
where nothing is clipped."""

import math

import pytest
import torch

from warmstart.train.clipping import clip_gradients


def two_layers(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3, bias=False))
    model(torch.randn(4, 7)).square().sum().backward()
    return model


def norm_of(model) -> float:
    return float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]))


@pytest.mark.parametrize("ratio", [0.25, 0.999999, 1.0, 1.0000005, 4.0])
def test_gradients_equal_torchs_around_the_limit(ratio):
    ours, theirs = two_layers(), two_layers()
    max_norm = norm_of(ours) * ratio  # below, at and above the norm, and within torch's 1e-6 of it
    ours_norm = clip_gradients(ours.parameters(), max_norm)
    theirs_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    assert torch.equal(ours_norm, theirs_norm)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_gradients_under_the_limit_are_not_written():
    model = two_layers()
    versions = [p.grad._version for p in model.parameters()]
    before = [p.grad.clone() for p in model.parameters()]
    clip_gradients(model.parameters(), norm_of(model) * 2)
    assert [p.grad._version for p in model.parameters()] == versions
    assert all(torch.equal(p.grad, b) for p, b in zip(model.parameters(), before))


def test_gradients_over_the_limit_come_out_at_the_limit():
    model = two_layers()
    clip_gradients(model.parameters(), 0.5)
    assert math.isclose(norm_of(model), 0.5, rel_tol=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_norm_is_applied_as_torch_applies_it(bad):
    ours, theirs = two_layers(), two_layers()
    for model in (ours, theirs):
        next(model.parameters()).grad[0, 0] = bad
    clip_gradients(ours.parameters(), 1.0)
    torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a.grad.nan_to_num(), b.grad.nan_to_num())
        assert torch.equal(a.grad.isnan(), b.grad.isnan())


def test_parameters_without_gradients_are_left_alone():
    model = two_layers()
    frozen = torch.nn.Parameter(torch.ones(3))
    clip_gradients([*model.parameters(), frozen], 0.1)
    assert frozen.grad is None
    assert math.isclose(norm_of(model), 0.1, rel_tol=1e-5)


def test_one_tensor_is_clipped_as_torch_clips_it():
    ours, theirs = (torch.nn.Parameter(torch.arange(6.0).view(2, 3)) for _ in range(2))
    ours.grad, theirs.grad = torch.full((2, 3), 3.0), torch.full((2, 3), 3.0)
    assert torch.equal(clip_gradients(ours, 1.0), torch.nn.utils.clip_grad_norm_(theirs, 1.0))
    assert torch.equal(ours.grad, theirs.grad)
