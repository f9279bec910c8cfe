"""The run directory under faults, through the real CLI: one writer at a time, and file-system failures
as one `error:` line naming the path, with no torn line left behind and a rerun that continues."""

from __future__ import annotations

import errno
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fake_api import FakeAPI
from helpers import small_recipe, write_recipe_file
from warmstart.errors import WarmstartError
from warmstart.runs import directory, lock
from warmstart.runs.directory import RunDir, recipe_when_worked
from warmstart.runs.jsonl import read_records
from warmstart.runs.lock import RunLock
from warmstart.types import Trajectory


def cli(*args: str, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    # RLIMIT_FSIZE makes a write past the limit fail with EFBIG (Python ignores SIGXFSZ): a full disk, on demand.
    limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes,) * 2)) if limit_file_bytes else None
    command = [sys.executable, "-m", "warmstart.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=limit)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return errors[0]


def reference_run(tmp_path: Path, train: int = 200) -> tuple[Path, Path]:
    recipe = small_recipe(tmp_path / "run", train=train)
    return write_recipe_file(tmp_path / "recipe.toml", recipe), tmp_path / "run" / "trajectories" / "teacher.jsonl"


def test_a_second_process_on_the_same_run_directory_is_refused_naming_the_first(tmp_path):
    with FakeAPI() as api:
        api.held = threading.Event()  # the first process's requests wait: it is working while the second runs
        recipe = small_recipe(tmp_path / "run", f"generate.teacher='openai:fake-model@{api.url}/v1'", train=40)
        recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
        first = subprocess.Popen(
            [sys.executable, "-m", "warmstart.cli", "generate", str(recipe_file), "--set", "generate.concurrency=2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not api.log:  # the first holds the lock once it asks the teacher anything
                assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
                time.sleep(0.01)
            line = one_error_line(cli("generate", str(recipe_file)))
        finally:
            api.held.set()
            assert first.wait(timeout=120) == 0, first.stderr.read()
        assert f"pid {first.pid}" in line and "is running a stage in" in line
        assert len(api.log) == 40  # every request once: the second process sent none
    records = read_records(tmp_path / "run" / "trajectories" / "teacher.jsonl", Trajectory)
    assert len(records) == len({r.key for r in records}) == 40


def test_an_output_path_that_is_a_directory_is_one_error_line(tmp_path):
    recipe_file, out = reference_run(tmp_path)
    out.mkdir(parents=True)
    assert str(out) in one_error_line(cli("generate", str(recipe_file)))


def test_an_output_path_that_is_a_dangling_symlink_is_one_error_line(tmp_path):
    recipe_file, out = reference_run(tmp_path)
    out.parent.mkdir(parents=True)
    out.symlink_to(tmp_path / "gone" / "teacher.jsonl")
    assert str(out) in one_error_line(cli("generate", str(recipe_file)))


def test_a_cache_path_that_is_a_directory_is_one_error_line(tmp_path):
    with FakeAPI() as api:
        recipe = small_recipe(tmp_path / "run", f"generate.teacher='openai:fake-model@{api.url}/v1'", train=4)
        recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
        cache = tmp_path / "run" / "cache" / "responses.jsonl"
        cache.mkdir(parents=True)
        assert str(cache) in one_error_line(cli("generate", str(recipe_file)))


def test_a_full_disk_leaves_no_torn_line_and_a_rerun_with_space_continues(tmp_path):
    recipe_file, out = reference_run(tmp_path, train=300)
    line = one_error_line(cli("generate", str(recipe_file), limit_file_bytes=40_000))
    assert str(out) in line and "could not write a record" in line
    written = out.read_bytes()
    assert 0 < len(written) <= 40_000 and written.endswith(b"\n")  # whole records only
    kept = len(read_records(out, Trajectory))
    result = cli("generate", str(recipe_file))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_records(out, Trajectory)
    assert kept < len(records) == len({r.key for r in records}) == 300
    assert out.read_bytes().startswith(written)  # what was written before is kept as it was


def test_a_run_directory_that_is_a_file_is_one_error_line(tmp_path):
    recipe_file, _ = reference_run(tmp_path)
    (tmp_path / "run").write_text("not a directory")
    assert "run" in one_error_line(cli("generate", str(recipe_file)))
    assert (tmp_path / "run").read_text() == "not a directory"


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    recipe_file, out = reference_run(tmp_path, train=3000)
    holder = subprocess.Popen(
        [sys.executable, "-m", "warmstart.cli", "generate", str(recipe_file), "--set", "generate.concurrency=1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (out.exists() and out.stat().st_size > 10_000):
        assert holder.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(holder.pid, 9)
    holder.wait()
    result = cli("generate", str(recipe_file))  # the kernel dropped the dead holder's lock
    assert result.returncode == 0, result.stderr[-2000:]
    assert len({r.key for r in read_records(out, Trajectory)}) == 3000


def test_a_full_disk_when_the_lock_names_its_holder_neither_stops_the_stage_nor_drops_the_lock(tmp_path, monkeypatch):
    """The pid in `.lock` is a courtesy to a refused process; the lock is the flock. Writing it on a full disk
    was an `error: No space left on device` naming no file, the lock's descriptor left open (and locked)."""

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock.os, "pwrite", full_disk)
    held = RunLock(tmp_path)
    held.acquire("generate:teacher")
    with pytest.raises(WarmstartError, match="another warmstart process"):  # the lock is held all the same
        RunLock(tmp_path).acquire("curate:train")
    held.release()
    RunLock(tmp_path).acquire("curate:train")


def test_the_error_that_stopped_a_stage_is_said_not_one_met_while_recording_it(tmp_path, monkeypatch, caplog):
    """On a full disk the record that could not be written stops the stage; recording the failed stage
    (manifest.json) and the command's recipe.toml then fail too, and each replaced the error before it: the
    one `error:` line named recipe.toml, not the file the disk refused."""
    recipe = small_recipe(tmp_path / "run", train=4)
    run_dir = RunDir(recipe)

    def disk_full(path, *args):
        raise WarmstartError(f"{path}: could not be written (No space left on device)")

    record = f"{run_dir.trajectories('teacher')}: could not write a record (No space left on device)"
    with pytest.raises(WarmstartError) as stopped, caplog.at_level(logging.WARNING):
        with recipe_when_worked(recipe), run_dir.stage("generate:teacher", {}, [], []) as stage:
            directory.write_json_atomic(run_dir.manifest_path, {"stages": {}, "claims": {}})  # the stage had begun
            stage.summary["api_cost"] = {"usd": 0.0}
            monkeypatch.setattr(directory, "write_json_atomic", disk_full)
            monkeypatch.setattr(directory, "write_text_atomic", disk_full)
            raise WarmstartError(record)
    assert str(stopped.value) == record
    said = [r.getMessage() for r in caplog.records]
    assert any("manifest.json" in m for m in said) and any("recipe.toml" in m for m in said)  # said, as warnings
