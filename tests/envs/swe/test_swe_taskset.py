"""A hand-written or damaged task set is one error naming its file and line, not a traceback out of the
environment (a task without `problem` raised KeyError, a line that is a list TypeError), and a task whose
broken file is the original (nothing to fix: the empty patch scored 1, the reference raised IndexError)
is refused when the set is read."""

from __future__ import annotations

import json

import pytest
from swe_fixture import BROKEN, FAIL_TO_PASS, FILES, PASS_TO_PASS

from warmstart.envs.swe.taskset import read_task_set, write_task_set
from warmstart.errors import WarmstartError

RECORD = {
    "id": "calc/000",
    "repo": "calc",
    "file": "calc/core.py",
    "broken": BROKEN["calc/core.py"],
    "mutation": "clamp returns low above high",
    "problem": "calc: 1 test fails.",
    "fail_to_pass": FAIL_TO_PASS,
    "pass_to_pass": PASS_TO_PASS,
}


def written(tmp_path, *lines) -> str:
    out = tmp_path / "set"
    write_task_set(out, {"name": "calc", "python": "/usr/bin/python3"}, FILES, [RECORD], force=False)
    (out / "tasks.jsonl").write_text("".join(line + "\n" for line in lines))
    return out


def test_a_well_formed_set_loads(tmp_path):
    assert read_task_set(written(tmp_path, json.dumps(RECORD))).tasks == [RECORD]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (json.dumps({k: v for k, v in RECORD.items() if k != "problem"}), "no `problem`"),
        ("[1]", "a task must be a JSON object"),
        (json.dumps({**RECORD, "fail_to_pass": "tests/test_core.py::test_clamp_high"}), "`fail_to_pass` must be"),
        (json.dumps({**RECORD, "fail_to_pass": []}), "`fail_to_pass` must be a non-empty list"),
        (json.dumps({**RECORD, "file": "calc/nope.py"}), "is not in snapshot.json"),
        (json.dumps({**RECORD, "repo": "other"}), "the set is named 'calc'"),
        (json.dumps({**RECORD, "broken": FILES["calc/core.py"]}), "`broken` is the original file"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_a_malformed_task_is_one_error_naming_file_and_line(tmp_path, line, message):
    directory = written(tmp_path, json.dumps(RECORD), line)
    with pytest.raises(WarmstartError, match="tasks.jsonl line 2: ") as raised:
        read_task_set(directory)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_manifest_that_is_not_an_object_is_one_error(tmp_path):
    directory = written(tmp_path, json.dumps(RECORD))
    (directory / "manifest.json").write_text("[]")
    with pytest.raises(WarmstartError, match="manifest.json: not a JSON object"):
        read_task_set(directory)
