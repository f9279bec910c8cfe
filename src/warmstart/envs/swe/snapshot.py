"""A repository as text: every UTF-8 file of a source tree, by relative path.

Caches, build output and version control are left out (`.git`, `__pycache__`, `*.egg-info`, `build`,
`dist`, ...), and so is any file that is not UTF-8 text (a pure-Python package's tests and sources are):
the snapshot is what tasks store once and every run rebuilds from. So are a virtual environment inside
the tree (a folder holding `pyvenv.cfg`: thousands of modules that are not the package's, which mining
would mutate) and a task set mined earlier into it (`manifest.json` beside `tasks.jsonl`: its snapshot
holds the unmutated code, its tasks each mutation: an agent could read every fix).

The files a snapshot drops that could be the package's own (over 2 MB, not UTF-8, a symlink) are
recorded with the reason: a suite that needs one (a test reading a Latin-1 data file) fails at mining
with "No such file: /work/repo/..." for a file that is there in the tree, and mining's error names
them (`dropped_note`) instead of leaving that to be guessed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SKIPPED_DIRS = frozenset({"__pycache__", "build", "dist", "node_modules"})
MAX_FILE_BYTES = 2_000_000
NAMED_DROPS = 5  # the dropped files an error names; the rest are counted


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


@dataclass
class Snapshot:
    files: dict[str, str]  # relative path -> text
    dropped: dict[str, str] = field(default_factory=dict)  # relative path -> why the snapshot left it out


def read_snapshot(root: Path) -> Snapshot:
    snapshot = Snapshot({})
    for path in tree_files(root):
        relative = path.relative_to(root)
        if skipped(relative) or not (path.is_file() or path.is_symlink()):
            continue
        why = drop_reason(path)
        if why is None:
            try:
                snapshot.files[relative.as_posix()] = path.read_text(encoding="utf-8")
                continue
            except UnicodeDecodeError:
                why = "not UTF-8 text"
            except OSError as exc:
                why = f"unreadable: {exc.strerror}"
        snapshot.dropped[relative.as_posix()] = why
    return snapshot


def drop_reason(path: Path) -> str | None:
    """Why a file the snapshot would otherwise read is left out before reading it; None: read it."""
    if path.is_symlink():
        return "a symlink"
    size = path.stat().st_size
    return f"over 2 MB: {size / 1e6:.1f} MB" if size > MAX_FILE_BYTES else None


def dropped_note(dropped: dict[str, str], message: str = "") -> str:
    """One line naming the dropped files (first those `message` mentions: the error they likely caused)."""
    if not dropped:
        return ""
    named = sorted(dropped, key=lambda path: (path not in message, path))[:NAMED_DROPS]
    listed = ", ".join(f"{one_line(path)} ({dropped[path]})" for path in named)
    more = f" and {len(dropped) - len(named)} more" if len(dropped) > len(named) else ""
    count = f"{len(dropped)} file{'s' if len(dropped) > 1 else ''}"
    return (
        f"mining's snapshot of the tree left out {count} (it keeps UTF-8 text up to 2 MB, no symlinks): {listed}{more}"
    )


def one_line(path: str) -> str:
    """A path as printable text on one line (a file name may hold a newline or undecodable bytes)."""
    return path.encode(errors="backslashreplace").decode().replace("\n", "\\n").replace("\r", "\\r")
