"""The policy's rollouts for GRPO and its task filter: sampled and verified, each process of a
data-parallel run taking its share (train/distributed.py).

Every process decides the same episodes to run (same tasks, same seeds); each samples and verifies its
share, and all of them then hold every episode and verdict in the original order. A row's tokens come
from its own random stream (`lm.generation.sample_ids_pruned`), so the rollouts are the same whatever
the number of processes.
"""

from __future__ import annotations

from ..envs.verification import Verifier
from ..lm.generation import sample_ids_pruned
from ..lm.rollout import Episode, run_episodes
from ..types import Provenance, Sampling, Task, Trajectory, Verdict
from .distributed import SINGLE, World


def as_trajectory(episode: Episode) -> Trajectory:
    return Trajectory(
        task_id=episode.task.id,
        policy="grpo",
        messages=episode.messages,
        finish_reason=episode.finish_reason,
        provenance=Provenance(provider="hf", model="grpo", created=0.0),
    )


def sample_and_verify(
    model,
    tokenizer,
    env,
    starts: list[tuple[Task, int]],
    sampling: Sampling,
    stop_ids,
    seed: int,
    max_turns: int,
    verifier: Verifier,
    world: World = SINGLE,
    sampler=sample_ids_pruned,
) -> tuple[list[Episode], list[Verdict]]:
    """One episode per (task, sample index) of `starts`, with its verdict, in the order of `starts`.
    `sampler`: the local decoding loop, or a rollout server's (policies/rollout_server.py)."""
    mine = world.share(starts)
    episodes = run_episodes(model, tokenizer, env, mine, sampling, stop_ids, seed, max_turns, sampler=sampler)
    verdicts = verifier.verify_all([(e.task, as_trajectory(e)) for e in episodes]) if episodes else []
    pairs = world.gather_shares(list(zip(episodes, verdicts)))
    return [e for e, _ in pairs], [v for _, v in pairs]
