"""Which training a model took: from an eval row's policy back through the stages that made it.

A model of the run is `models/NAME` (named by NAME: the run directory may have moved, or been copied with
its original still in place), written by the stage `sft:NAME` or `grpo:NAME`; each of those records the
model it started from (`init` in its manifest entry), so a row's cost is its own stage's plus that of the
model it started from, back to a model no stage made (the base, a user's student). A policy that is not
one of the run's models (the teacher, an API, another run's model) has no lineage.

A row's cost is the cost of the training that made the model it scored, or said to be unknown (`Lineage.unknown`)
where the manifest no longer records that training:

- the stage's last run failed. A failed run never published its model (publishing is its last step), so
  the model the row scored is an earlier run's, whose record the failed one replaced. Adding the failed
  run's seconds and FLOPs would give the row the cost of a model nobody evaluated; the report lists what
  failed runs spent apart (`html.failed_attempts`): spent, but on no row.
- the stage finished after the eval that scored the row (trained again, eval not run since), or after the
  stage that started from its model began (sft trained again after grpo started from the student): the
  record is of the new model, and the row's of the one before.
- the record has no training seconds or FLOPs (hand-edited): a cost of 0 would be a guess.
"""

from __future__ import annotations

import filecmp
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WarmstartError
from ..runs.directory import model_files, read_manifest

# One process at a time runs a stage in a run directory (runs/lock.py), so a stage that made a model finished
# before its reader began; the slack absorbs the rounding of recorded seconds (to the millisecond).
CLOCK_SLACK_S = 0.01


@dataclass
class Lineage:
    stages: list[str] = field(default_factory=list)  # the training stages, last first
    seconds: float = 0.0
    flops: float = 0.0
    parent: str | None = None  # the run's model the row's own stage started from; None: untrained, or not the run's
    unknown: str | None = None  # why the training that made the row's model is not known (then no cost is)


def run_model(path: str | None, root: Path | None = None, stages: dict | None = None) -> str | None:
    """The name of a run's model from its path (`.../models/NAME`, wherever the run directory was), else None.
    With `root` (the run directory), a model that is there under another run directory is that run's, not
    this one's: None (its stages are in its own manifest), unless it is this run's own model there, a
    copy of this run or the run this one was copied from (`same_model_elsewhere`)."""
    if not path:
        return None
    path = Path(path.removeprefix("hf:"))
    if path.parent.name != "models":
        return None
    if root is not None and path.exists() and path.resolve().parent != (Path(root) / "models").resolve():
        return path.name if same_model_elsewhere(path, Path(root), stages or {}) else None
    return path.name


def same_model_elsewhere(path: Path, root: Path, stages: dict) -> bool:
    """Whether the model at `path`, in another run directory, is this run's `models/<name>`: a run copied
    (`cp -r`) with its original still in place has results.json naming the original's models. Both
    manifests holding the same record of the eval (it wrote these results there) or of the stage that made
    the model says so without reading the weights; else the same files, byte for byte, do (the copy's
    stages ran again after the copy)."""
    theirs = other_stages(path.parent.parent)
    for stage in ("eval", making_stage(path.name, stages)):
        if stage is not None and same_record(stages.get(stage), theirs.get(stage)):
            return True
    return same_files(path, root / "models" / path.name)


def same_record(ours: dict | None, theirs: dict | None) -> bool:
    """One run of a stage recorded in two manifests: its fingerprint and the time it finished."""
    if not isinstance(ours, dict) or not isinstance(theirs, dict) or ours.get("finished") is None:
        return False
    return all(ours.get(key) == theirs.get(key) for key in ("fingerprint", "finished"))


def other_stages(other_root: Path) -> dict:
    """Another run directory's manifest stages; none where it has no readable manifest (not a run of ours)."""
    try:
        return read_manifest(other_root / "manifest.json")["stages"]
    except (WarmstartError, OSError):
        return {}


def same_files(a: Path, b: Path) -> bool:
    ours, theirs = model_files(a), model_files(b)
    if not ours or [p.name for p in ours] != [p.name for p in theirs]:
        return False
    return all(filecmp.cmp(x, y, shallow=False) for x, y in zip(ours, theirs))


def making_stage(model: str, stages: dict) -> str | None:
    """The stage that writes `models/<model>` (GRPO's output name is looked up first, as it was)."""
    return next((s for s in (f"grpo:{model}", f"sft:{model}") if s in stages), None)


def lineage(model: str, stages: dict, scored_at: float | None = None) -> Lineage:
    """The stages that made the run's model `model`, their seconds and estimated FLOPs summed. `scored_at`:
    when the eval that scored it finished, where known (a stage that finished later made another model)."""
    out = Lineage()
    current: str | None = model
    used_at, user = scored_at, "the eval"  # when the model was read, and by what
    while current is not None:
        name = making_stage(current, stages)
        if name is None or name in out.stages:
            break
        entry = stages[name]
        out.stages.append(name)
        out.unknown = unrecorded(name, current, entry, used_at, user)
        if out.unknown:  # the entry is not of the run that made the model: nor is its `init`
            break
        out.seconds += entry["train_seconds"]
        out.flops += entry["flops_estimate"]
        current, used_at, user = run_model(entry.get("init")), started(entry), name
    if out.stages and not out.unknown:
        out.parent = run_model(stages[out.stages[0]].get("init"))
    return out


def started(entry: dict) -> float | None:
    """When a stage's recorded run began (it read its `init` model then)."""
    finished, seconds = entry.get("finished"), entry.get("seconds")
    return finished - seconds if finished is not None and seconds is not None else finished


def unrecorded(name: str, model: str, entry: dict, used_at: float | None, user: str) -> str | None:
    """Why `entry` (of stage `name`, which writes models/<model>) is not the record of the training that made
    the model `user` read at `used_at`, or None where it is."""
    status = entry.get("status", "done")
    if status != "done":
        return f"{name}'s last run {status}, and its record replaced that of the run that made models/{model}"
    finished = entry.get("finished")
    if used_at is not None and finished is not None and finished > used_at + CLOCK_SLACK_S:
        return f"{name} made models/{model} again after {user} used it (its record is of the new model)"
    if entry.get("train_seconds") is None or entry.get("flops_estimate") is None:
        return f"{name}'s record has no train_seconds or flops_estimate"
    return None


def row_lineages(
    results: dict, stages: dict, root: Path | None = None, scored_at: float | None = None
) -> dict[str, Lineage | None]:
    """Per eval row: its lineage, or None for a policy that is not one of the run's models (`run_model`)."""
    out = {}
    for name, row in results["policies"].items():
        model = run_model(row.get("policy"), root, stages)
        out[name] = lineage(model, stages, scored_at) if model is not None else None
    return out
