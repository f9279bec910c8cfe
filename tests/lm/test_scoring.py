"""sequence_logprobs at chosen positions only (GRPO's policy tokens) against the full forward pass."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from helpers import tiny_model
from warmstart.lm.scoring import logit_transforms, sequence_logprobs


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


def test_falcon_h1s_head_multiplier_is_a_transform_of_its_logits():
    """Falcon-H1 multiplies its head's output by `lm_head_multiplier`: left unseen, SFT and KD computed their
    loss on other logits than the model's (54.25 for 54.10 at 0.25)."""
    from transformers import FalconH1Config

    assert logit_transforms(SimpleNamespace(config=FalconH1Config(lm_head_multiplier=0.25))) == ["lm_head_multiplier"]
    assert logit_transforms(SimpleNamespace(config=FalconH1Config())) == []  # 1.0: the head's logits as they are
