"""The environment's own solver as a policy: deterministic per (seed, task, sample index)."""

from __future__ import annotations

import random

from ..envs.base import Environment
from ..types import Request, Sampling, Trajectory


class ReferencePolicy:
    spec = "reference"
    request_tally = None  # no requests: its cost is compute time

    def __init__(self, env: Environment):
        self.env = env

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        out = []
        for r in requests:
            rng = random.Random(f"{seed}/{r.task.id}/{r.sample_index}")
            trajectory = self.env.reference(r.task, rng)
            trajectory.sample_index = r.sample_index
            trajectory.provenance.seed = seed
            trajectory.finish_reason = "stop"
            out.append(trajectory)
        return out
