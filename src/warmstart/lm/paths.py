"""Where a local model is: a `save_pretrained` directory or a .gguf file, checked without loading it.

Apart from `models.py` so that resolving a path (policy strings, fingerprints) never imports torch."""

from __future__ import annotations

from pathlib import Path

from ..errors import WarmstartError


def resolve_model_path(path: str | Path, key: str) -> Path:
    """`path` as a model directory or .gguf file; else an error naming the recipe `key`."""
    path = Path(path).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    if not path.is_dir():
        raise WarmstartError(f"{key}: no model directory or .gguf file at {path}")
    if not (path / "config.json").exists():
        raise WarmstartError(f"{key}: {path} has no config.json, so it is not a transformers model directory")
    return path
