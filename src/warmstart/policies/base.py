"""The policy interface: turn a batch of requests (task, sample index) into trajectories."""

from __future__ import annotations

from typing import Protocol

from ..types import Request, Sampling, Trajectory


class Policy(Protocol):
    spec: str

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        """One trajectory per request, in order; unverified. A failure is a trajectory with `error` set."""
