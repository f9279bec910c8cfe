"""The environment protocol: a task family with a verifier (ARCHITECTURE.md, "Environments")."""

from __future__ import annotations

import hashlib
from typing import Protocol

from ..types import Message, Task, ToolCall, Trajectory, Verdict


class Environment(Protocol):
    name: str
    tools: tuple[dict, ...]  # OpenAI tool schemas; empty for a single-turn environment
    verify_workers: int  # >1: verification runs in subprocesses, so a process pool may run it in parallel

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        """`n` distinct tasks of `split`, the same for the same seed; train and eval never share one."""

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        """Score a finished trajectory. The same function filters teacher data, rewards RL and evaluates."""

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        """Run one well-formed tool call (known name, JSON-object arguments) and return the tool's reply.
        `messages` is the conversation so far: an environment with state (files written earlier)
        rebuilds it from there, so environments stay stateless and episodes can run in any order.
        Bad argument values are the policy's mistake: answer them with an error text, never raise."""

    def reference(self, task: Task, rng) -> Trajectory:
        """A trajectory from the environment's own solver: the teacher of the offline demo."""


def hash_split(key: str, eval_buckets: int) -> str:
    """ "eval" for one key in `eval_buckets`, by a hash of the key: splits disjoint by construction."""
    return "eval" if hashlib.sha256(key.encode()).digest()[0] % eval_buckets == 0 else "train"


def final_assistant_text(trajectory: Trajectory) -> str | None:
    """Content of the last assistant message, or None when the policy never answered."""
    for message in reversed(trajectory.messages):
        if message.role == "assistant":
            return message.content
    return None


def field_problem(fields: dict, wanted: dict[str, tuple[type, ...]], where: str) -> str | None:
    """Why a task's `hidden` or `meta` (`where`) lacks what its environment reads (a key missing, a value
    of another type), or None: checked when tasks come from a user's file (stages/common.py load_tasks)."""
    for key, types in wanted.items():
        if key not in fields:
            return f"{where}.{key} is missing"
        value = fields[key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            return f"{where}.{key} must be {names}, not {type(value).__name__} ({value!r:.40})"
    return None
