"""Atomic, resumable checkpoints.

A checkpoint is written to a temporary directory, its files fsynced, the directory renamed to
`step-N`, and only then a `COMPLETE` marker written: a directory without the marker is ignored, so a
kill at any moment leaves either the previous checkpoint or a new complete one. Resume takes the
newest complete checkpoint. State saved: weights (`save_pretrained`, safetensors), optimizer,
scheduler, RNG states, step and data position.

A checkpoint also records the fingerprint of the stage that wrote it (`FINGERPRINT`: its config and
input files, `runs.directory.Stage`), and a stage resumes only a checkpoint of its own fingerprint
(`check_written_by`): a checkpoint of other data or settings would continue the old experiment under the
new one's name.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..errors import WarmstartError, first_line

MARKER = "COMPLETE"
FINGERPRINT = "FINGERPRINT"  # the writing stage's fingerprint, one line: small, read before anything loads
# What the fingerprint was made of (the stage's config and its inputs' digests), where the stage gives it: a
# refused resume names the settings and inputs that changed, not two hashes.
FINGERPRINTED = "fingerprinted.json"


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
    *,
    fingerprint: str,
    fingerprinted: dict | None = None,
) -> Path:
    """`states`: the model's and optimizer's state dicts where the objects do not hold them whole (a
    sharded model: train/sharding.py gathers them). `fingerprint`: the writing stage's (`Stage.fingerprint`);
    `fingerprinted`: what it was made of (`{"config": ..., "inputs": {path: digest}}`), for `check_written_by`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    for stale in (tmp, final):  # leftovers of a kill during an earlier attempt at this step
        if stale.exists():
            shutil.rmtree(stale)
    model_state, optimizer_state = states or (None, optimizer.state_dict())
    with written_whole(tmp):
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
        (tmp / FINGERPRINT).write_text(f"{fingerprint}\n")  # inside the directory renamed whole: never without it
        if fingerprinted is not None:
            (tmp / FINGERPRINTED).write_text(json.dumps(fingerprinted, sort_keys=True))
        _fsync_tree(tmp)
    os.replace(tmp, final)
    with (final / MARKER).open("w") as f:
        f.write(f"{step}\n")
        f.flush()
        os.fsync(f.fileno())
    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old)
    return final


@contextlib.contextmanager
def written_whole(directory: Path):
    """Writing `directory` (a temporary one, renamed into place once whole): where the writing fails (a full
    disk, a file-size limit), the partial directory is removed, and the failure is one error naming it: an
    OSError as it is (the CLI says it on one line, its file named), and what torch.save and safetensors
    raise for a short write, RuntimeError and SafetensorError (a 60-line traceback), as a WarmstartError."""
    try:
        yield
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    except (RuntimeError, SafetensorError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise WarmstartError(
            f"{directory}: could not be written ({first_line(exc)}; is the disk full, or a file-size limit set?)"
        ) from None


def written_by(checkpoint: Path) -> str | None:
    """The fingerprint of the stage that wrote `checkpoint`; None for one written before checkpoints
    recorded it."""
    path = checkpoint / FINGERPRINT
    return path.read_text().strip() if path.exists() else None


def check_written_by(checkpoint: Path, accepted: set[str], output_key: str, fingerprinted: dict | None = None) -> None:
    """Refuse to resume `checkpoint` unless the stage that wrote it had one of the fingerprints `accepted`
    (the same config and input data: `Stage.accepted`). Refused, not set aside and restarted: the checkpoints are hours of training that only the
    user can say are worth dropping (a changed key may be a mistake to undo), and the project's other
    resume checks (a changed LoRA setting, GRPO's starting model) refuse the same way. A checkpoint that
    records no fingerprint (an earlier warmstart's) is refused too: what it was trained on is unknown, and
    resuming it is the very mistake this check exists for; it costs one retrain, once. `fingerprinted`: what
    the fingerprint is made of; where the checkpoint records its own, the error names what changed."""
    written = written_by(checkpoint)
    if written in accepted:
        return
    changed = what_changed(read_fingerprinted(checkpoint), fingerprinted)
    ours = " or ".join(sorted(accepted))
    made_by = (
        f"another config or other input data ({changed or f'fingerprint {written}, this run: {ours}'})"
        if written
        else "an earlier warmstart that did not record the config and data they were trained on"
    )
    raise WarmstartError(
        f"{checkpoint.parent}: checkpoints of {made_by}; remove that directory to train from scratch, "
        f"or set {output_key} to train beside them"
    )


def read_fingerprinted(checkpoint: Path) -> dict | None:
    try:
        return json.loads((checkpoint / FINGERPRINTED).read_text())
    except (OSError, ValueError):  # none (an earlier warmstart's checkpoint) or unreadable: the hashes are said
        return None


def what_changed(then: dict | None, now: dict | None) -> str:
    """The settings and inputs that differ between two `fingerprinted` records, in words ("sft.steps 2 (now
    4)", "input /x/data.jsonl changed"); empty where either is missing or nothing readable differs."""
    if not isinstance(then, dict) or not isinstance(now, dict):
        return ""
    old_config, new_config = flat(then.get("config") or {}), flat(now.get("config") or {})
    settings = [
        f"{key} {old_config.get(key, '(unset)')} (now {new_config.get(key, '(unset)')})"
        for key in sorted(old_config.keys() | new_config.keys())
        if old_config.get(key) != new_config.get(key)
    ]
    old_inputs, new_inputs = then.get("inputs") or {}, now.get("inputs") or {}
    inputs = [
        f"input {path} {'changed' if path in old_inputs and path in new_inputs else 'added' if path in new_inputs else 'gone'}"
        for path in sorted(old_inputs.keys() | new_inputs.keys())
        if old_inputs.get(path) != new_inputs.get(path) or (path in old_inputs) != (path in new_inputs)
    ]
    return ", ".join([*settings, *inputs])


def flat(config: dict, prefix: str = "") -> dict:
    """A nested config as dotted keys: {"sft": {"steps": 2}} is {"sft.steps": 2}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_state(checkpoint: Path) -> dict:
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return state


def check_replaceable(out: Path, models: Path) -> None:
    """`out` is a directory strictly inside `models` (the run's models/), the only kind publishing may
    remove and replace. The recipe's names are checked when it loads (`config.check_model_name`); this
    holds for any caller, since a path such as models/.. would make publishing remove the run directory."""
    if out.name in ("", ".", "..") or out.parent.resolve() != models.resolve():
        raise WarmstartError(f"{out}: not a directory inside {models}; refusing to replace it with a model")


def publish(checkpoint: Path, out: Path, models: Path) -> None:
    """A checkpoint's model and tokenizer become `out`, a directory in `models` (a plain save_pretrained
    directory), atomically."""
    check_replaceable(out, models)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with written_whole(tmp):
        shutil.copytree(
            checkpoint, tmp, ignore=shutil.ignore_patterns("trainer_state.pt", MARKER, FINGERPRINT, FINGERPRINTED)
        )
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
