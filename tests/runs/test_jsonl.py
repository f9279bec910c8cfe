"""JSONL files that survive a SIGKILL: flushed per record, a torn last line skipped and cut, corruption named."""

from __future__ import annotations

import json
import logging
import re

import pytest

from helpers import make_trajectory
from warmstart.errors import WarmstartError
from warmstart.runs.jsonl import JsonlAppender, read_records
from warmstart.types import (
    Trajectory,
)


def test_appender_flushes_each_record_before_close(tmp_path):
    path = tmp_path / "sub" / "t.jsonl"
    writer = JsonlAppender(path)  # creates the parent directory
    writer.append(make_trajectory("a"))
    # Read through a separate handle while the writer is still open: a SIGKILL now would keep this line.
    assert path.read_bytes().count(b"\n") == 1
    writer.append(make_trajectory("b"))
    assert [t.task_id for t in read_records(path, Trajectory)] == ["a", "b"]
    writer.close()
    with JsonlAppender(path) as again:  # reopening appends, never truncates complete records
        again.append(make_trajectory("c"))
    assert [t.task_id for t in read_records(path, Trajectory)] == ["a", "b", "c"]


def test_reader_skips_torn_last_line_with_warning(tmp_path, caplog):
    path = tmp_path / "t.jsonl"
    with JsonlAppender(path) as writer:
        writer.append(make_trajectory("a"))
        writer.append(make_trajectory("b"))
    full = path.read_bytes()
    with path.open("ab") as f:
        f.write(full[:57])  # half of a record, as a kill mid-write leaves it
    with caplog.at_level(logging.WARNING, logger="warmstart.runs.jsonl"):
        records = read_records(path, Trajectory)
    assert [t.task_id for t in records] == ["a", "b"]
    assert any("torn last line" in r.getMessage() for r in caplog.records)


def test_reader_of_complete_file_does_not_warn(tmp_path, caplog):
    path = tmp_path / "t.jsonl"
    with JsonlAppender(path) as writer:
        writer.append(make_trajectory("a"))
    with caplog.at_level(logging.WARNING, logger="warmstart.runs.jsonl"):
        assert len(read_records(path, Trajectory)) == 1
    assert not caplog.records


def test_corrupt_middle_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    good = make_trajectory("a").model_dump_json()
    path.write_text(good + "\n" + good[:40] + "\n" + good + "\n")
    with pytest.raises(WarmstartError, match=re.escape(f"{path}:2: not a valid Trajectory record")):
        read_records(path, Trajectory)
    # A well-formed JSON line that is not a record (unknown field) is corruption too.
    path.write_text(good + "\n" + good + "\n" + '{"surprise": 1}\n')
    with pytest.raises(WarmstartError, match=re.escape(f"{path}:3:")):
        read_records(path, Trajectory)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(WarmstartError, match="file not found"):
        read_records(tmp_path / "nope.jsonl", Trajectory)


@pytest.mark.parametrize("torn", [b'{"schema_version": 1, "task_id": "half', b"   "])
def test_appender_cuts_torn_tail_so_next_record_is_intact(tmp_path, torn):
    path = tmp_path / "t.jsonl"
    with JsonlAppender(path) as writer:
        writer.append(make_trajectory("a"))
    with path.open("ab") as f:
        f.write(torn)
    with JsonlAppender(path) as writer:
        writer.append(make_trajectory("b"))
    assert path.read_bytes().endswith(b"\n") and torn not in path.read_bytes()
    assert [t.task_id for t in read_records(path, Trajectory)] == ["a", "b"]


def test_appender_on_file_without_any_newline_starts_over(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"torn": ')
    with JsonlAppender(path) as writer:
        writer.append(make_trajectory("a"))
    assert [t.task_id for t in read_records(path, Trajectory)] == ["a"]


def test_a_whole_last_record_without_its_newline_is_kept_and_appended_after(tmp_path, caplog):
    path = tmp_path / "t.jsonl"
    lines = [make_trajectory(name).model_dump_json() for name in ("a", "b")]
    path.write_text("\n".join(lines))  # as an editor or a script saves a file: no final newline
    with caplog.at_level(logging.WARNING, logger="warmstart.runs.jsonl"):
        assert [t.task_id for t in read_records(path, Trajectory)] == ["a", "b"]
    assert not caplog.records
    with JsonlAppender(path) as writer:
        writer.append(make_trajectory("c"))
    assert [t.task_id for t in read_records(path, Trajectory)] == ["a", "b", "c"]
    assert path.read_text().count("\n") == 3


def test_a_bad_record_error_names_the_field_and_the_problem(tmp_path):
    path = tmp_path / "t.jsonl"
    record = make_trajectory("a").model_dump()
    path.write_text(make_trajectory("a").model_dump_json() + "\n" + json.dumps(record | {"task_id": 46}) + "\n")
    with pytest.raises(
        WarmstartError,
        match=re.escape(f"{path}:2: not a valid Trajectory record (task_id: Input should be a valid string)"),
    ):
        read_records(path, Trajectory)
    path.write_text("not json\n" + json.dumps(record) + "\n")
    with pytest.raises(WarmstartError, match=re.escape(f"{path}:1: not a valid Trajectory record (Invalid JSON")):
        read_records(path, Trajectory)


def test_two_writers_of_one_file_at_once_each_leave_it_whole(tmp_path):
    """Two `warmstart report`s of one run write report.html at once: each write has a temporary file of its
    own (a shared one let a writer rename the other's half-written text into place, or fail to find it)."""
    import threading

    from warmstart.runs.jsonl import write_text_atomic

    path = tmp_path / "report.html"
    texts = ["a" * 3_000_000, "b" * 3_000_000]
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(15):
                write_text_atomic(path, text)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(text,)) for text in texts]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors, errors[0]
    assert path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o644
