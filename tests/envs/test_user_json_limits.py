"""JSON a user's file may hold that `json.loads` refuses with other than JSONDecodeError: nesting deeper than the
stack (RecursionError) and an integer past Python's 4,300 digits (ValueError). Each is one error naming the file
and line, as any other bad line; they had escaped as tracebacks, or as `tasks.train: Exceeds the limit ...`
naming neither (review 81)."""

from __future__ import annotations

import pytest

from warmstart.curation.benchmarks import read_texts
from warmstart.envs.python import load_task_records
from warmstart.envs.task_data import DataSource, load_rows
from warmstart.errors import WarmstartError

DEEP = '{"problem": "2 + 2", "answer": "4", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
HUGE = '{"problem": "2 + 2", "answer": ' + "9" * 5000 + "}"
GOOD = '{"problem": "1 + 1", "answer": "2"}'


@pytest.mark.parametrize("line, why", [(DEEP, "nested too deeply"), (HUGE, "Exceeds the limit")])
def test_a_data_file_line_json_cannot_read_names_the_file_and_line(tmp_path, line, why):
    path = tmp_path / "data.jsonl"
    path.write_text(f"{GOOD}\n{line}\n")
    with pytest.raises(WarmstartError, match=rf"^env.options.data: {path}: line 2: not valid JSON \({why}"):
        load_rows(DataSource(path=str(path)), "env.options.data")


@pytest.mark.parametrize("line, why", [(DEEP, "nested too deeply"), (HUGE, "Exceeds the limit")])
def test_a_json_array_file_json_cannot_read_names_the_file(tmp_path, line, why):
    path = tmp_path / "data.json"
    path.write_text(f"[{GOOD}, {line}]")
    with pytest.raises(WarmstartError, match=rf"^env.options.data: {path}: not valid JSON \({why}"):
        load_rows(DataSource(path=str(path)), "env.options.data")


@pytest.mark.parametrize("line, why", [(DEEP, "nested too deeply"), (HUGE, "Exceeds the limit")])
def test_a_benchmark_line_json_cannot_read_names_the_file_and_line(tmp_path, line, why):
    path = tmp_path / "bench.jsonl"
    path.write_text(f'{{"question": "a"}}\n{line}\n')
    with pytest.raises(WarmstartError, match=rf"^{path}:2: not valid JSON \({why}"):
        read_texts(path, None)


@pytest.mark.parametrize("line, why", [(DEEP, "nested too deeply"), (HUGE, "Exceeds the limit")])
def test_a_python_tasks_file_line_json_cannot_read_names_the_file_and_line(tmp_path, line, why):
    path = tmp_path / "tasks.jsonl"
    path.write_text(f"{line}\n")
    with pytest.raises(WarmstartError, match=rf"^{path}:1: not valid JSON \({why}"):
        load_task_records(path)
