"""A local transformers model as a policy: batched multi-turn rollouts (`rollout.py`)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from ..chat import stop_token_ids
from ..models import load_model_and_tokenizer
from ..rollout import Episode, run_episodes
from ..types import Provenance, Trajectory
from .base import Request, Sampling


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
            sampling={"temperature": sampling.temperature, "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens},
            seed=seed,
            created=time.time(),
        ),
    )


class HFPolicy:
    def __init__(self, path: Path, key: str, env, max_turns: int):
        self.spec = f"hf:{path}"
        self.env, self.max_turns = env, max_turns
        self.model, self.tokenizer = load_model_and_tokenizer(path, key)
        self.model.eval()
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        starts = [(r.task, r.sample_index) for r in requests]
        episodes = run_episodes(self.model, self.tokenizer, self.env, starts, sampling, self.stop_ids, batch_seed(seed, requests), self.max_turns)
        return [episode_trajectory(e, self.spec, sampling, seed) for e in episodes]
