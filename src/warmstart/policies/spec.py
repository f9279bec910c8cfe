"""The run's own policy names as the concrete policies they stand for.

A recipe names policies as strings, parsed once into `config.PolicySpec`. Most name themselves
(`hf:PATH`, `openai:MODEL@URL`, ...); four are relative to the run directory, and `resolve` turns them
into a local model or the teacher:

    base        the student before training: the run's tiny model (models/base), or `sft.student`
                (its float conversion in models/base where `sft.student` is a .gguf file)
    student     models/<sft.output>, the SFT student
    teacher     `generate.teacher`
    run:NAME    models/NAME, any model the run trained
"""

from __future__ import annotations

from pathlib import Path

from ..config import PolicySpec, Recipe
from ..errors import WarmstartError
from ..lm.paths import resolve_model_path
from ..runs.directory import RunDir


def resolve(spec: PolicySpec, recipe: Recipe) -> PolicySpec:
    """`spec` with the run's own names replaced by what they stand for; any other spec unchanged."""
    if spec.kind == "run":
        return PolicySpec.local(RunDir(recipe).model(spec.name))
    if spec.kind != "own":
        return spec
    if spec.name == "base":
        return PolicySpec.local(base_model_path(recipe))
    if spec.name == "student":
        return PolicySpec.local(RunDir(recipe).model(recipe.sft.output))
    if recipe.generate.teacher.kind == "own":
        raise WarmstartError(
            f"generate.teacher: {recipe.generate.teacher} names the run's own model; the teacher must be a policy of its own"
        )
    return resolve(recipe.generate.teacher, recipe)


def base_model_path(recipe: Recipe) -> Path:
    """The student before training: the run's tiny model or converted GGUF, or the user's model path."""
    converted = RunDir(recipe).model("base")
    if recipe.sft.student == "tiny":
        return converted
    path = resolve_model_path(recipe.sft.student, "sft.student")
    return converted if path.suffix == ".gguf" and converted.exists() else path


def local_model_path(spec: PolicySpec, recipe: Recipe, key: str) -> Path | None:
    """The model directory (or .gguf file) a spec stands for when it is a local model, else None."""
    resolved = resolve(spec, recipe)
    return resolve_model_path(resolved.name, key) if resolved.is_local_model else None
