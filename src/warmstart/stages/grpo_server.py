"""GRPO's groups from a rollout server (`grpo.rollout_server`), synchronously or one step off policy.

Synchronous: each step checks the server still serves the trainer's policy, samples there, trains, and
publishes the new weights (train/weight_sync.py): the server's policy version advances once per step.

One step off (`grpo.async = 1`): while step t trains on its batch, the batch of step t+1 is sampled
(and verified) in a second thread by the server, which still holds the weights before step t's update;
when both are done, step t's weights are published. Each batch is then sampled by the policy one update
behind the one that trains on it (staleness 1, never more), which truncated importance sampling corrects
(train/mismatch.py). The server is another process, so sampling and training overlap in time; the
thread only waits on HTTP and the verifier. Not with several processes (the prefetch's collectives would
interleave with the update's) or the learnable-task filter (its refresh samples with the local model).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

from ..errors import WarmstartError
from ..policies.rollout_server import RolloutServer, connect_rollout_server
from ..train import lora
from ..train.distributed import World
from ..train.weight_sync import WeightSync

Batch = tuple  # (groups, next task cursor, stats), as train.grpo.collect returns them


class ServerRollouts:
    """Where a step's groups come from when a server samples them, and what follows each update."""

    def __init__(self, server: RolloutServer, sync: WeightSync, collect_at: Callable[[int, int], Batch], ahead: bool):
        self.server, self.sync, self.collect_at, self.ahead = server, sync, collect_at, ahead
        self.pending: Future | None = None
        self.prefetch = ThreadPoolExecutor(1, thread_name_prefix="grpo-prefetch") if ahead else None

    def take(self, step: int, cursor: int, last_step: int) -> tuple[Batch, int]:
        """The step's batch and the policy version that sampled it; with `ahead`, the next step's batch
        starts sampling now (not after the last step)."""
        if self.pending is None:
            batch, version = self._sampled(step, cursor)
        else:
            batch, version = self.pending.result()
            self.pending = None
        if self.ahead and step < last_step:
            self.pending = self.prefetch.submit(self._sampled, step + 1, batch[1])
        return batch, version

    def after_update(self, step: int) -> None:
        """Step `step`'s weights to the server, once the batch sampled ahead (with the old ones) is done."""
        if self.pending is not None:
            wait([self.pending])
        self.sync.publish(step)

    def close(self) -> None:
        # The server first: that ends the prefetch's waits on its requests at once (an interrupted run
        # would otherwise wait out the batch sampled ahead before it could exit), so waiting for the
        # prefetch thread after it takes no longer than what it was doing besides HTTP.
        self.server.close()
        if self.prefetch is not None:
            if self.pending is not None:
                self.pending.cancel()
            self.prefetch.shutdown(wait=True)

    def _sampled(self, step: int, cursor: int) -> tuple[Batch, int]:
        self.sync.check()
        version = self.sync.version
        batch = self.collect_at(step, cursor)
        # And after: a server restarted while the batch was sampled serves its first weights under the same
        # name, and the client's retries reach it (a batch of the step-0 policy had been trained on as v3).
        self.sync.check()
        return batch, version


def connect(recipe, model, world: World, done: int, collect_at: Callable[[int, int], Batch]) -> ServerRollouts:
    """The run's server rollouts, the server holding the trainer's weights (published as version `done`)."""
    cfg = recipe.grpo
    if cfg.async_steps and world.size > 1:
        raise WarmstartError("grpo.async = 1 runs in one process (its prefetch cannot share the collectives)")
    if cfg.async_steps and cfg.task_filter == "learnable":
        raise WarmstartError('grpo.async = 1 with task_filter = "learnable": the filter samples with the local model')
    server = connect_rollout_server(cfg.rollout_server, recipe.api)  # every process samples its share there
    directory = Path(recipe.run.dir) / "rollout-weights" / cfg.output
    sync = WeightSync(server, model, lora.enabled(cfg.lora), directory, world)
    sync.publish(done)
    return ServerRollouts(server, sync, collect_at, bool(cfg.async_steps))
