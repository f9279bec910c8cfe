"""clip_gradients: the same gradients as torch's clip_grad_norm_, bit for bit, without writing them
where nothing is clipped. clipped_step: the clip folded into a fused AdamW's step, the same step to
rounding."""

import math

import pytest
import torch

from warmstart.train.clipping import clip_gradients, clipped_step


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


def adamw(model, fused: bool = True) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.95), weight_decay=0.01, fused=fused)


def two_steps(model, optimizer, step):
    """Two optimizer steps of `step` (the second on gradients of the stepped weights): the moments carry
    the first one's gradients into the second."""
    norms = [step(optimizer, model.parameters())]
    model.zero_grad(set_to_none=True)
    model(torch.randn(4, 7, generator=torch.Generator().manual_seed(1))).square().sum().backward()
    norms.append(step(optimizer, model.parameters()))
    return norms


def clip_then_step(max_norm):
    def step(optimizer, parameters):
        parameters = list(parameters)
        norm = clip_gradients(parameters, max_norm)
        optimizer.step()
        return norm

    return step


def folded(max_norm, fold=True):
    return lambda optimizer, parameters: clipped_step(optimizer, parameters, max_norm, fold=fold)


def test_a_folded_clip_steps_as_clip_then_step_to_rounding():
    ours, theirs = two_layers(), two_layers()
    max_norm = norm_of(ours) / 3  # both steps clipped
    ours_norms = two_steps(ours, adamw(ours), folded(max_norm))
    theirs_norms = two_steps(theirs, adamw(theirs), clip_then_step(max_norm))
    assert [float(n) for n in ours_norms] == [float(n) for n in theirs_norms]
    assert float(ours_norms[1]) > max_norm
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        # The kernel writes each gradient back divided by the scale: the clipped gradient, as clip leaves it.
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=0)


def test_a_factor_of_one_steps_bitwise_as_clip_then_step():
    ours, theirs = two_layers(), two_layers()
    max_norm = norm_of(ours) * 10  # nothing clipped
    two_steps(ours, adamw(ours), folded(max_norm))
    two_steps(theirs, adamw(theirs), clip_then_step(max_norm))
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))


@pytest.mark.parametrize("fused, fold", [(False, True), (True, False)])
def test_without_a_fused_optimizer_or_fold_the_clip_runs_first_exactly(fused, fold):
    ours, theirs = two_layers(), two_layers()
    max_norm = norm_of(ours) / 3
    two_steps(ours, adamw(ours, fused=fused), folded(max_norm, fold=fold))
    two_steps(theirs, adamw(theirs, fused=fused), clip_then_step(max_norm))
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))


def test_the_scale_is_gone_after_the_step_even_when_it_raises(monkeypatch):
    model = two_layers()
    optimizer = adamw(model)
    max_norm = norm_of(model) / 3
    clipped_step(optimizer, model.parameters(), max_norm, fold=True)
    assert not hasattr(optimizer, "grad_scale")  # a later step would divide its gradients by it again

    def fail(*args, **kwargs):
        assert float(optimizer.grad_scale) > 1.0  # 1 / the clip factor, while the step runs
        raise RuntimeError("step failed")

    model(torch.randn(4, 7)).square().sum().backward()
    monkeypatch.setattr(optimizer, "step", fail)
    with pytest.raises(RuntimeError, match="step failed"):
        clipped_step(optimizer, model.parameters(), max_norm, fold=True)
    assert not hasattr(optimizer, "grad_scale")
