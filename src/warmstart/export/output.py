"""The output directory of an export: complete or absent, never half-written.

The export is written into a hidden sibling directory and renamed into place when it is complete, so an
interrupted export leaves the previous output (or nothing) where the output goes. An existing non-empty
directory is refused unless `force`, and even then never one that holds the run directory or the data
being exported, nor one holding files no export writes (a repository's .git, a LICENSE added by hand):
replacing it would delete them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from ..errors import WarmstartError
from .writers import FORMATS


def check_output(out: Path, protected: list[Path], force: bool) -> None:
    """Refuse `out` before any work: a file, a non-empty directory without `force`, or one whose
    replacement would delete a path in `protected`."""
    if out.exists() and not out.is_dir():
        raise WarmstartError(f"--out {out}: exists and is not a directory")
    for path in protected:
        if path.resolve().is_relative_to(out.resolve()):
            raise WarmstartError(f"--out {out}: holds {path}, which the export would replace; choose another directory")
    if _non_empty(out) and not force:
        raise WarmstartError(f"--out {out}: exists and is not empty (--force replaces it)")
    if _non_empty(out) and not is_export(out):
        raise WarmstartError(
            f"--out {out}: is not an earlier export (no warmstart dataset card README.md), and --force replaces "
            "only those: choose an empty or new directory"
        )
    if _non_empty(out) and (others := not_written_by_exports(out)):
        raise WarmstartError(
            f"--out {out}: holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}, which no export "
            "writes, and --force replaces the whole directory: move them out, or export elsewhere and copy"
        )


# The card, each format's data file, and the layout of hf's save_to_disk (dataset_info.json, state.json, data-*.arrow).
EXPORT_FILES = {"README.md", "dataset_info.json", "state.json", *(f.data_file for f in FORMATS.values() if f.data_file)}


def not_written_by_exports(path: Path) -> list[str]:
    """The entries of an earlier export's directory that an export does not write (a repository's .git,
    a LICENSE added by hand): replacing the directory would delete them."""
    return sorted(entry.name for entry in path.iterdir() if not export_writes(entry.name))


def export_writes(name: str) -> bool:
    return name in EXPORT_FILES or (name.startswith("data-") and name.endswith(".arrow"))  # hf's Arrow shards


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def is_export(path: Path) -> bool:
    """Whether `path` holds what an export writes: its dataset card (card.py) names warmstart. `--force` replaces
    only such a directory, so a mistyped `--out` cannot delete a run, a project or a home directory."""
    card = path / "README.md"
    try:
        return card.is_file() and "verified and curated by warmstart" in card.read_text(
            encoding="utf-8", errors="replace"
        )
    except OSError:
        return False


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh directory to write the export into; on leaving without an exception it becomes `out`
    (replacing what was there), and on an exception it is removed. Most `out`s are staged beside and
    renamed into place. Filled in place, its staging directory inside it: an empty `out` (a mount point
    cannot be renamed onto), a mount point, and the working directory or one above it (`--out . --force`:
    renamed away, it would leave the shell standing in it in a deleted directory)."""
    in_place = out.is_dir() and (not _non_empty(out) or os.path.ismount(out) or _holds_working_directory(out))
    stage = (out if in_place else out.parent) / f".{out.name or 'export'}.{uuid.uuid4().hex[:8]}.partial"
    made = [parent for parent in (out.parent, *out.parent.parents) if not parent.exists()]  # removed on failure
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage.mkdir()
    except OSError as error:
        raise WarmstartError(f"--out {out}: cannot write in {stage.parent} ({error.strerror})") from None
    try:
        yield stage
        if in_place:
            _fill(stage, out)
        else:
            _replace(stage, out)
    except OSError as error:
        _remove_staging(stage, made)
        raise WarmstartError(f"--out {out}: cannot be written ({error.strerror})") from error
    except BaseException:
        _remove_staging(stage, made)
        raise


def _remove_staging(stage: Path, made: list[Path]) -> None:
    """The staging directory, and the directories made to hold it (`RUN/export/` of a first export): a failed
    export leaves nothing behind."""
    shutil.rmtree(stage, ignore_errors=True)
    for directory in made:  # innermost first; one that holds something else stays
        with contextlib.suppress(OSError):
            directory.rmdir()


def _holds_working_directory(path: Path) -> bool:
    try:
        return Path.cwd().resolve().is_relative_to(path.resolve())
    except OSError:  # the working directory was deleted: nothing to keep
        return False


def _fill(stage: Path, out: Path) -> None:
    """Move the staged export's files into `out`, the earlier export's (check_output allowed only those)
    set aside in a directory inside it first; interrupted or failed, `out` is left as it was."""
    earlier = stage.with_name(stage.name.replace(".partial", ".old"))
    earlier.mkdir()
    set_aside, moved = [], []
    try:
        for entry in sorted(p for p in out.iterdir() if p not in (stage, earlier)):
            os.replace(entry, earlier / entry.name)
            set_aside.append(entry.name)
        for entry in sorted(stage.iterdir()):
            os.replace(entry, out / entry.name)
            moved.append(out / entry.name)
    except BaseException:
        _put_back(moved, set_aside, earlier, out)
        raise
    shutil.rmtree(earlier, ignore_errors=True)
    stage.rmdir()


def _put_back(moved: list[Path], set_aside: list[str], earlier: Path, out: Path) -> None:
    """Undo a failed `_fill`, each step on its own: one that fails leaves the others done, and what could
    not be put back stays in `earlier` (inside `out`), never deleted."""
    for path in moved:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    for name in set_aside:
        with contextlib.suppress(OSError):
            os.replace(earlier / name, out / name)
    with contextlib.suppress(OSError):
        earlier.rmdir()  # only if everything went back


def _replace(stage: Path, out: Path) -> None:
    if not out.exists():
        os.replace(stage, out)
        return
    old = stage.with_name(stage.name.replace(".partial", ".old"))
    os.replace(out, old)
    try:
        os.replace(stage, out)
    except OSError:
        os.replace(old, out)  # put the previous export back: the new one is removed by the caller
        raise
    shutil.rmtree(old, ignore_errors=True)
