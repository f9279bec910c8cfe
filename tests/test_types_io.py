"""Core records through JSON, and JSONL files that survive a SIGKILL (DESIGN.md "Core types")."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from warmstart.config import load_recipe
from warmstart.errors import WarmstartError
from warmstart.jsonl import JsonlAppender, read_records
from warmstart.stages import generate
from warmstart.types import SCHEMA_VERSION, Message, Provenance, Task, ToolCall, ToolFunction, Trajectory, Usage, Verdict

WARMSTART = Path(sys.executable).with_name("warmstart")  # the console script of the venv running the tests


def make_trajectory(task_id: str = "t/1", sample_index: int = 0) -> Trajectory:
    return Trajectory(
        task_id=task_id,
        sample_index=sample_index,
        policy="reference",
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="What is 2+2? ünïcødé \"quotes\" \n newline"),
            Message(
                role="assistant",
                reasoning="2+2=4",
                tool_calls=[ToolCall(id="c1", function=ToolFunction(name="calc", arguments='{"x": "2+2"}'))],
            ),
            Message(role="tool", tool_call_id="c1", content="4"),
            Message(role="assistant", content="Answer: 4"),
        ],
        usage=[Usage(tokens_in=10, tokens_out=3, tokens_cached=2), Usage(tokens_in=14, tokens_out=4)],
        logprobs=[{"token": "4", "logprob": -0.01, "top": [["4", -0.01], ["5", -4.6]]}],
        verdict=Verdict(reward=1.0, passed=True, details={"answer": 4}),
        provenance=Provenance(provider="reference", model="m", sampling={"temperature": 0.7}, seed=3, created=1.5),
        finish_reason="stop",
    )


# --- types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        Message(role="assistant", content=None, reasoning="think"),
        Task(id="a/1", env="arithmetic", prompt=[Message(role="user", content="q")], hidden={"answer": -3}, split="eval", meta={"op": "-"}),
        Verdict(reward=0.0, passed=False, details={"reason": "x"}, infra_error="sandbox crashed"),
        make_trajectory(),
    ],
    ids=lambda r: type(r).__name__,
)
def test_records_round_trip_through_json(record):
    text = record.model_dump_json()
    assert "\n" not in text  # one record, one JSONL line
    assert type(record).model_validate_json(text) == record


def test_trajectory_carries_schema_version_and_key():
    t = make_trajectory("x/9", 3)
    assert json.loads(t.model_dump_json())["schema_version"] == SCHEMA_VERSION
    assert t.key == ("x/9", 3)


@pytest.mark.parametrize(
    "model, data",
    [
        (Message, {"role": "user", "content": "hi", "contnet": "typo"}),
        (Verdict, {"reward": 1.0, "passed": True, "score": 1}),
        (Task, {"id": "a", "env": "e", "prompt": [], "split": "train", "answer": 3}),
        # Nested: a typo inside a message or the provenance of a trajectory is rejected too.
        (Trajectory, {**json.loads(make_trajectory().model_dump_json()), "extra": 1}),
        (Trajectory, {**json.loads(make_trajectory().model_dump_json()), "messages": [{"role": "user", "text": "hi"}]}),
    ],
)
def test_unknown_fields_are_rejected(model, data):
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate(data)


def test_bad_role_and_split_are_rejected():
    with pytest.raises(ValidationError):
        Message(role="robot", content="hi")
    with pytest.raises(ValidationError):
        Task(id="a", env="e", prompt=[], split="test")


# --- jsonl ---------------------------------------------------------------------------------------


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
    with caplog.at_level(logging.WARNING, logger="warmstart.jsonl"):
        records = read_records(path, Trajectory)
    assert [t.task_id for t in records] == ["a", "b"]
    assert any("torn last line" in r.getMessage() for r in caplog.records)


def test_reader_of_complete_file_does_not_warn(tmp_path, caplog):
    path = tmp_path / "t.jsonl"
    with JsonlAppender(path) as writer:
        writer.append(make_trajectory("a"))
    with caplog.at_level(logging.WARNING, logger="warmstart.jsonl"):
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


# --- SIGKILL and rerun of the real generate stage --------------------------------------------------

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
        # While the subprocess imports (seconds), produce the uninterrupted reference run in-process.
        clean_out = generate.run(load_recipe(write_kill_recipe(tmp_path / "clean")))
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

    killed_lines = out.read_bytes().count(b"\n")
    assert 0 < killed_lines < KILL_TOTAL, "the kill must land mid-run, or this test shows nothing"
    # Simulate a kill in the middle of a write as well: half of a record with no newline.
    with out.open("ab") as f:
        f.write(b'{"schema_version": 1, "task_id": "arithmetic/12+3')

    with caplog.at_level(logging.WARNING, logger="warmstart.jsonl"):
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
