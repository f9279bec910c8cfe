"""Core records through JSON: round trips, the schema version, unknown fields refused (ARCHITECTURE.md "Core types")."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from helpers import make_trajectory
from warmstart.types import (
    SCHEMA_VERSION,
    Message,
    Task,
    Trajectory,
    Verdict,
)


@pytest.mark.parametrize(
    "record",
    [
        Message(role="assistant", content=None, reasoning="think"),
        Task(
            id="a/1",
            env="arithmetic",
            prompt=[Message(role="user", content="q")],
            hidden={"answer": -3},
            split="eval",
            meta={"op": "-"},
        ),
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
        Task(id="a", env="e", prompt=[Message(role="user", content="hi")], split="test")


@pytest.mark.parametrize(
    "task_id, prompt, why",
    [
        ("", [{"role": "user", "content": "hi"}], "id"),
        ("  ", [{"role": "user", "content": "hi"}], "id"),
        ("a", [], "a task's prompt needs a user message with text"),
        ("a", [{"role": "assistant", "content": "hi"}], "a task's prompt needs a user message with text"),
        ("a", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": None}], "needs a user message"),
    ],
)
def test_a_task_that_names_nothing_or_asks_nothing_is_refused(task_id, prompt, why):
    with pytest.raises(ValidationError, match=why):
        Task.model_validate({"id": task_id, "env": "e", "prompt": prompt, "split": "train"})
