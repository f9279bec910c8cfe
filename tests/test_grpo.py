"""GRPO: the update moves probability toward rewarded samples; flat groups and infra errors carry no signal."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from helpers import curated_run
from warmstart.config import GrpoConfig, TinyModelConfig
from warmstart.rollout import Episode
from warmstart.stages import grpo, sft
from warmstart.stages.grpo import Group, batch_tensors, sequence_logprobs, update
from warmstart.tinymodel import build_tiny_llama, train_tokenizer


def tiny_model():
    tokenizer = train_tokenizer(["What is 1+1? Answer: 2 carry so far"] * 4, 300)
    cfg = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=300)
    return build_tiny_llama(tokenizer, cfg, seed=0), tokenizer


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


def test_a_cold_start_gets_only_flat_groups_and_no_update(tmp_path):
    # An untrained model never answers correctly: every group is all-zero reward, so dynamic sampling
    # drops them all and the weights do not move. This is the waste a warm start avoids.
    recipe = curated_run(
        tmp_path, "sft.steps=1", "grpo.init=base", "grpo.steps=2", "grpo.tasks_per_step=2", "grpo.group_size=2",
        "grpo.max_new_tokens=12", "grpo.max_refills=1", "grpo.checkpoint_every=1",
    )
    sft.run(recipe)  # builds models/base
    out = grpo.run(recipe)
    history = json.loads((tmp_path / "manifest.json").read_text())["stages"]["grpo:student-grpo"]["history"]
    assert [h["zero_variance_fraction"] for h in history] == [1.0, 1.0]
    assert [h["groups_used"] for h in history] == [0, 0]
    before, after = load_file(tmp_path / "models" / "base" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_killed_rl_run_resumes_as_if_uninterrupted(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from helpers import write_recipe_file
    from warmstart.checkpoint import MARKER

    child = Path(__file__).with_name("grpo_child.py")
    settings = ["sft.steps=1", "grpo.init=base", "grpo.steps=8", "grpo.tasks_per_step=2", "grpo.group_size=4",
                "grpo.max_new_tokens=10", "grpo.checkpoint_every=2", "grpo.keep_checkpoints=5", "grpo.lr=1e-2"]
    files = {}
    for name in ("whole", "cut"):
        recipe = curated_run(tmp_path / name, *settings)
        sft.run(recipe)
        files[name] = write_recipe_file(tmp_path / f"{name}.toml", recipe)
    subprocess.run([sys.executable, str(child), str(files["whole"])], check=True, capture_output=True)

    command = [sys.executable, str(child), str(files["cut"])]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "cut" / "checkpoints" / "student-grpo" / "step-4" / MARKER
    deadline = time.time() + 120
    while not marker.exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "cut" / "models" / "student-grpo").exists(), "killed too late"
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr

    a = load_file(tmp_path / "whole" / "models" / "student-grpo" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "models" / "student-grpo" / "model.safetensors")
    base = load_file(tmp_path / "whole" / "models" / "base" / "model.safetensors")
    assert any(not torch.equal(a[k], base[k]) for k in a), "RL never updated the policy: the test would prove nothing"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    history = [json.loads(p.read_text())["stages"]["grpo:student-grpo"]["history"] for p in (tmp_path / "whole" / "manifest.json", tmp_path / "cut" / "manifest.json")]
    drop_time = [[{k: v for k, v in h.items() if k != "seconds"} for h in run] for run in history]
    assert drop_time[0] == drop_time[1]  # same rewards, losses and compute step by step


def test_pruned_sampling_is_generate_when_greedy():
    from warmstart.generation import sample_ids, sample_ids_pruned
    from warmstart.policies.base import Sampling

    model, tokenizer = tiny_model()
    model.eval()
    prompts = [tokenizer(p)["input_ids"] for p in ["What is 1+1?", "Answer: 2", "carry so far 1+1"]]  # unequal lengths: left padding
    stops = [tokenizer.convert_tokens_to_ids("a")]  # some rows stop early, others run to the limit
    sampling = Sampling(0.0, 1.0, 12)
    ours, theirs = (f(model, tokenizer.pad_token_id, prompts, sampling, stops, 0) for f in (sample_ids_pruned, sample_ids))
    assert [(s.completion_ids, s.stopped) for s in ours] == [(s.completion_ids, s.stopped) for s in theirs]


def test_chunked_update_equals_one_batch_update():
    import copy

    from warmstart.losses import clipped_policy_loss
    from warmstart.stages import grpo as grpo_stage

    model, tokenizer = tiny_model()
    torch.manual_seed(0)
    episodes = [sampled([5] * 4, torch.randint(10, 200, (n,)).tolist()) for n in (3, 40, 7, 25, 60, 2, 11, 33)]
    groups = [Group(episodes[:4], [1.0, 0.0, 0.0, 1.0], [True, True, False, True]), Group(episodes[4:], [1.0] * 4, [True] * 4)]
    for normalization in ("token", "sequence", "constant"):
        cfg = GrpoConfig(updates_per_batch=1, normalization=normalization, drop_zero_variance=False)
        batch = batch_tensors(groups, cfg, tokenizer.pad_token_id)
        ours, ref = copy.deepcopy(model), copy.deepcopy(model)
        assert len(grpo_stage.micro_batches(batch["lengths"], 64)) > 2  # several chunks
        update(ours, None, torch.optim.SGD(ours.parameters(), lr=1.0), batch, cfg, chunk_tokens=64)
        logp = sequence_logprobs(ref, batch)
        loss = clipped_policy_loss(logp, logp.detach(), batch["advantages"], batch["loss_mask"][:, 1:], cfg.clip_low, cfg.clip_high, normalization, cfg.max_new_tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), cfg.grad_clip)
        torch.optim.SGD(ref.parameters(), lr=1.0).step()
        for a, b in zip(ours.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
