"""A curated file is exported a row at a time: Python holds a batch of rows, never the file (as objects,
a whole file took ~10x its size: 90k rows, 93 MB, 965 MB resident). Rows past the first Arrow batch
load back in order in every format; a bad record further on leaves the earlier export in place."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import pytest

from helpers import load_export
from warmstart.errors import WarmstartError
from warmstart.export.exporter import export_run
from warmstart.export.writers import ARROW_BATCH_ROWS


def grown_run(calculator_run: Path, tmp_path: Path, rows: int) -> Path:
    """The calculator run with its curated file grown to `rows` rows (its trajectories over again, each
    copy under its own sample index, so that the order read back is checkable)."""
    root = Path(shutil.copytree(calculator_run, tmp_path / "run"))
    curated = root / "curated" / "train.jsonl"
    records = [json.loads(line) for line in curated.read_text(encoding="utf-8").splitlines()]
    with curated.open("w", encoding="utf-8") as f:
        for index in range(rows):
            record = dict(records[index % len(records)], sample_index=index)
            f.write(json.dumps(record) + "\n")
    return root


@pytest.fixture(scope="module")
def big_run(calculator_run, tmp_path_factory) -> Path:
    return grown_run(calculator_run, tmp_path_factory.mktemp("big"), 6 * ARROW_BATCH_ROWS + 123)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_python_holds_a_small_part_of_the_file(big_run, calculator_run, fmt, tmp_path):
    size = (big_run / "curated" / "train.jsonl").stat().st_size
    export_run(calculator_run, fmt, out=tmp_path / "warm-up")  # the format's imports, not counted below
    tracemalloc.start()
    try:
        export_run(big_run, fmt, out=tmp_path / fmt)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size, f"{fmt}: Python's peak {peak:,} bytes for a {size:,}-byte file"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_rows_past_the_first_batch_load_back_in_order(big_run, fmt, tmp_path):
    out = export_run(big_run, fmt, out=tmp_path / fmt)
    loaded = load_export(out, fmt)
    assert loaded["sample_index"] == list(range(6 * ARROW_BATCH_ROWS + 123))
    assert "- rows: 12123, from 12 tasks" in (out / "README.md").read_text(encoding="utf-8")


def test_a_bad_record_further_on_leaves_the_earlier_export(calculator_run, tmp_path):
    root = grown_run(calculator_run, tmp_path, ARROW_BATCH_ROWS + 10)
    out = export_run(root, "parquet")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    curated = root / "curated" / "train.jsonl"
    lines = curated.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[ARROW_BATCH_ROWS + 5] = '{"task_id": 3}\n'
    curated.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(WarmstartError, match=rf"train.jsonl:{ARROW_BATCH_ROWS + 6}: not a valid Trajectory"):
        export_run(root, "parquet", force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["parquet"]  # nothing staged is left behind
