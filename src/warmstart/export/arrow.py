"""The Arrow schema of an exported row, made from `schema.COLUMNS`, and the rows as an Arrow table.

JSON columns are Arrow's JSON type (text underneath: pandas and polars read it as a string, `datasets`
as its `Json` feature, decoded). Imported only by the formats that write Arrow (parquet, hf): pyarrow is
the `datasets` extra, and jsonl needs nothing beyond warmstart itself.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

import pyarrow as pa

from .schema import BOOL, COLUMNS, FLOAT, INT, JSON, STRING, TIME

SCALARS = {
    STRING: pa.string(),
    INT: pa.int64(),
    FLOAT: pa.float64(),
    BOOL: pa.bool_(),
    TIME: pa.timestamp("s", tz="UTC"),
}


def arrow_schema(json_type: pa.DataType | None = None) -> pa.Schema:
    """The schema; JSON columns as `json_type` (default: Arrow's JSON type)."""
    json_type = json_type or pa.json_()
    return pa.schema([(name, arrow_type(kind, json_type)) for name, kind in COLUMNS.items()])


def arrow_type(kind, json_type: pa.DataType) -> pa.DataType:
    if isinstance(kind, str):
        return json_type if kind == JSON else SCALARS[kind]
    if isinstance(kind, dict):
        return pa.struct([(name, arrow_type(field, json_type)) for name, field in kind.items()])
    (item,) = kind
    return pa.list_(arrow_type(item, json_type))


def rows_table(rows: list[dict]) -> pa.Table:
    """The rows under the fixed schema (never one inferred from them, which would change with the data).
    pyarrow builds an extension type only from its storage, hence the JSON text first, then the cast."""
    return pa.Table.from_pylist(rows, schema=arrow_schema(pa.string())).cast(arrow_schema())


def row_batches(rows: Iterable[dict], size: int) -> Iterator[pa.Table]:
    """`rows_table` of every `size` rows in turn."""
    rows = iter(rows)
    while batch := list(itertools.islice(rows, size)):  # itertools.batched: Python 3.12
        yield rows_table(batch)
