"""The policy interface: turn a batch of requests (task, sample index) into trajectories."""

from __future__ import annotations

from typing import Protocol

from ..types import Request, Sampling, Trajectory


class Policy(Protocol):
    spec: str
    # An API policy's count of requests sent, failed, retried and answered from its cache (`api.RequestTally`);
    # None for a policy that sends none (the reference solver, a local model).
    request_tally: object | None

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        """One trajectory per request, in order; unverified. A failure is a trajectory with `error` set."""
