"""Sampling: `draw` follows the softmax by inverse CDF; the pruned decoding loop is `generate` when greedy."""

from __future__ import annotations

import functools

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


def test_a_repeated_prompt_is_prefilled_once_and_its_rows_sample_as_alone():
    from warmstart.lm.generation import sample_ids_pruned
    from warmstart.types import Sampling

    model, tokenizer = tiny_model()
    model.eval()
    group, other = tokenizer("What is 1+1?")["input_ids"], tokenizer("carry so far")["input_ids"]
    prompts, keys = [group, other, group, group], ["t1/0", "t2/0", "t1/1", "t1/2"]
    sampling = Sampling(1.0, 1.0, 10)  # sampled: each row from its own stream
    widths = []
    forward = model.forward

    @functools.wraps(forward)  # keeps forward's signature, which names the cache argument (cache_argument)
    def recording(*args, **kwargs):
        widths.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    model.forward = recording
    together = sample_ids_pruned(model, tokenizer.pad_token_id, prompts, sampling, [], 5, keys)
    assert widths[0] == (2, max(len(group), len(other)))  # the prefill: the two distinct prompts
    assert widths[1][0] == 4  # then every row decodes (a replaced forward: decoding goes through it)
    del model.forward  # without the replaced forward, the lean decoding step (lm/decode_step.py) runs
    lean = sample_ids_pruned(model, tokenizer.pad_token_id, prompts, sampling, [], 5, keys)
    assert [s.completion_ids for s in lean] == [s.completion_ids for s in together]
    for prompt, key, sampled in zip(prompts, keys, lean):  # each row as it samples alone
        (alone,) = sample_ids_pruned(model, tokenizer.pad_token_id, [prompt], sampling, [], 5, [key])
        assert sampled.prompt_ids == prompt
        assert sampled.completion_ids == alone.completion_ids
        torch.testing.assert_close(sampled.logprobs, alone.logprobs, rtol=1e-5, atol=1e-5)
    assert lean[0].completion_ids != lean[2].completion_ids  # one prompt, three streams


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


def test_a_temperature_too_small_to_divide_by_samples_greedily():
    """Logits divided by 1e-300 overflow float32: the softmax was NaN and every token drawn noise, in both
    samplers (a recipe's temperature may be any number >= 0)."""
    from warmstart.lm.generation import sample_ids, sample_ids_pruned
    from warmstart.types import Sampling

    model, tokenizer = tiny_model()
    model.eval()
    prompts = [tokenizer(p)["input_ids"] for p in ["What is 1+1?", "carry so far 1+1"]]
    for sampler in (sample_ids_pruned, sample_ids):
        greedy = sampler(model, tokenizer.pad_token_id, prompts, Sampling(0.0, 1.0, 12), [], 0)
        for tiny in (1e-300, 1e-9):
            drawn = sampler(model, tokenizer.pad_token_id, prompts, Sampling(tiny, 1.0, 12), [], 0)
            assert [s.completion_ids for s in drawn] == [s.completion_ids for s in greedy], (sampler.__name__, tiny)
