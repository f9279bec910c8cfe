"""Which training a model took: from an eval row's policy back through the stages that made it.

A model of the run is `models/NAME` (named by NAME: the run directory may have moved), written by the stage `sft:NAME` or `grpo:NAME`; each of those
records the model it started from (`init` in its manifest entry), so a row's cost is its own stage's plus
that of the model it started from, back to a model no stage made (the base, a user's student). A policy
that is not one of the run's models (the teacher, an API) has no lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Lineage:
    stages: list[str] = field(default_factory=list)  # the training stages, last first
    seconds: float = 0.0
    flops: float = 0.0
    parent: str | None = None  # the run's model the row's own stage started from; None: untrained, or not the run's


def run_model(path: str | None, root: Path | None = None) -> str | None:
    """The name of a run's model from its path (`.../models/NAME`, wherever the run directory was), else None.
    With `root` (the run directory), a model that is there under another run directory is that run's, not
    this one's: None (its stages are in its own manifest)."""
    if not path:
        return None
    path = Path(path.removeprefix("hf:"))
    if path.parent.name != "models":
        return None
    if root is not None and path.exists() and path.resolve().parent != (Path(root) / "models").resolve():
        return None
    return path.name


def lineage(model: str, stages: dict) -> Lineage:
    """The stages that made the run's model `model`, their seconds and estimated FLOPs summed."""
    out = Lineage()
    current: str | None = model
    while current is not None:
        name = next((s for s in (f"grpo:{current}", f"sft:{current}") if s in stages), None)
        if name is None or name in out.stages:
            break
        entry = stages[name]
        out.stages.append(name)
        out.seconds += entry.get("train_seconds", 0.0)
        out.flops += entry.get("flops_estimate", 0.0)
        current = run_model(entry.get("init"))
    if out.stages:
        out.parent = run_model(stages[out.stages[0]].get("init"))
    return out


def row_lineages(results: dict, stages: dict, root: Path | None = None) -> dict[str, Lineage | None]:
    """Per eval row: its lineage, or None for a policy that is not one of the run's models (`run_model`)."""
    out = {}
    for name, row in results["policies"].items():
        model = run_model(row.get("policy"), root)
        out[name] = lineage(model, stages) if model is not None else None
    return out
