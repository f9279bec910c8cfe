"""The GRPO update: it moves probability toward rewarded samples, infra errors carry no signal, chunks add up to the whole batch."""

from __future__ import annotations

import torch

from helpers import tiny_model
from warmstart.config import GrpoConfig
from warmstart.lm.rollout import Episode
from warmstart.lm.scoring import sequence_logprobs
from warmstart.train.grpo import Group, batch_tensors, micro_batches, update


def sampled(prompt: list[int], completion: list[int]) -> Episode:
    return Episode(None, 0, [], prompt + completion, [0] * len(prompt) + [1] * len(completion))


def completion_logprob(model, batch, row: int) -> float:
    with torch.no_grad():
        logp = sequence_logprobs(model, batch)
    return float((logp[row] * batch["loss_mask"][row, 1:]).sum())


def test_update_moves_probability_toward_the_rewarded_sample():
    model, tokenizer = tiny_model()
    prompt = tokenizer("What is 1+1?")["input_ids"]
    good, bad = tokenizer("Answer: 2")["input_ids"], tokenizer("Answer: 3")["input_ids"]
    group = Group([sampled(prompt, good), sampled(prompt, bad)], rewards=[1.0, 0.0], valid=[True, True])
    cfg = GrpoConfig(updates_per_batch=4, lr=1e-2)
    batch = batch_tensors([group], cfg, tokenizer.pad_token_id)
    before = [completion_logprob(model, batch, r) for r in (0, 1)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    update(model, None, optimizer, batch, cfg)
    after = [completion_logprob(model, batch, r) for r in (0, 1)]
    # The shared prefix "Answer: " gets opposite pushes from the two samples; what must move is the gap.
    assert after[0] - after[1] > before[0] - before[1] + 0.5


def test_an_infra_error_is_masked_out_not_scored():
    _, tokenizer = tiny_model()
    prompt = tokenizer("What is 1+1?")["input_ids"]
    samples = [sampled(prompt, tokenizer("Answer: 2")["input_ids"])] * 3
    group = Group(samples, rewards=[1.0, 0.0, 0.0], valid=[True, False, True])
    batch = batch_tensors([group], GrpoConfig(), tokenizer.pad_token_id)
    assert batch["loss_mask"][0].sum() > 0 and batch["loss_mask"][1].sum() == 0 and batch["loss_mask"][2].sum() > 0
    # The baseline comes from the two valid samples only: +1 and -1, and 0 for the masked one.
    torch.testing.assert_close(batch["advantages"], torch.tensor([1.0, 0.0, -1.0]), atol=1e-5, rtol=0)


def test_chunked_update_equals_one_batch_update():
    import copy

    from warmstart.train.losses import clipped_policy_loss

    model, tokenizer = tiny_model()
    torch.manual_seed(0)
    episodes = [sampled([5] * 4, torch.randint(10, 200, (n,)).tolist()) for n in (3, 40, 7, 25, 60, 2, 11, 33)]
    groups = [
        Group(episodes[:4], [1.0, 0.0, 0.0, 1.0], [True, True, False, True]),
        Group(episodes[4:], [1.0] * 4, [True] * 4),
    ]
    for normalization in ("token", "sequence", "constant"):
        cfg = GrpoConfig(updates_per_batch=1, normalization=normalization, drop_zero_variance=False)
        batch = batch_tensors(groups, cfg, tokenizer.pad_token_id)
        ours, ref = copy.deepcopy(model), copy.deepcopy(model)
        assert len(micro_batches(batch["lengths"], 64)) > 2  # several chunks
        update(ours, None, torch.optim.SGD(ours.parameters(), lr=1.0), batch, cfg, chunk_tokens=64)
        logp = sequence_logprobs(ref, batch)
        loss = clipped_policy_loss(
            logp,
            logp.detach(),
            batch["advantages"],
            batch["loss_mask"][:, 1:],
            cfg.clip_low,
            cfg.clip_high,
            normalization,
            cfg.max_new_tokens,
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), cfg.grad_clip)
        torch.optim.SGD(ref.parameters(), lr=1.0).step()
        for a, b in zip(ours.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_two_updates_from_the_same_weights_and_batch_give_the_same_weights():
    """Reproducible from a seed: two runs of the whole update (shared prompts, chunks, clipping, AdamW)
    give bitwise the same weights. Sized as GRPO's tiny benchmark (16 prompts x 8 samples, width 128),
    where the prompts' expansion to their rows by an index (its backward adds repeated rows in an order
    of its own) made every run differ."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=322, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=256,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(0)
    groups = []
    for task in range(16):
        prompt = torch.randint(4, 322, (22 + task % 3,), generator=generator).tolist()
        samples = [
            sampled(prompt, torch.randint(4, 322, (n,), generator=generator).tolist())
            for n in torch.randint(10, 60, (8,), generator=generator).tolist()
        ]
        groups.append(Group(samples, [float(r) for r in torch.randint(0, 2, (8,), generator=generator)], [True] * 8))
    cfg = GrpoConfig(updates_per_batch=1, drop_zero_variance=False)
    batch = batch_tensors(groups, cfg, 0)
    weights = []
    for _ in range(2):
        run = copy.deepcopy(model)
        update(run, None, torch.optim.AdamW(run.parameters(), lr=1e-3), batch, cfg)
        weights.append([p.detach().clone() for p in run.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    assert not all(torch.equal(a, b.detach()) for a, b in zip(weights[0], model.parameters()))


def test_the_batch_pads_each_row_and_keeps_what_the_sampler_gave():
    """Right padding to the longest row; an invalid row's mask all 0; the sampler's log-probs where it
    gave them (nan where it gave none, a whole row of nan where they do not line up with the ids)."""
    logged = Episode(None, 0, [], [5, 6, 7, 8], [0, 0, 1, 1], [None, None, -0.5, -1.5])
    unlogged = Episode(None, 1, [], [5, 6, 9], [0, 0, 1], [])
    failed = Episode(None, 2, [], [5, 6], [0, 1], [None, -2.0])
    group = Group([logged, unlogged, failed], rewards=[1.0, 0.0, 0.0], valid=[True, True, False])
    batch = batch_tensors([group], GrpoConfig(), pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [5, 6, 9, 0], [5, 6, 0, 0]]
    assert batch["input_ids"].dtype == torch.long
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]]
    nan = float("nan")
    expected = torch.tensor([[nan, nan, -0.5, -1.5], [nan] * 4, [nan, -2.0, nan, nan]])
    assert torch.equal(batch["sampler_logp"].isnan(), expected.isnan())
    assert torch.equal(batch["sampler_logp"].nan_to_num(), expected.nan_to_num())
    assert batch["lengths"] == [4, 3, 2] and batch["scored_tokens"] == 3.0 and batch["sequences"] == 3
