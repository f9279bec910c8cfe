"""A local transformers model as a policy: batched multi-turn rollouts (`lm/rollout.py`).

With `top_logprobs` > 0 (`api.top_logprobs`), each trajectory also records, for every token of each
of its turns (end-of-turn token included), the model's log-prob of it and of its `k` likeliest
alternatives, by token id: what sparse KD trains on (`distill/topk.py`), in the shape an API's log-probs
take, with ids instead of token text since no tokenizer needs to be bridged.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path

from ..lm.chat import assistant_spans, check_template, stop_token_ids
from ..lm.models import load_model_and_tokenizer
from ..lm.rollout import Episode, run_episodes
from ..lm.scoring import score_tokens
from ..types import Provenance, Request, Sampling, Trajectory


def batch_seed(seed: int, requests: list[Request]) -> int:
    first = f"{seed}/{requests[0].task.id}/{requests[0].sample_index}/{len(requests)}"
    return int.from_bytes(hashlib.sha256(first.encode()).digest()[:4], "little")


def episode_trajectory(episode: Episode, spec: str, sampling: Sampling, seed: int) -> Trajectory:
    return Trajectory(
        task_id=episode.task.id,
        sample_index=episode.sample_index,
        policy=spec,
        messages=episode.messages,
        usage=episode.usage,
        finish_reason=episode.finish_reason,
        provenance=Provenance(
            provider="hf",
            model=spec.removeprefix("hf:"),
            sampling=asdict(sampling),
            seed=seed,
            created=time.time(),
        ),
    )


def turn_logprobs(model, pad_id: int, episode: Episode, k: int) -> list[list[dict]]:
    """Per policy turn, per token: {"id", "logprob", "top_logprobs": [{"id", "logprob"}, ...]}.
    One forward pass per episode (a batch of them would hold [B, T, vocabulary] log-probs at once)."""
    [scored] = score_tokens(model, pad_id, [episode.ids], [1], [k])  # scored[t - 1] is token t's
    return [
        [
            {"id": s.token_id, "logprob": s.logprob, "top_logprobs": [{"id": i, "logprob": v} for i, v in s.top]}
            for s in scored[start - 1 : end - 1]
        ]
        for start, end in assistant_spans(episode.policy_mask)
    ]


class HFPolicy:
    request_tally = None  # no requests: its cost is compute time

    def __init__(self, path: str | Path, key: str, env, max_turns: int, top_logprobs: int = 0, device=None):
        self.spec = f"hf:{path}"
        self.env, self.max_turns, self.top_logprobs = env, max_turns, top_logprobs
        self.model, self.tokenizer = load_model_and_tokenizer(path, key, device)
        check_template(self.tokenizer, key)  # a conversation is rendered through it, every turn
        self.model.eval()
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        starts = [(r.task, r.sample_index) for r in requests]
        episodes = run_episodes(
            self.model,
            self.tokenizer,
            self.env,
            starts,
            sampling,
            self.stop_ids,
            batch_seed(seed, requests),
            self.max_turns,
        )
        trajectories = [episode_trajectory(e, self.spec, sampling, seed) for e in episodes]
        if self.top_logprobs:
            for trajectory, episode in zip(trajectories, episodes):
                trajectory.logprobs = turn_logprobs(self.model, self.tokenizer.pad_token_id, episode, self.top_logprobs)
        return trajectories
