"""Benchmark files: JSONL or parquet, the text field found or named; bad input is one line naming it."""

from __future__ import annotations

import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warmstart.curation.benchmarks import read_texts
from warmstart.errors import WarmstartError


def jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_first_common_field_is_detected(tmp_path):
    path = jsonl(tmp_path / "b.jsonl", [{"id": 1, "answer": "5", "question": "What is 2+3?"}, {"question": "Why?"}])
    assert read_texts(path, None) == ["What is 2+3?", "Why?"]


def test_a_named_field_and_null_or_empty_items(tmp_path):
    path = jsonl(tmp_path / "b.jsonl", [{"q": "What is 2+3?", "text": "x"}, {"q": None, "text": "y"}, {"q": " "}])
    assert read_texts(path, "q") == ["What is 2+3?"]


def test_a_chat_gives_its_user_turns(tmp_path):
    chat = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": [{"type": "text", "text": "And 4+4?"}]},
    ]
    sharegpt = [{"from": "human", "value": "What is 9+1?"}, {"from": "gpt", "value": "10"}]
    path = jsonl(tmp_path / "b.jsonl", [{"messages": chat}, {"messages": sharegpt}])
    assert read_texts(path, None) == ["What is 2+3?\nAnd 4+4?", "What is 9+1?"]


def test_parquet_columns(tmp_path):
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"problem": ["What is 2+3?", None], "level": [1, 2]}), path)
    assert read_texts(path, None) == ["What is 2+3?"]
    chats = tmp_path / "chats.parquet"
    pq.write_table(pa.table({"prompt": [[{"role": "user", "content": "What is 7-1?"}]]}), chats)
    assert read_texts(chats, None) == ["What is 7-1?"]


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"problem": ["What is 2+3?"]}), path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # what a missing package looks like to import
    with pytest.raises(WarmstartError, match=r"pip install 'warmstart\[datasets\]'"):
        read_texts(path, None)


@pytest.mark.parametrize(
    "name, content, field, needle",
    [
        ("b.jsonl", '{"id": 1, "answer": "5"}\n', None, "b.jsonl:1: no text field (it has: id, answer)"),
        ("b.jsonl", '{"question": "a b c"}\n{"id": 2}\n', None, "b.jsonl:2: no text field (it has: id)"),
        ("b.jsonl", '{"question": "a b c"}\n{"id": 2}\n', "question", "b.jsonl:2: no field 'question' (it has: id)"),
        ("b.jsonl", '{"q": "a b c"}\n', "prompt", "b.jsonl:1: no field 'prompt' (it has: q)"),
        ("b.jsonl", '{"question": "a b c"}\n\n{"question": oops}\n', None, "b.jsonl:3: not valid JSON"),
        ("b.jsonl", '["a", "b"]\n', None, "b.jsonl:1: a JSON list, not an object"),
        ("b.jsonl", '{"question": 42}\n', None, "b.jsonl:1: field 'question' holds 'int' values, not text"),
        (
            "b.jsonl",
            '{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}\n',
            None,
            "b.jsonl:1: field 'messages' holds a chat part whose text is 'int', not text",
        ),
        ("b.jsonl", "", None, "b.jsonl: has no items"),
        ("b.jsonl", b"\xff\xfe\x00", None, "b.jsonl:1: not UTF-8"),
        ("b.parquet", "not parquet at all", None, "b.parquet: not a readable parquet file"),
    ],
)
def test_bad_files_are_one_line_naming_the_problem(tmp_path, name, content, field, needle):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(WarmstartError) as error:
        read_texts(path, field)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_a_parquet_file_without_the_column(tmp_path):
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": [1], "label": ["x"]}), path)
    with pytest.raises(WarmstartError, match=r"b.parquet: no text field \(it has: id, label\)"):
        read_texts(path, None)
    with pytest.raises(WarmstartError, match=r"b.parquet: no column 'question' \(it has: id, label\)"):
        read_texts(path, "question")


def test_a_missing_file(tmp_path):
    with pytest.raises(WarmstartError, match="curate.decontaminate_against: .*missing.jsonl does not exist"):
        read_texts(tmp_path / "missing.jsonl", None)
