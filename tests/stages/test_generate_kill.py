"""`warmstart generate` killed with SIGKILL mid-run and rerun: every record exactly once, as an uninterrupted run wrote it."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from warmstart.config import load_recipe
from warmstart.runs.jsonl import read_records
from warmstart.stages import generate
from warmstart.types import (
    Trajectory,
)

WARMSTART = Path(sys.executable).with_name("warmstart")  # the console script of the venv running the tests


KILL_RECIPE = """
[run]
dir = "{dir}"
seed = 7
[env]
name = "arithmetic"
[env.options]
digits = [2, 3]
[tasks]
train = 6000
eval = 20
[generate]
teacher = "reference"
samples_per_task = 2
concurrency = 1
"""


KILL_TOTAL = 6000 * 2


def write_kill_recipe(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "recipe.toml"
    path.write_text(KILL_RECIPE.format(dir=root / "run"))
    return path


def comparable_lines(path: Path) -> list[str]:
    """Each record as canonical JSON without its creation time, the one field a rerun may change."""
    out = []
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        del record["provenance"]["created"]
        out.append(json.dumps(record, sort_keys=True))
    return out


def test_generate_killed_with_sigkill_and_rerun_neither_loses_nor_duplicates(tmp_path, caplog):
    killed_recipe = write_kill_recipe(tmp_path / "killed")
    out = tmp_path / "killed" / "run" / "trajectories" / "teacher.jsonl"
    proc = subprocess.Popen(
        [str(WARMSTART), "generate", str(killed_recipe)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        # The kill comes first, the uninterrupted reference run after it: a reference run made while the
        # child worked could outlast the child's whole run on a busy machine, and then no kill would land.
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size > 20_000):  # some dozens of records are out
            assert proc.poll() is None, f"generate exited early: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "generate wrote no records within 60 s"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    clean_out = generate.run(load_recipe(write_kill_recipe(tmp_path / "clean")))

    killed_lines = out.read_bytes().count(b"\n")
    assert 0 < killed_lines < KILL_TOTAL, "the kill must land mid-run, or this test shows nothing"
    # Simulate a kill in the middle of a write as well: half of a record with no newline.
    with out.open("ab") as f:
        f.write(b'{"schema_version": 1, "task_id": "arithmetic/12+3')

    with caplog.at_level(logging.WARNING, logger="warmstart.runs.jsonl"):
        generate.run(load_recipe(killed_recipe))  # the rerun: same stage, same recipe
    assert any("torn last line" in r.getMessage() for r in caplog.records)

    records = read_records(out, Trajectory)  # every line is valid: no torn line was left in the middle
    keys = [t.key for t in records]
    assert len(keys) == len(set(keys)) == KILL_TOTAL
    assert {i for _, i in keys} == {0, 1}
    rerun_lines, clean_lines = comparable_lines(out), comparable_lines(clean_out)
    assert len(clean_lines) == KILL_TOTAL
    assert sorted(rerun_lines) == sorted(clean_lines)

    # A third run of the finished stage does no work and leaves the file as it is.
    before = out.read_bytes()
    generate.run(load_recipe(killed_recipe))
    assert out.read_bytes() == before
