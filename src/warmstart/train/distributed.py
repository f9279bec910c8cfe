"""Data-parallel training over the processes `torchrun` or `accelerate launch` starts (PyTorch distributed).

Every process runs the same stage on the same recipe. They draw the same rows in the same order (the row
stream is seeded alike everywhere), and each computes the gradient of its own share of every step's rows,
scaled by the step's global normalizer; the gradients are summed across processes (one all-reduce of
the flattened gradients) before clipping and the optimizer step, which every process then takes alike.
So the global batch, the schedule and the result do not depend on the number of processes (up to the
order of float additions). Only the main process (rank 0) writes: the stage's lock and manifest,
checkpoints, metrics, progress bars and the published model; the others wait on it where it builds
something they read.

Why not torch's DistributedDataParallel wrapper: the SFT step computes logits only where tokens are
scored, through the model's decoder and head rather than its forward (train/sft.py), which DDP's
reducer never sees; the explicit all-reduce is the same collective without the overlap of
communication with the backward pass, a cost that matters on fast interconnects, not on gloo here.

Backends: gloo on CPU (several processes on one machine are real distributed training, which is how it is
tested), nccl on CUDA, one GPU per process (LOCAL_RANK).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import WarmstartError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: list) -> list:
        """This process's part of `items` (every size-th one, from its rank on)."""
        return items[self.rank :: self.size]

    def gather_shares(self, mine: list) -> list:
        """Every process's `share` put back together, in the order of the list they were shared from
        (a collective: every process calls it)."""
        if self.size == 1:
            return mine
        shares: list = [None] * self.size
        dist.all_gather_object(shares, mine)
        whole = []
        for index in range(max(len(s) for s in shares)):
            whole += [s[index] for s in shares if index < len(s)]
        return whole

    def agree(self, value):
        """The main process's `value`, everywhere (a collective: every process calls it)."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def total(self, value: float) -> float:
        """The sum of `value` over the processes."""
        if self.size == 1:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item())


SINGLE = World()


def launched_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def join(device: torch.device) -> World:
    """The process group `torchrun` / `accelerate launch` described in the environment, joined once per
    process; a single process is the plain World."""
    if launched_size() == 1:
        return SINGLE
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # this process's GPU, before NCCL picks one
        # gloo for CPU tensors (the object broadcasts, scalar totals), NCCL for the gradients on a GPU
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    world = World(dist.get_rank(), dist.get_world_size())
    if not world.main:  # one voice: the main process says what the stage does; warnings still show
        logging.getLogger("warmstart").setLevel(logging.WARNING)
    return world


def finish(world: World) -> None:
    """The end of a multi-process stage: every process waits until the main one has written its outputs,
    then leaves the process group (a process that exits with gloo's threads still up aborts, and torchrun
    would take that for a failure and stop the main one mid-write)."""
    if world.size == 1:
        return
    dist.barrier()
    dist.destroy_process_group()


def abandon(world: World) -> None:
    """Leave the process group without waiting (this process failed)."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def check_divisible(world: World, rows_per_step: int, key: str, knobs: str) -> None:
    """A process with no rows of its own in a step would only wait: more processes than rows is an error."""
    if world.size > rows_per_step:
        raise WarmstartError(
            f"{key}: {world.size} processes but a step has only {rows_per_step} rows "
            f"({knobs}): raise them or start fewer processes"
        )


def sum_gradients(model: torch.nn.Module, world: World) -> None:
    """Each trained parameter's gradient summed over the processes, in one collective."""
    if world.size == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:  # a parameter this process's rows did not reach: its share is zero
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()


class Follower:
    """What a stage's bookkeeping is on a process other than the main one: nothing is locked or written."""

    def __init__(self):
        self.done, self.summary = False, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def stage_or_follower(world: World, stage) -> contextlib.AbstractContextManager:
    return stage if world.main else Follower()


@contextlib.contextmanager
def silent_bar():
    """A progress bar's stand-in on the other processes: the main one shows the progress."""
    yield lambda *args, **kwargs: None


class SilentTracker:
    def log(self, *args, **kwargs) -> None:
        return None


@contextlib.contextmanager
def silent_tracker():
    """The metrics tracker's stand-in on the other processes: only the main one writes metrics."""
    yield SilentTracker()
