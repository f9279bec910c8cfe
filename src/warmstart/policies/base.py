"""The policy interface: turn a batch of requests (task, sample index) into trajectories."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..types import Task, Trajectory


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Request:
    task: Task
    sample_index: int


class Policy(Protocol):
    spec: str

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        """One trajectory per request, in order; unverified. A failure is a trajectory with `error` set."""
