"""Append-only JSONL records that survive a SIGKILL.

A writer appends one line per record and flushes it, so a killed stage loses at most the line being
written. That torn last line is skipped by readers with a warning and cut off by the next writer before
it appends, so a rerun neither loses nor duplicates complete records. A bad line anywhere *but* the
end is corruption, not a kill, and is an error naming the file and line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import WarmstartError

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def _complete_length(path: Path) -> int:
    """Byte length of the file up to and including its last newline."""
    with path.open("rb") as f:
        data = f.read()
    return data.rfind(b"\n") + 1


def read_records(path: Path, model: type[M]) -> list[M]:
    return list(iter_records(path, model))


def iter_records(path: Path, model: type[M]) -> Iterator[M]:
    path = Path(path)
    if not path.exists():
        raise WarmstartError(f"{path}: file not found")
    with path.open("rb") as f:
        lines = f.read().split(b"\n")
    # After the final newline split() leaves b"" (complete file) or the torn tail of a killed writer.
    torn_tail = lines.pop()
    if torn_tail.strip():
        log.warning("%s: skipping a torn last line (%d bytes), left by an interrupted writer", path, len(torn_tail))
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield model.model_validate_json(line)
        except (ValidationError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise WarmstartError(f"{path}:{number}: not a valid {model.__name__} record ({first})") from None


class JsonlAppender:
    """Appends records to a JSONL file, one flushed line each. Use as a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = _complete_length(self.path)
            if keep != self.path.stat().st_size:
                log.warning("%s: cutting a torn last line before appending", self.path)
                os.truncate(self.path, keep)
        self._file = self.path.open("a", encoding="utf-8")

    def append(self, record: BaseModel) -> None:
        self._file.write(record.model_dump_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_json_atomic(path: Path, obj) -> None:
    """Write a JSON file via a temporary file and rename, so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
