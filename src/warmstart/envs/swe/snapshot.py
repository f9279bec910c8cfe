"""A repository as text: every UTF-8 file of a source tree, by relative path.

Caches, build output and version control are left out (`.git`, `__pycache__`, `*.egg-info`, `build`,
`dist`, ...), and so is any file that is not UTF-8 text (a pure-Python package's tests and sources are):
the snapshot is what tasks store once and every run rebuilds from.
"""

from __future__ import annotations

from pathlib import Path

SKIPPED_DIRS = frozenset({"__pycache__", "build", "dist", "node_modules"})
MAX_FILE_BYTES = 2_000_000


def skipped(relative: Path) -> bool:
    return (
        any(part.startswith(".") or part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative.parts[:-1])
        or relative.name.startswith(".")
        or relative.suffix in (".pyc", ".pyo", ".so")
    )


def read_tree(root: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or path.is_symlink() or skipped(relative) or path.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            files[relative.as_posix()] = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
    return files
