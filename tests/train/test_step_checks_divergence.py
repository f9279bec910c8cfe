"""A diverged step stops the run: a cross-entropy above 2 ln V, a gradient norm that is not finite or is 0
where the loss has a signal, a GRPO update that moved its sampled tokens further than a uniform guess is;
a healthy step (a freshly initialised model's included) raises none (train/step_checks.py)."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from helpers import tiny_model
from warmstart.config import GrpoConfig, SftConfig
from warmstart.errors import WarmstartError
from warmstart.lm.rollout import Episode
from warmstart.lm.scoring import sequence_logprobs
from warmstart.train.data import Example
from warmstart.train.grpo import Group, batch_tensors, check_unseen_update, update
from warmstart.train.sft import RowStream, train_step
from warmstart.train.sft import check_unseen_update as check_unseen_sft_update
from warmstart.train.step_checks import StepChecks, output_vocabulary


def checks(step: int = 1, stage: str = "sft", after_update: bool = False) -> StepChecks:
    return StepChecks(stage, step, f"{stage}.lr", 300, after_update)


def examples(tokenizer, n: int = 6) -> list[Example]:
    rng = random.Random(0)
    out = []
    for length in (9, 23, 14, 30, 7, 18)[:n]:
        ids = [rng.randrange(5, len(tokenizer)) for _ in range(length)]
        out.append(Example(ids, [0] * (length // 2) + [1] * (length - length // 2)))
    return out


def sft_run(lr: float, steps: int):
    """A fresh tiny model trained `steps` SFT steps at `lr`, each step checked; (model, stream, cfg, tokenizer)."""
    model, tokenizer = tiny_model()
    cfg = SftConfig(seq_len=64, rows_per_micro_batch=2, kd_weight=0.0, lr=lr, warmup_steps=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    stream = RowStream(examples(tokenizer), cfg, seed=0)
    for step in range(1, steps + 1):
        train_step(model, optimizer, stream, cfg, tokenizer.pad_token_id, checks=checks(step))
    return model, stream, cfg, tokenizer


def test_the_bound_is_twice_a_uniform_guess_and_names_stage_step_value_and_lr_key():
    checks().cross_entropy(2 * math.log(300) - 1e-3)
    with pytest.raises(WarmstartError) as error:
        checks(step=4).cross_entropy(26.91)
    message = str(error.value)
    assert message.startswith("sft: the loss is 26.91 at step 4, above 2 ln V = 11.41 (V = 300")
    assert "training diverged (a lower sft.lr" in message and "\n" not in message
    with pytest.raises(WarmstartError, match="sft: the loss is nan at step 3: training diverged"):
        checks(step=3).cross_entropy(float("nan"))


@pytest.mark.parametrize("norm", [float("nan"), float("inf")])
def test_a_gradient_norm_that_is_not_finite_stops_the_step(norm):
    with pytest.raises(WarmstartError, match=rf"grpo: the gradient norm is {norm} at step 2: training diverged"):
        checks(step=2, stage="grpo").gradient_norm(torch.tensor(norm), lambda: True)


def test_a_zero_gradient_stops_only_where_the_loss_has_a_signal_which_is_asked_only_then():
    asked = []
    checks().gradient_norm(torch.tensor(0.5), lambda: asked.append(1) or True)
    assert not asked
    checks().gradient_norm(torch.tensor(0.0), lambda: False)  # nothing to learn: no alarm
    with pytest.raises(WarmstartError, match="the gradient is 0 at step 1 though the loss has a signal"):
        checks().gradient_norm(torch.tensor(0.0), lambda: True)


def test_a_fresh_model_starts_near_a_uniform_guess_far_below_the_bound():
    model, tokenizer = tiny_model()
    cfg = SftConfig(seq_len=64, rows_per_micro_batch=2, kd_weight=0.0)
    loss, _ = train_step(
        model,
        torch.optim.AdamW(model.parameters(), lr=cfg.lr),
        RowStream(examples(tokenizer), cfg, seed=0),
        cfg,
        tokenizer.pad_token_id,
        checks=StepChecks("sft", 1, "sft.lr", output_vocabulary(model)),
    )
    assert abs(loss - math.log(output_vocabulary(model))) < 0.1


def test_sft_at_lr_1e4_stops_at_the_step_whose_gradient_no_longer_reaches_the_weights():
    # The first update moves every weight by ~1e4: a norm layer's variance overflows, its output is 0, the
    # logits are 0 (loss exactly ln 300) and the next step's gradient is 0.
    with pytest.raises(WarmstartError, match="sft: the gradient is 0 at step 2 though the loss has a signal"):
        sft_run(lr=1e4, steps=3)


def test_sft_at_lr_10_stops_at_a_loss_far_above_a_uniform_guess():
    with pytest.raises(WarmstartError, match=r"sft: the loss is [0-9.e+]+ at step 2, above 2 ln V = 11.41"):
        sft_run(lr=10.0, steps=3)


@pytest.mark.parametrize("lr, says", [(10.0, r"the loss is [0-9.e+]+ after"), (1e4, "the gradient is 0 after")])
def test_the_last_update_is_checked_as_a_next_step_would_check_it(lr, says):
    model, stream, cfg, tokenizer = sft_run(lr=lr, steps=1)  # its own checks saw only the loss before its update
    weights, position = copy.deepcopy(model.state_dict()), stream.position
    with pytest.raises(WarmstartError, match=f"sft: {says} the update of step 1"):
        check_unseen_sft_update(model, stream, cfg, tokenizer.pad_token_id, checks(after_update=True))
    assert stream.position == position  # the stream is not moved, the weights not updated, no gradient left
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_healthy_last_update_passes_and_leaves_the_random_state_alone():
    model, stream, cfg, tokenizer = sft_run(lr=2e-3, steps=2)
    dropping = [m for m in model.modules() if hasattr(m, "attention_dropout")]
    for attention in dropping:  # the tiny model has no dropout: with some, a check's forward draws
        attention.attention_dropout = 0.1
    state = torch.get_rng_state()
    train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), stream.ahead(), cfg, tokenizer.pad_token_id)
    assert dropping and not torch.equal(torch.get_rng_state(), state)  # a step draws: the check below means something
    state = torch.get_rng_state()
    check_unseen_sft_update(model, stream, cfg, tokenizer.pad_token_id, checks(step=2, after_update=True))
    assert torch.equal(torch.get_rng_state(), state)


def grpo_batch(tokenizer, cfg: GrpoConfig, rewards=(1.0, 0.0, 1.0, 0.0)) -> dict:
    """One group of completions, with the log-probs the fresh tiny model (the sampler) gives them."""
    prompt = tokenizer("What is 1+1?")["input_ids"]
    completions = [tokenizer(text)["input_ids"] for text in ("Answer: 2", "Answer: 3", "so far 2", "carry 1")]
    episodes = [Episode(None, 0, [], prompt + ids, [0] * len(prompt) + [1] * len(ids)) for ids in completions]
    batch = batch_tensors([Group(episodes, list(rewards), [True] * 4)], cfg, tokenizer.pad_token_id)
    with torch.no_grad():  # position t of sampler_logp holds log p(token t)
        scored = sequence_logprobs(tiny_model()[0], batch)
    batch["sampler_logp"] = torch.cat([torch.full((len(episodes), 1), float("nan")), scored], dim=1)
    return batch


@pytest.mark.parametrize("lr", [1e-4, 1e-2])
def test_healthy_grpo_updates_pass_their_checks_and_the_check_of_the_last(lr):
    model, tokenizer = tiny_model()
    cfg = GrpoConfig(updates_per_batch=2, lr=lr)
    batch = grpo_batch(tokenizer, cfg)
    update(model, None, torch.optim.AdamW(model.parameters(), lr=lr), batch, cfg, checks=checks(stage="grpo"))
    check_unseen_update(model, batch, cfg, checks(stage="grpo", after_update=True))


def test_a_grpo_update_that_moves_the_policy_further_than_a_uniform_guess_stops_the_next_update():
    model, tokenizer = tiny_model()
    cfg = GrpoConfig(updates_per_batch=2, lr=100.0)
    batch = grpo_batch(tokenizer, cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    with pytest.raises(
        WarmstartError, match=r"grpo: the sampled tokens' log-prob fell by [0-9.e+]+ per token at step 1"
    ):
        update(model, None, optimizer, batch, cfg, checks=checks(stage="grpo"))


@pytest.mark.parametrize(
    "lr, says",
    [(100.0, r"the sampled tokens' log-prob fell by [0-9.e+]+ per token after"), (1e4, "the gradient is 0 after")],
)
def test_the_last_grpo_update_is_checked_on_its_batch(lr, says):
    model, tokenizer = tiny_model()
    cfg = GrpoConfig(updates_per_batch=1, lr=lr)
    batch = grpo_batch(tokenizer, cfg)
    update(model, None, torch.optim.AdamW(model.parameters(), lr=lr), batch, cfg, checks=checks(stage="grpo"))
    with pytest.raises(WarmstartError, match=f"grpo: {says} the update of step 1"):
        check_unseen_update(model, batch, cfg, checks(stage="grpo", after_update=True))
    assert all(p.grad is None for p in model.parameters())


def test_a_zero_gradient_without_a_signal_is_no_alarm():
    # A flat group kept (advantages 0) under a KL term to a reference equal to the policy: the gradient is
    # exactly 0 and there is nothing to learn, which is not divergence.
    model, tokenizer = tiny_model()
    cfg = GrpoConfig(updates_per_batch=1, kl_weight=0.1, drop_zero_variance=False)
    batch = grpo_batch(tokenizer, cfg, rewards=(1.0, 1.0, 1.0, 1.0))
    reference = copy.deepcopy(model)
    update(model, reference, torch.optim.AdamW(model.parameters(), lr=1e-3), batch, cfg, checks=checks(stage="grpo"))
    check_unseen_update(model, batch, cfg, checks(stage="grpo", after_update=True))
