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
  record is of the new model, and the row's of the one before. Told by the digests of the model's files
  where both the eval (`model_files` of the row) and the stage (`output_files`) recorded them; else by the
  records' sequence numbers (runs/directory.py: no clock, so stages run on machines whose clocks differ
  are told apart too); else, for manifests older than both, by their clocks.
- a run of the stage started before the model was read and never finished (killed: its start record is
  still in the manifest), and the digests cannot say which model was read: the killed run may have
  published it, with no record of its training.
- the record has no training seconds or FLOPs (hand-edited): a cost of 0 would be a guess.

What a row's cost does not depend on is said beside it (`files_note`, `elsewhere_note`): the model's files
changed after the eval scored them (a killed run replaced them), or the row scored another run
directory's model (its cost is in that run's report).
"""

from __future__ import annotations

import filecmp
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WarmstartError
from ..runs.directory import directory_digests, model_files, read_manifest
from .attempts import utc

# One process at a time runs a stage in a run directory (runs/lock.py), so a stage that made a model finished
# before its reader began; the slack absorbs the rounding of recorded seconds (to the millisecond). Only for
# records older than sequence numbers: clocks of two machines (a copied run) can differ by far more.
CLOCK_SLACK_S = 0.01


@dataclass
class Lineage:
    stages: list[str] = field(default_factory=list)  # the training stages, last first
    seconds: float = 0.0
    flops: float = 0.0
    parent: str | None = None  # the run's model the row's own stage started from; None: untrained, or not the run's
    unknown: str | None = None  # why the training that made the row's model is not known (then no cost is)


@dataclass
class Use:
    """A reading of a run's model: by what, when (clock and sequence number, where recorded), and the
    digests of the files it read (the eval's `model_files`; None where not recorded)."""

    by: str
    at: float | None = None
    sequence: int | None = None
    files: dict | None = None


def eval_use(eval_entry: dict | None, scored_at: float | None = None, files: dict | None = None) -> Use:
    """The eval that scored a row: when it began reading the models (`scored_at` where the caller says)."""
    entry = eval_entry or {}
    return Use("the eval", scored_at if scored_at is not None else started(entry), entry.get("started_sequence"), files)


def run_model(
    path: str | None, root: Path | None = None, stages: dict | None = None, scored: dict | None = None
) -> str | None:
    """The name of a run's model from its path (`.../models/NAME`, wherever the run directory was), else None.
    With `root` (the run directory), a model that is there under another run directory is that run's, not
    this one's: None (its stages are in its own manifest), unless it is this run's own model there, a
    copy of this run or the run this one was copied from (`same_model_elsewhere`; `scored`: the digests
    of the files the eval read, where it recorded them)."""
    path = model_path(path)
    if path is None:
        return None
    if root is not None and path.exists() and not is_here(path, Path(root)):
        return path.name if same_model_elsewhere(path, Path(root), stages or {}, scored) else None
    return path.name


def model_path(policy: str | None) -> Path | None:
    path = Path(policy.removeprefix("hf:")) if policy else None
    return path if path is not None and path.parent.name == "models" else None


def is_here(path: Path, root: Path) -> bool:
    return path.resolve().parent == (root / "models").resolve()


def same_model_elsewhere(path: Path, root: Path, stages: dict, scored: dict | None = None) -> bool:
    """Whether the model at `path`, in another run directory, is this run's `models/<name>`: a run copied
    (`cp -r`) with its original still in place has results.json naming the original's models. The files
    the eval read being this run's model's (by the digests the eval and this run's training recorded, or
    by this run's files) says so whatever the original did since: the copy needs nothing of it. Else both
    manifests holding the same record of the eval (it wrote these results there) or of the stage that
    made the model; else the same files, byte for byte (the copy's stages ran again after the copy)."""
    ours = root / "models" / path.name
    if scored is not None and scored_here(scored, ours, stages.get(making_stage(path.name, stages) or "")):
        return True
    theirs = other_stages(path.parent.parent)
    for stage in ("eval", making_stage(path.name, stages)):
        if stage is not None and same_record(stages.get(stage), theirs.get(stage)):
            return True
    return same_files(path, ours)


def scored_here(scored: dict, ours: Path, entry: dict | None) -> bool:
    """Whether the files an eval read are this run's model `ours`: as its training recorded them, or as they are."""
    recorded = ((entry or {}).get("output_files") or {}).get(f"models/{ours.name}")
    return scored == recorded or (ours.exists() and scored == directory_digests(ours))


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


def lineage(
    model: str, stages: dict, scored_at: float | None = None, use: Use | None = None, running: dict | None = None
) -> Lineage:
    """The stages that made the run's model `model`, their seconds and estimated FLOPs summed. `use`: the eval
    that scored it (`eval_use`; or only `scored_at`, when it began); a stage that finished later made another
    model. `running`: the manifest's start records of runs that never finished."""
    out = Lineage()
    current: str | None = model
    use = use or Use("the eval", scored_at)
    while current is not None:
        name = making_stage(current, stages)
        if name is None or name in out.stages:
            break
        entry = stages[name]
        out.stages.append(name)
        out.unknown = unrecorded(name, current, entry, use, (running or {}).get(name))
        if out.unknown:  # the entry is not of the run that made the model: nor is its `init`
            break
        out.seconds += entry["train_seconds"]
        out.flops += entry["flops_estimate"]
        current, use = run_model(entry.get("init")), Use(name, started(entry), entry.get("started_sequence"))
    if out.stages and not out.unknown:
        out.parent = run_model(stages[out.stages[0]].get("init"))
    return out


def started(entry: dict) -> float | None:
    """When a stage's recorded run began (it read its `init` model then)."""
    finished, seconds = entry.get("finished"), entry.get("seconds")
    return finished - seconds if finished is not None and seconds is not None else finished


def unrecorded(name: str, model: str, entry: dict, use: Use, start: dict | None = None) -> str | None:
    """Why `entry` (of stage `name`, which writes models/<model>) is not the record of the training that made
    the model `use` read, or None where it is. `start`: the stage's start record of a run that never finished."""
    status = entry.get("status", "done")
    if status != "done":
        return f"{name}'s last run {status}, and its record replaced that of the run that made models/{model}"
    same = same_recorded_files(entry, model, use.files)
    if same is False and start is not None:
        return (
            f"{name}'s record is of another models/{model} than the one {use.by} read (other files): a run of {name} "
            f"that started at {utc(start.get('started'))} and never finished may have made it, untracked"
        )
    if same is False:
        return f"{name} made models/{model} again after {use.by} used it (its record is of a model with other files)"
    if same is None and later(entry.get("sequence"), entry.get("finished"), use):
        return f"{name} made models/{model} again after {use.by} used it (its record is of the new model)"
    if same is None and start is not None and not later(start.get("sequence"), start.get("started"), use):
        return (
            f"a run of {name} started at {utc(start.get('started'))} and never finished before {use.by} used "
            f"models/{model}: the model may be that run's, whose training is not recorded"
        )
    if entry.get("train_seconds") is None or entry.get("flops_estimate") is None:
        return f"{name}'s record has no train_seconds or flops_estimate"
    return None


def same_recorded_files(entry: dict, model: str, files: dict | None) -> bool | None:
    """Whether the stage's record is of the model files a reader read, by their digests; None where either
    was not recorded (older runs)."""
    recorded = (entry.get("output_files") or {}).get(f"models/{model}")
    return None if recorded is None or files is None else recorded == files


def later(sequence: int | None, at: float | None, use: Use) -> bool:
    """Whether a record (its sequence number, its time) came after `use` began: by sequence numbers where both
    have one, else by the clock (older records), else not known to be."""
    if sequence is not None and use.sequence is not None:
        return sequence > use.sequence
    return at is not None and use.at is not None and at > use.at + CLOCK_SLACK_S


def row_lineages(
    results: dict, stages: dict, root: Path | None = None, scored_at: float | None = None, running: dict | None = None
) -> dict[str, Lineage | None]:
    """Per eval row: its lineage, or None for a policy that is not one of the run's models (`run_model`).
    `scored_at`: when the eval began (default: the manifest's eval record's start)."""
    out = {}
    for name, row in results["policies"].items():
        model = run_model(row.get("policy"), root, stages, row.get("model_files"))
        use = eval_use(stages.get("eval"), scored_at, row.get("model_files"))
        out[name] = lineage(model, stages, use=use, running=running) if model is not None else None
    return out


def files_note(row: dict, model: str | None, root: Path, stages: dict, running: dict) -> str | None:
    """Where a run of the stage that makes the row's model never finished: whether it replaced the model's
    files after the eval scored them (by the digests the eval recorded). Read only then: a finished run's
    record says which files it published."""
    name = making_stage(model, stages) if model else None
    start = running.get(name) if name else None
    scored = row.get("model_files")
    if start is None or scored is None or directory_digests(root / "models" / model) == scored:
        return None
    return (
        f"models/{model} is not the model the eval scored: its files changed after, and a run of {name} that "
        f"started at {utc(start.get('started'))} never finished (it may have replaced them)"
    )


def elsewhere_note(row: dict, root: Path) -> str | None:
    """Why a row naming a model of another run directory has no cost here (`run_model` said it is not ours)."""
    path = model_path(row.get("policy"))
    if path is None or is_here(path, root):
        return None
    return (
        f"results.json names {path}, a model of another run directory, which neither the records nor the files "
        "of this run say is this run's (a run this one was copied from, trained again since, is no longer), so its "
        "cost is in that run's report"
    )
