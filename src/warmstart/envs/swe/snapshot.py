"""A repository as text: every UTF-8 file of a source tree, by relative path.

Caches, build output and version control are left out (`.git`, `__pycache__`, `*.egg-info`, `build`,
`dist`, ...), and so is any file that is not UTF-8 text (a pure-Python package's tests and sources are):
the snapshot is what tasks store once and every run rebuilds from. So are a virtual environment inside
the tree (a folder holding `pyvenv.cfg`: thousands of modules that are not the package's, which mining
would mutate) and a task set mined earlier into it (`manifest.json` beside `tasks.jsonl`: its snapshot
holds the unmutated code, its tasks each mutation: an agent could read every fix).
"""

from __future__ import annotations

import os
from pathlib import Path

SKIPPED_DIRS = frozenset({"__pycache__", "build", "dist", "node_modules"})
MAX_FILE_BYTES = 2_000_000


def skipped(relative: Path) -> bool:
    return (
        any(part.startswith(".") or part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative.parts[:-1])
        or relative.name.startswith(".")
        or relative.suffix in (".pyc", ".pyo", ".so")
    )


def not_the_packages(directory: Path) -> bool:
    """A virtual environment, or a task set mined earlier (module docstring)."""
    return (directory / "pyvenv.cfg").is_file() or all(
        (directory / name).is_file() for name in ("manifest.json", "tasks.jsonl")
    )


def tree_files(root: Path) -> list[Path]:
    """Every file under `root`, sorted, but for those of folders that are not the package's."""
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not not_the_packages(Path(directory) / d)]
        found += [Path(directory) / name for name in names]
    return sorted(found)


def read_tree(root: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in tree_files(root):
        relative = path.relative_to(root)
        if not path.is_file() or path.is_symlink() or skipped(relative) or path.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            files[relative.as_posix()] = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
    return files
