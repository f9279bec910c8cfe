"""The three formats an export can be written in, each a `Format`: where its data goes and how the
dataset card tells `datasets` to load it.

- `jsonl`: `data.jsonl`, one row per line (UTF-8, not ASCII-escaped). Needs nothing beyond warmstart.
- `parquet`: `data.parquet` (pyarrow). With the card, `load_dataset(DIR)` reads it, and the directory is
  what the Hub serves as it is.
- `hf`: `datasets.Dataset.save_to_disk`'s layout (Arrow files, dataset_info.json, state.json), which
  `datasets.load_from_disk(DIR)` memory-maps; `load_dataset` refuses that layout by design.

Every format writes the same rows under the same types (`schema.py`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

from ..errors import WarmstartError

EXTRA = "pip install 'warmstart[datasets]'"


def write_jsonl(rows: Iterable[dict], out: Path) -> None:
    with (out / "data.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=iso_time) + "\n")


def iso_time(value: datetime) -> str:
    """A timestamp in JSON: ISO 8601 text, which `load_dataset` reads back as the same timestamp."""
    if not isinstance(value, datetime):
        raise TypeError(f"{type(value).__name__} is not a column type")
    return value.isoformat()


# Rows turned into Arrow at a time: a few MB of Python objects, where the whole file as objects would be
# several times its size on disk.
ARROW_BATCH_ROWS = 2_000


def write_parquet(rows: Iterable[dict], out: Path) -> None:
    # pyarrow is imported only here and in write_hf: jsonl must work without the extra.
    import pyarrow.parquet as pq

    from .arrow import arrow_schema, row_batches

    with pq.ParquetWriter(out / "data.parquet", arrow_schema()) as writer:
        for table in row_batches(rows, ARROW_BATCH_ROWS):
            writer.write_table(table)


def write_hf(rows: Iterable[dict], out: Path) -> None:
    import datasets  # the extra, as in write_parquet
    import pyarrow as pa

    from .arrow import row_batches

    # Arrow's own buffers hold the data about at its size on disk; save_to_disk writes them out. The
    # fingerprint (what `datasets` keys its cache of map() results by) is the data's digest taken batch by
    # batch: left to `datasets`, it pickles the whole table into one Python bytes object to hash it.
    digest, tables = hashlib.sha256(), []
    for table in row_batches(rows, ARROW_BATCH_ROWS):
        for batch in table.to_batches():
            digest.update(batch.serialize())
        tables.append(table)
    datasets.Dataset(pa.concat_tables(tables), fingerprint=digest.hexdigest()[:16]).save_to_disk(str(out))


@dataclass(frozen=True)
class Library:
    """A library of the `datasets` extra, and the feature the export needs from it (older versions lack it)."""

    module: str
    feature: str
    since: str

    def check(self, fmt: str) -> None:
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            raise WarmstartError(f"--format {fmt} needs {self.module}, which is not installed: {EXTRA}") from None
        if not hasattr(module, self.feature):
            installed = getattr(module, "__version__", "an older version")
            raise WarmstartError(
                f"--format {fmt} needs {self.module} {self.since} or later ({installed} is installed): "
                f"pip install -U '{self.module}>={self.since}'"
            )


PYARROW = Library("pyarrow", "json_", "19")  # Arrow's JSON type
DATASETS = Library("datasets", "Json", "4.7")  # the feature that decodes it


@dataclass(frozen=True)
class Format:
    name: str
    write: Callable[[Iterable[dict], Path], None]
    data_file: str | None  # the file the card's `configs` point `load_dataset` at; None: load_from_disk
    libraries: tuple[Library, ...] = ()

    def check_libraries(self) -> None:
        """Import what the format needs now, so that a missing library is one line before anything is written."""
        for library in self.libraries:
            library.check(self.name)


FORMATS = {
    "jsonl": Format("jsonl", write_jsonl, "data.jsonl"),
    "parquet": Format("parquet", write_parquet, "data.parquet", (PYARROW,)),
    "hf": Format("hf", write_hf, None, (PYARROW, DATASETS)),
}


def format_named(name: str) -> Format:
    if name not in FORMATS:
        raise WarmstartError(f"--format {name!r}: unknown format; choose {', '.join(FORMATS)}")
    return FORMATS[name]
