"""head_ce_sum (chunked cross-entropy through the output head) against F.cross_entropy on full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from warmstart.lm import linear_ce, precision
from warmstart.lm.linear_ce import head_ce_sum
from warmstart.lm.precision import bf16_autocast

ROWS, WIDTH, VOCAB = 45, 16, 300


def inputs(bias: bool, seed: int = 0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(WIDTH, VOCAB, bias=bias)
    hidden = torch.randn(ROWS, WIDTH, requires_grad=True)
    targets = torch.randint(0, VOCAB, (ROWS,))
    return head, hidden, targets


def loss_and_grads(loss_of, head, hidden, targets, context=torch.enable_grad):
    hidden.grad = None
    head.zero_grad(set_to_none=True)
    with context():
        loss = loss_of(head, hidden, targets)
    (0.37 * loss).backward()  # a scale, as train_step's 1 / targets
    grads = [hidden.grad] + [p.grad for p in head.parameters()]
    return loss.detach(), grads


def plain(head, hidden, targets):
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 7, 45, 1000])  # one row, uneven chunks, exact, one chunk
def test_fp32_loss_and_gradients_equal_the_full_logits(monkeypatch, bias, chunk_rows):
    monkeypatch.setattr(linear_ce, "CHUNK_BYTES", 4 * VOCAB * chunk_rows)
    head, hidden, targets = inputs(bias)
    loss, grads = loss_and_grads(head_ce_sum, head, hidden, targets)
    expected_loss, expected_grads = loss_and_grads(plain, head, hidden, targets)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-4)
    for got, want in zip(grads, expected_grads, strict=True):
        assert got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_matches_the_full_logits_within_bf16_rounding(monkeypatch):
    monkeypatch.setattr(linear_ce, "CHUNK_BYTES", 4 * VOCAB * 10)
    head, hidden, targets = inputs(bias=True)
    loss, grads = loss_and_grads(head_ce_sum, head, hidden, targets, bf16_autocast)
    expected_loss, expected_grads = loss_and_grads(plain, head, hidden, targets, bf16_autocast)
    fp32_loss, _ = loss_and_grads(plain, head, hidden, targets)
    # The logits are bf16 products as autocast's F.linear makes them (the same loss to fp32 rounding),
    # not fp32 ones: the loss in fp32 differs by bf16's rounding.
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-4)
    assert abs(float(loss - fp32_loss)) > 10 * abs(float(loss - expected_loss)) + 1e-3
    for got, want in zip(grads, expected_grads, strict=True):
        assert got.dtype == want.dtype == torch.float32  # gradients reach fp32 parameters as fp32
        assert (got - want).abs().max() <= 0.01 * want.abs().max()  # bf16 products summed in another order


def test_a_frozen_head_gets_no_gradient_and_the_hidden_states_do():
    head, hidden, targets = inputs(bias=False)
    head.requires_grad_(False)
    loss = head_ce_sum(head, hidden, targets)
    loss.backward()
    assert head.weight.grad is None
    hidden_grad = hidden.grad.clone()
    hidden.grad = None
    plain(head, hidden, targets).backward()
    torch.testing.assert_close(hidden_grad, hidden.grad, rtol=1e-5, atol=1e-6)


def test_without_grad_only_the_loss_is_computed():
    head, hidden, targets = inputs(bias=True)
    with torch.no_grad():
        loss = head_ce_sum(head, hidden, targets)
        expected = plain(head, hidden, targets)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-4)


def test_a_wrapped_head_runs_its_own_forward():
    """A head that is not a plain Linear (an adapter on lm_head adds to the weight's product) is called."""

    class Shifted(torch.nn.Linear):
        def forward(self, x):
            return super().forward(x) + 1.0 * (torch.arange(self.out_features) == 3)

    torch.manual_seed(0)
    head = Shifted(WIDTH, VOCAB)
    _, hidden, targets = inputs(bias=False)
    torch.testing.assert_close(head_ce_sum(head, hidden, targets), plain(head, hidden, targets))


def test_no_scored_rows_give_a_zero_loss_and_zero_gradients():
    head, _, _ = inputs(bias=True)
    hidden = torch.randn(0, WIDTH, requires_grad=True)
    loss = head_ce_sum(head, hidden, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert hidden.grad.shape == (0, WIDTH)
    assert (head.weight.grad == 0).all() and (head.bias.grad == 0).all()


def test_the_chunk_logsumexp_is_torchs_bit_for_bit():
    """ChunkScratch runs logsumexp's own operations on reused buffers: the same floats on a partial chunk
    (a slice of the buffer), at a real vocabulary's width, on rows of infinities and NaN (an infinite max
    is taken as 0, as torch.logsumexp does)."""
    torch.manual_seed(0)
    vocab = 49_152
    scratch = linear_ce.ChunkScratch(torch.zeros(20, WIDTH), torch.zeros(vocab, WIDTH))
    logits = 5 * torch.randn(9, vocab)
    logits[1] = float("-inf")
    logits[2, 7] = float("inf")
    logits[3, :10] = float("-inf")
    logits[4, 5] = float("nan")
    expected = torch.logsumexp(logits, dim=-1)
    torch.testing.assert_close(scratch.logsumexp(logits.clone()), expected, rtol=0, atol=0, equal_nan=True)


class PlainChunks:
    """The per-chunk operations as they were before ChunkScratch: a fresh fp32 tensor per operation."""

    def __init__(self, h, w):
        pass

    def logits(self, h, w, b):
        return F.linear(h, w, b).float()

    def as_fp32(self, logits):
        return logits.float()

    def logsumexp(self, logits):
        return torch.logsumexp(logits, dim=-1)


@pytest.mark.parametrize("context", [torch.enable_grad, bf16_autocast])
@pytest.mark.parametrize("bias", [False, True])
def test_the_reused_buffers_give_the_same_loss_and_gradients_as_fresh_tensors(monkeypatch, context, bias):
    monkeypatch.setattr(linear_ce, "CHUNK_BYTES", 4 * VOCAB * 7)  # uneven chunks: a partial last one
    head, hidden, targets = inputs(bias)
    loss, grads = loss_and_grads(head_ce_sum, head, hidden, targets, context)
    monkeypatch.setattr(linear_ce, "ChunkScratch", PlainChunks)
    plain_loss, plain_grads = loss_and_grads(head_ce_sum, head, hidden, targets, context)
    assert torch.equal(loss, plain_loss)
    assert all(torch.equal(g, p) for g, p in zip(grads, plain_grads))


def test_the_head_weight_gradient_by_row_block_equals_the_whole_product_cast(monkeypatch):
    """Each bf16 row block written into the fp32 result: the floats of the blocks' concatenation, cast."""
    monkeypatch.setattr(precision, "ROW_BLOCK", 64)  # several blocks and a partial last one at VOCAB = 300
    torch.manual_seed(0)
    grad_logits = torch.randn(ROWS, VOCAB).bfloat16()
    hidden = torch.randn(ROWS, WIDTH).bfloat16()
    blocks = torch.cat([grad_logits[:, rows].t() @ hidden for rows in precision.row_blocks(VOCAB)])
    assert torch.equal(linear_ce.head_weight_grad(grad_logits, hidden, torch.float32), blocks.float())


@pytest.mark.parametrize("context", [torch.enable_grad, bf16_autocast])
@pytest.mark.parametrize("bias", [False, True])
def test_the_loss_without_gradients_equals_the_loss_with_them(monkeypatch, context, bias):
    """With gradients the logits come from one product over every row, without them chunk by chunk (10
    rows): the same loss to rounding (a BLAS may sum a row in another order for fewer rows; on the 2-core
    EPYC with AVX512-BF16 this was measured, they are equal)."""
    monkeypatch.setattr(linear_ce, "CHUNK_BYTES", 4 * VOCAB * 10)
    head, hidden, targets = inputs(bias)
    with context():
        trained = head_ce_sum(head, hidden, targets)
        with torch.no_grad():
            evaluated = head_ce_sum(head, hidden, targets)
    # bf16: a logit one bf16 step apart (its fp32 sum rounded the other way) moves the loss by ~1e-5.
    torch.testing.assert_close(trained.detach(), evaluated, rtol=1e-6 if context is torch.enable_grad else 1e-4, atol=0)


def test_a_second_backward_through_the_loss_says_why_it_cannot():
    head, hidden, targets = inputs(bias=False)
    loss = head_ce_sum(head, hidden, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()
