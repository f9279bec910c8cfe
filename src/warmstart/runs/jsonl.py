"""Append-only JSONL records that survive a SIGKILL.

A writer appends one line per record in one write, so a killed stage loses at most the line being
written, and a write the file system refuses is cut back off (no torn line is left by a full disk). That
torn last line is skipped by readers with a warning and cut off by the next writer before it appends, so
a rerun neither loses nor duplicates complete records. A last line without its newline that holds a whole
record (a file a user wrote or an editor saved without the final newline; a JSON object cut short is never
valid JSON) is a record: readers keep it and a writer ends it with the newline before appending. A bad
line anywhere *but* the end is corruption, not a kill, and is an error naming the file, the line and the
field.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import WarmstartError, first_line

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def end_cleanly(path: Path) -> None:
    """Make `path` (where it exists) end with a newline before anything is appended: a torn last line is cut
    off, a whole last record written without its newline is ended (see the module docstring). Appended to
    as it was, a torn line would become a bad line in the middle of the file."""
    if not path.exists():
        return
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep == len(data):
        return
    if is_json_object(data[keep:]):
        with path.open("ab") as f:
            f.write(b"\n")
        return
    log.warning("%s: cutting a torn last line before appending", path)
    os.truncate(path, keep)


def read_records(path: Path, model: type[M], torn_tail: bool = True) -> list[M]:
    return list(iter_records(path, model, torn_tail))


def iter_records(path: Path, model: type[M], torn_tail: bool = True) -> Iterator[M]:
    """`path`'s records one line at a time (a curated file of gigabytes is never held whole). A generator:
    a missing or unreadable file is said at the first record asked for, not at the call. `torn_tail`: a
    last line that is no JSON object is the torn tail of a killed writer of warmstart's own files, skipped
    with a warning; a file the user wrote (tasks.train_file) passes False, and such a line is an error."""
    path = Path(path)
    if not path.exists():
        raise WarmstartError(f"{path}: file not found")
    if path.is_dir():
        raise WarmstartError(f"{path}: a directory, not a JSONL file")
    try:
        with path.open("rb") as f:
            yield from records_in(f, path, model, torn_tail)
    except OSError as exc:
        raise WarmstartError(f"{path}: cannot read ({exc.strerror})") from None


def records_in(lines: Iterator[bytes], path: Path, model: type[M], torn_tail: bool = True) -> Iterator[M]:
    for number, line in enumerate(lines, start=1):
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)  # a byte-order mark an editor wrote
        if not line.strip():
            continue
        # Only the last line can lack its newline: a record written without it, or the torn tail of a
        # killed writer.
        if torn_tail and not line.endswith(b"\n") and not is_json_object(line):
            log.warning("%s: skipping a torn last line (%d bytes), left by an interrupted writer", path, len(line))
            continue
        try:
            yield model.model_validate_json(line)
        except (ValidationError, ValueError) as exc:
            raise WarmstartError(f"{path}:{number}: not a valid {model.__name__} record ({why(exc)})") from None


def is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # not JSON, or not UTF-8
        return False


def why(exc: ValueError) -> str:
    """The first problem pydantic found, with the field it is in: `id: Input should be a valid string`."""
    if not isinstance(exc, ValidationError) or not exc.errors():
        return first_line(exc)
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f"; and {len(errors) - 1} more" if len(errors) > 1 else ""
    return f"{where + ': ' if where else ''}{first['msg']}{more}"


class JsonlAppender:
    """Appends records to a JSONL file, one line each, written whole or not at all. Use as a context manager.

    Each line goes out in one `write` to an O_APPEND descriptor: once `append` returns, it is in the kernel
    and survives a kill of this process. A write the file system refuses (no space, over a size limit, a
    read-only or failing disk) is cut back off, so the file still ends with its last complete record, and
    is one `WarmstartError` naming the file; a rerun once the cause is fixed continues from there.
    `close` fsyncs.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            end_cleanly(self.path)
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise fs_error(self.path, "cannot write to it", exc) from None

    def append(self, record: BaseModel) -> None:
        line = (record.model_dump_json() + "\n").encode()
        try:
            written = os.write(self._fd, line)
            while written < len(line):  # a short write: the rest, or the error that cut it short
                written += os.write(self._fd, line[written:])
        except OSError as exc:
            self._cut_back()
            raise fs_error(self.path, "could not write a record", exc) from None
        self._size += len(line)

    def _cut_back(self) -> None:
        """Remove whatever part of a failed line reached the file (a torn line is worse than none)."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            log.warning("%s: could not cut a partly written line; the next reader skips it", self.path)

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as exc:
            raise fs_error(self.path, "could not be synced to disk", exc) from None
        finally:
            os.close(fd)

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fs_error(path: Path, what: str, exc: OSError) -> WarmstartError:
    """A file-system failure as one line naming the file: `runs/x/teacher.jsonl: could not write a record
    (No space left on device)`."""
    return WarmstartError(f"{path}: {what} ({exc.strerror or exc})")


def read_json(path: Path, shape: type = dict):
    """A JSON file warmstart wrote (a manifest, results, costs), or None where there is none; one error naming
    the file where it is not valid JSON or not a `shape` (an object, for every file warmstart writes)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # not JSON, not UTF-8, unreadable
        raise WarmstartError(f"{path}: not valid JSON ({first_line(exc)})") from None
    if not isinstance(data, shape):
        raise WarmstartError(f"{path}: holds a JSON {type(data).__name__}, not the {shape.__name__} warmstart writes")
    return data


def write_json_atomic(path: Path, obj, finite: bool = False) -> None:
    """Write a JSON file via a temporary file and rename, so readers never see half of it. With `finite`
    (money: costs.json) a NaN or an infinity is an error, not a file a strict JSON parser refuses."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=not finite)
    except ValueError as exc:  # allow_nan=False's (or a circular reference's: never in what warmstart writes)
        raise WarmstartError(
            f"{path}: not written, it would hold a number JSON has not (NaN or infinity): {exc}"
        ) from None
    write_text_atomic(path, text + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary file, fsync and rename: a reader sees the old file or the new one.
    The temporary file's name is this write's own: two writers at once (two `warmstart report`s of a run)
    had shared one, so one could rename the other's half-written text into place."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        os.fchmod(descriptor, 0o644)  # mkstemp's 0600 would hide a shared run's results from its other readers
        with open(descriptor, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise fs_error(path, "could not be written", exc) from None
