"""A repository as text: every UTF-8 file of a source tree, by relative path.

Caches, build output and version control are left out (`.git`, `__pycache__`, `*.egg-info`, and a
`build`, `dist` or `node_modules` folder, at any depth, unless it is a package with an `__init__.py`:
each such folder is recorded as dropped), and so is any file that is not UTF-8 text (a pure-Python
package's tests and sources are) or whose name is not UTF-8 (recorded, its name written with `\\x..`
escapes). Files are kept byte for byte (a CRLF file stays CRLF): the snapshot is what tasks store once
and every run rebuilds from. So are a virtual environment inside
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

CACHE_DIRS = frozenset({"__pycache__"})
BUILD_DIRS = frozenset({"build", "dist", "node_modules"})  # left out only where they are not a package
MAX_FILE_BYTES = 2_000_000
NAMED_DROPS = 5  # the dropped files an error names; the rest are counted


def skipped(relative: Path) -> bool:
    """A file that is never the package's: under a dot-directory, a cache or `*.egg-info`, hidden, compiled."""
    return (
        any(part.startswith(".") or part in CACHE_DIRS or part.endswith(".egg-info") for part in relative.parts[:-1])
        or relative.name.startswith(".")
        or relative.suffix in (".pyc", ".pyo", ".so")
    )


def not_the_packages(directory: Path) -> str | None:
    """Why a folder is not the package's (module docstring; a `build`, `dist` or `node_modules` folder without
    an `__init__.py`, which a subpackage of that name has), or None."""
    if (directory / "pyvenv.cfg").is_file():
        return "a virtual environment"
    if all((directory / name).is_file() for name in ("manifest.json", "tasks.jsonl")):
        return "a task set"
    if directory.name in BUILD_DIRS and not (directory / "__init__.py").is_file():
        return "build output (not a package: no __init__.py)"
    return None


def tree_files(root: Path, left_out: dict[str, str] | None = None) -> list[Path]:
    """Every file under `root`, sorted, but for those of folders that are not the package's (each recorded
    in `left_out` as `relative/path/` with the reason)."""
    found = []
    for directory, subdirs, names in os.walk(root):
        kept = []
        for name in subdirs:
            why = not_the_packages(Path(directory) / name)
            if why is None:
                kept.append(name)
            elif left_out is not None and not skipped(Path(directory, name, "x").relative_to(root)):
                left_out[entry_name((Path(directory) / name).relative_to(root)) + "/"] = why
        subdirs[:] = kept
        found += [Path(directory) / name for name in names]
    return sorted(found)


@dataclass
class Snapshot:
    files: dict[str, str]  # relative path -> text
    dropped: dict[str, str] = field(default_factory=dict)  # relative path -> why the snapshot left it out


def read_snapshot(root: Path) -> Snapshot:
    """Every file kept as its bytes decode (`newline=""`: a CRLF data file a test reads in binary stays CRLF)."""
    snapshot = Snapshot({})
    for path in tree_files(root, snapshot.dropped):
        relative = path.relative_to(root)
        if skipped(relative) or not (path.is_file() or path.is_symlink()):
            continue
        name = entry_name(relative)
        why = "its name is not UTF-8" if name != relative.as_posix() else drop_reason(path)
        if why is None:
            try:
                with open(path, encoding="utf-8", newline="") as f:
                    snapshot.files[name] = f.read()
                continue
            except UnicodeDecodeError:
                why = "not UTF-8 text"
            except OSError as exc:
                why = f"unreadable: {exc.strerror}"
        snapshot.dropped[name] = why
    return snapshot


def entry_name(relative: Path) -> str:
    """A relative path as text UTF-8 can encode: undecodable bytes in a name (kept by the file system as
    lone surrogates, which no JSON file or trajectory can hold) written as `\\xe9`."""
    return relative.as_posix().encode(errors="surrogateescape").decode(errors="backslashreplace")


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
    count = f"{len(dropped)} file{'s' if len(dropped) > 1 else ''} or folder{'s' if len(dropped) > 1 else ''}"
    kept = "UTF-8 text up to 2 MB under UTF-8 names, no symlinks, no build/dist/node_modules but packages"
    return f"mining's snapshot of the tree left out {count} (it keeps {kept}): {listed}{more}"


def one_line(path: str) -> str:
    """A path as printable text on one line (a file name may hold a newline or undecodable bytes)."""
    return path.encode(errors="backslashreplace").decode().replace("\n", "\\n").replace("\r", "\\r")
