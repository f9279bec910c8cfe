"""sequence_logprobs at chosen positions only (GRPO's policy tokens) against the full forward pass."""

from __future__ import annotations

import torch

from helpers import tiny_model
from warmstart.lm.scoring import sequence_logprobs


def batch_and_positions(vocab: int) -> tuple[dict, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (3, 12), generator=generator)
    scored = torch.zeros((3, 11), dtype=torch.bool)
    scored[0, 5:] = True  # a completion after a prompt
    scored[1, 2:7] = True
    scored[2, 10] = True  # one token
    return {"input_ids": ids}, scored


def test_scored_positions_equal_the_full_pass_and_the_rest_reads_zero():
    model, tokenizer = tiny_model()
    batch, scored = batch_and_positions(model.config.vocab_size)
    full = sequence_logprobs(model, batch)
    part = sequence_logprobs(model, batch, scored)
    assert part.shape == full.shape
    torch.testing.assert_close(part[scored], full[scored], rtol=1e-5, atol=1e-5)
    assert (part[~scored] == 0).all()
    assert (full[~scored] != 0).all()  # the full pass did score them


def test_scored_positions_give_the_full_pass_gradient():
    model, _ = tiny_model()
    batch, scored = batch_and_positions(model.config.vocab_size)
    weights = torch.linspace(0.5, 2.0, scored.numel()).reshape(scored.shape)  # any loss over the scored tokens

    def gradients(positions):
        model.zero_grad()
        logp = sequence_logprobs(model, batch, positions)
        (logp * weights * scored).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(gradients(None), gradients(scored)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_model_that_transforms_its_logits_takes_the_full_pass():
    model, _ = tiny_model()
    batch, scored = batch_and_positions(model.config.vocab_size)
    model.config.final_logit_softcapping = 30.0  # read by logit_transforms; Llama's forward ignores it
    full = sequence_logprobs(model, batch) * scored
    torch.testing.assert_close(sequence_logprobs(model, batch, scored), full, rtol=0, atol=0)
