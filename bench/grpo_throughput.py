"""GRPO throughput on this machine: rollout tokens/s and training tokens/s per step.

    python bench/grpo_throughput.py [MODEL_DIR] [--steps 5] [--tasks 16] [--group 8] [--max-new 128]

Without MODEL_DIR a tiny Llama (the demo's student shape) is built and trained for nothing: it
generates until max_new tokens, the worst case for rollout time. Reports medians over steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from warmstart.config import GrpoConfig, TinyModelConfig
from warmstart.envs.arithmetic import Arithmetic
from warmstart.lm.chat import stop_token_ids
from warmstart.lm.generation import sample_ids_pruned
from warmstart.lm.models import load_model_and_tokenizer
from warmstart.lm.rollout import run_episodes
from warmstart.lm.tinymodel import save_tiny_student
from warmstart.train.grpo import Group, batch_tensors, update
from warmstart.types import Sampling

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?")
    parser.add_argument("--steps", type=harness.positive_int, default=5)
    parser.add_argument("--tasks", type=harness.positive_int, default=16)
    parser.add_argument("--group", type=harness.positive_int, default=8)
    parser.add_argument("--max-new", type=harness.positive_int, default=128)
    args = parser.parse_args()
    env = Arithmetic()
    tasks = env.tasks("train", args.tasks * args.steps, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = (
            Path(args.model)
            if args.model
            else save_tiny_student([t.prompt[0].content for t in tasks], Path(tmp) / "tiny", TinyModelConfig(), seed=0)
        )
        model, tokenizer = load_model_and_tokenizer(path, "model")
    stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    cfg = GrpoConfig(group_size=args.group, max_new_tokens=args.max_new)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rollout_rates, train_rates, step_times = [], [], []
    for step in range(args.steps):
        batch_tasks = tasks[step * args.tasks : (step + 1) * args.tasks]
        starts = [(t, i) for t in batch_tasks for i in range(args.group)]
        model.eval()
        t0 = time.perf_counter()
        sampled = run_episodes(
            model,
            tokenizer,
            env,
            starts,
            Sampling(1.0, 1.0, args.max_new),
            stops,
            seed=step,
            max_turns=1,
            sampler=sample_ids_pruned,
        )
        t1 = time.perf_counter()
        generated = sum(sum(e.policy_mask) for e in sampled)
        # Alternating rewards give every group variance, so every sample is trained on.
        groups = [
            Group(
                sampled[g * args.group : (g + 1) * args.group],
                [float(i % 2) for i in range(args.group)],
                [True] * args.group,
            )
            for g in range(args.tasks)
        ]
        batch = batch_tensors(groups, cfg, tokenizer.pad_token_id)
        model.train()
        t2 = time.perf_counter()
        update(model, None, optimizer, batch, cfg)
        t3 = time.perf_counter()
        trained = int(batch["input_ids"].numel()) * (
            cfg.updates_per_batch + (cfg.updates_per_batch > 1)
        )  # updates (+ old log-probs)
        rollout_rates.append(generated / (t1 - t0))
        train_rates.append(trained / (t3 - t2))
        step_times.append(t3 - t0)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model {path.name if args.model else 'tiny'}: {params / 1e6:.2f} M parameters, threads {torch.get_num_threads()}"
    )
    print(f"{args.tasks} tasks x group {args.group}, max_new_tokens {args.max_new}, {args.steps} steps (medians)")
    print(f"rollout: {statistics.median(rollout_rates):,.0f} generated tokens/s")
    print(f"training: {statistics.median(train_rates):,.0f} tokens/s (padded, forward+backward, incl. old log-probs)")
    print(f"step: {statistics.median(step_times):.2f} s")


if __name__ == "__main__":
    harness.report_errors(main)
