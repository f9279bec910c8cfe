"""Digits of any script compare as ASCII digits; a benchmark row's text is its first field that holds
any; a benchmark file is read a line at a time."""

from __future__ import annotations

import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warmstart.curation.benchmarks import read_texts
from warmstart.curation.contamination import Source, find_contamination
from warmstart.curation.near_dup import Item, near_duplicates
from warmstart.curation.text import content_signature, segments, words
from warmstart.errors import WarmstartError

QUESTION = "What is 46+88? End with 'Answer: <integer>'."
SCRIPTS = {
    "Arabic-Indic": "٠١٢٣٤٥٦٧٨٩",
    "Extended Arabic-Indic": "۰۱۲۳۴۵۶۷۸۹",
    "Devanagari": "०१२३४५६७८९",
    "Bengali": "০১২৩৪৫৬৭৮৯",
    "Thai": "๐๑๒๓๔๕๖๗๘๙",
    "fullwidth": "０１２３４５６７８９",
    "mathematical bold": "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗",
}


def in_script(text: str, script: str) -> str:
    return text.translate(str.maketrans("0123456789", SCRIPTS[script]))


@pytest.mark.parametrize("script", SCRIPTS)
def test_digits_of_any_script_are_ascii_digits(script):
    assert words(in_script("What is 3 + 4? 1,000 x7", script)) == ["what", "is", "3", "+", "4", "1000", "x7"]
    assert words(in_script("What is 3 + 5?", script)) != words("What is 3 + 4?")  # the value, not just any digit


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_item_in_other_digits_is_found(script):
    found, _ = find_contamination([Source("bench", ["What is 3 + 4?"])], [[in_script("What is 3 + 4?", script)]], n=13)
    assert found == ["bench"]
    found, _ = find_contamination([Source("bench", [in_script(QUESTION, script)])], [[QUESTION]], n=13)
    assert found == ["bench"]


@pytest.mark.parametrize("script", ["Arabic-Indic", "Devanagari"])
def test_a_copy_in_other_digits_is_a_near_duplicate(script):
    texts = [QUESTION, in_script(QUESTION, script), "What is 46+89? End with 'Answer: <integer>'."]
    items = [Item(text, content_signature(segments(text)), (rank,)) for rank, text in enumerate(texts)]
    assert near_duplicates(items, shingle_size=5, threshold=0.8) == {1: 0}


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_null_or_empty_first_text_field_gives_way_to_the_next(tmp_path):
    chat = [{"role": "user", "content": "What is 9+1?"}]
    path = jsonl(
        tmp_path / "b.jsonl",
        [
            {"question": None, "problem": "What is 2+3?"},
            {"prompt": "", "question": "What is 4+4?"},
            {"question": " ", "messages": chat},
            {"problem": "What is 6+1?"},  # another row's fields
            {"question": "What is 7+7?", "input": 5},  # a later field is not read: not an error
            {"question": None, "problem": None},  # no text: left out, as a null item always was
        ],
    )
    assert read_texts(path, None) == ["What is 2+3?", "What is 4+4?", "What is 9+1?", "What is 6+1?", "What is 7+7?"]


def test_a_null_first_column_gives_way_to_the_next_in_parquet(tmp_path):
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"question": [None, "What is 4+4?"], "problem": ["What is 2+3?", "other"]}), path)
    assert read_texts(path, None) == ["What is 2+3?", "What is 4+4?"]


@pytest.mark.parametrize(
    "content, needle",
    [
        (
            '{"question": null, "problem": "a b c"}\n{"id": 2, "answer": "5"}\n',
            "b.jsonl:2: no text field (it has: id, answer)",
        ),
        ('{"question": null, "problem": 42}\n', "b.jsonl:1: field 'problem' holds 'int' values, not text"),
        ('{"question": "a b c"}\n{"question": "d e f"}\n{"question": "caf\xe9"}\n', "b.jsonl:3: not UTF-8 text"),
    ],
)
def test_a_bad_row_is_one_line_naming_file_and_line(tmp_path, content, needle):
    path = tmp_path / "b.jsonl"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(WarmstartError) as error:
        read_texts(path, None)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_a_file_is_split_at_newlines_only_and_its_byte_order_mark_ignored(tmp_path):
    path = tmp_path / "b.jsonl"
    lines = [json.dumps({"question": "one\u2028line\u0085still"}, ensure_ascii=False), '{"question": "two"}', ""]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    assert read_texts(path, None) == ["one\u2028line\u0085still", "two"]


def test_a_large_file_is_not_held_in_memory_whole(tmp_path):
    """Reading needs the memory of the texts and of one line, not of the file: a benchmark dump of several GB
    carries long solutions and metadata beside each short question."""
    path = tmp_path / "b.jsonl"
    with path.open("w") as file:
        for i in range(1000):
            file.write(json.dumps({"question": f"What is {i}+1?", "solution": "x" * 10_000}) + "\n")
    size = path.stat().st_size  # 10 MB
    tracemalloc.start()
    try:
        texts = read_texts(path, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(texts) == 1000
    assert peak < size / 10, f"peak {peak} bytes reading a {size}-byte file"
