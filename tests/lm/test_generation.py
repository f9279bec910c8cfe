"""Sampling: `draw` follows the softmax by inverse CDF; the pruned decoding loop is `generate` when greedy."""

from __future__ import annotations

import torch

from helpers import tiny_model
from warmstart.lm.generation import draw


def test_pruned_sampling_is_generate_when_greedy():
    from warmstart.lm.generation import sample_ids, sample_ids_pruned
    from warmstart.types import Sampling

    model, tokenizer = tiny_model()
    model.eval()
    prompts = [
        tokenizer(p)["input_ids"] for p in ["What is 1+1?", "Answer: 2", "carry so far 1+1"]
    ]  # unequal lengths: left padding
    stops = [tokenizer.convert_tokens_to_ids("a")]  # some rows stop early, others run to the limit
    sampling = Sampling(0.0, 1.0, 12)
    ours, theirs = (
        f(model, tokenizer.pad_token_id, prompts, sampling, stops, 0) for f in (sample_ids_pruned, sample_ids)
    )
    assert [(s.completion_ids, s.stopped) for s in ours] == [(s.completion_ids, s.stopped) for s in theirs]


def test_draws_follow_the_softmax_and_never_pick_a_cut_token():
    scores = torch.tensor([1.0, 0.0, -float("inf"), 2.0, -1.0])
    torch.manual_seed(0)
    tokens = draw(scores.expand(200_000, -1))
    frequencies = torch.bincount(tokens, minlength=5).double() / len(tokens)
    expected = scores.softmax(dim=-1).double()
    assert frequencies[2] == 0.0
    # 200k draws: a frequency's standard error is at most ~0.0011; 5 of them within 0.005.
    assert torch.allclose(frequencies, expected, atol=0.005), (frequencies, expected)


def test_a_draw_rounded_up_to_the_total_takes_the_last_drawable_token(monkeypatch):
    scores = torch.tensor([[0.5, 1.0, -float("inf")], [-float("inf"), 0.0, -float("inf")]])
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.ones(*shape))  # u equal to the total: past every sum
    assert draw(scores).tolist() == [1, 1]


def test_greedy_like_scores_always_give_their_one_token():
    scores = torch.full((64, 7), -float("inf"))
    scores[:, 4] = 0.0
    assert set(draw(scores).tolist()) == {4}
