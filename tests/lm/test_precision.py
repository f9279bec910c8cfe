"""bf16_autocast: the same gradients as plain CPU bf16 autocast, through Bf16Linear's backward."""

import torch

from warmstart.lm.precision import ROW_BLOCK, bf16_autocast


def model_and_input(seed: int):
    torch.manual_seed(seed)
    # The last layer has more rows than one backward block, so the blocked products are exercised.
    model = torch.nn.Sequential(
        torch.nn.Linear(24, 40), torch.nn.Tanh(), torch.nn.Linear(40, ROW_BLOCK + 100, bias=False)
    )
    return model, torch.randn(3, 5, 24, requires_grad=True)


def gradients(context) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    model, x = model_and_input(0)
    with context():
        out = model(x)
    (out.float() ** 2).mean().backward()
    return out, [p.grad for p in model.parameters()], x.grad


def test_same_gradients_as_plain_autocast_through_the_custom_backward():
    plain = gradients(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    routed = gradients(bf16_autocast)
    assert type(routed[0].grad_fn).__name__ == "Bf16LinearBackward"
    assert type(plain[0].grad_fn).__name__ != "Bf16LinearBackward"
    assert routed[0].dtype == plain[0].dtype == torch.bfloat16
    torch.testing.assert_close(routed[0], plain[0])
    for ours, theirs in zip(routed[1] + [routed[2]], plain[1] + [plain[2]]):
        assert ours.dtype == theirs.dtype == torch.float32
        # Same bf16 products, summed over blocks in another order: bf16 rounding apart.
        torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=1e-3)


def test_regions_that_turn_autocast_off_stay_float32():
    model, x = model_and_input(1)
    with bf16_autocast(), torch.autocast("cpu", enabled=False):
        out = model(x)
    assert out.dtype == torch.float32
    assert type(out.grad_fn).__name__ != "Bf16LinearBackward"


def test_input_gradient_is_the_same_product_with_and_without_native_bf16(monkeypatch):
    """dx = dy @ W: one product where the CPU has bf16 matmul, F.linear against W^T by row block where not."""
    from warmstart.lm import precision

    torch.manual_seed(2)
    dy = torch.randn(7, ROW_BLOCK + 100).bfloat16()
    weight = torch.randn(ROW_BLOCK + 100, 24).bfloat16()
    expected = dy.float() @ weight.float()
    results = {}
    for native in (True, False):
        monkeypatch.setattr(precision, "native_bf16_matmul", lambda native=native: native)
        results[native] = precision.input_grad(dy, weight)
        assert results[native].dtype == torch.bfloat16
        torch.testing.assert_close(results[native].float(), expected, rtol=2e-2, atol=0.5)
    torch.testing.assert_close(results[True], results[False], rtol=2e-2, atol=0.5)
