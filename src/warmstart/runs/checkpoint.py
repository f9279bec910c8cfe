"""Atomic, resumable checkpoints.

A checkpoint is written to a temporary directory, its files fsynced, the directory renamed to
`step-N`, and only then a `COMPLETE` marker written: a directory without the marker is ignored, so a
kill at any moment leaves either the previous checkpoint or a new complete one. Resume takes the
newest complete checkpoint. State saved: weights (`save_pretrained`, safetensors), optimizer,
scheduler, RNG states, step and data position.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch

MARKER = "COMPLETE"


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_checkpoints(root: Path) -> list[Path]:
    if not root.exists():
        return []
    found = [p for p in root.glob("step-*") if (p / MARKER).exists() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def save(
    root: Path,
    step: int,
    model,
    tokenizer,
    optimizer,
    scheduler,
    position: dict,
    keep: int,
    states: tuple[dict, dict] | None = None,
) -> Path:
    """`states`: the model's and optimizer's state dicts where the objects do not hold them whole (a
    sharded model: train/sharding.py gathers them)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    for stale in (tmp, final):  # leftovers of a kill during an earlier attempt at this step
        if stale.exists():
            shutil.rmtree(stale)
    model_state, optimizer_state = states or (None, optimizer.state_dict())
    model.save_pretrained(tmp, state_dict=model_state)
    tokenizer.save_pretrained(tmp)
    torch.save(
        {
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "step": step,
            "position": position,
        },
        tmp / "trainer_state.pt",
    )
    _fsync_tree(tmp)
    os.replace(tmp, final)
    with (final / MARKER).open("w") as f:
        f.write(f"{step}\n")
        f.flush()
        os.fsync(f.fileno())
    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old)
    return final


def load_state(checkpoint: Path) -> dict:
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return state


def publish(checkpoint: Path, out: Path) -> None:
    """A checkpoint's model and tokenizer become `out` (a plain save_pretrained directory), atomically."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint, tmp, ignore=shutil.ignore_patterns("trainer_state.pt", MARKER))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
