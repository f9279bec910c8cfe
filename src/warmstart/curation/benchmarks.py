"""Benchmark files for decontamination: the text of each item of a JSONL or parquet file.

An item's text is its field named (`curate.decontaminate_field`) or the first of TEXT_FIELDS and
CHAT_FIELDS it has that holds text: a null or empty one is passed over, as datasets exported with every
column on every row write them. A field holding a chat (a list of messages) gives its user turns: the
question, not a system prompt every item repeats or a reference answer short enough to be anywhere; one
holding a message's content parts (`[{"type": "text", "text": ...}]`) gives their text.
Files are read a line (a parquet batch) at a time: a benchmark dump of several GB needs the memory of
its texts, not of the file. Every problem is one `WarmstartError` line naming the file (and the line of
a JSONL file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import JSON_ERRORS, WarmstartError, json_problem

TEXT_FIELDS = ("prompt", "question", "problem", "input", "instruction", "query", "text", "content")
CHAT_FIELDS = ("messages", "conversations")
USER_ROLES = ("user", "human")
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_texts(path: Path, field: str | None) -> list[str]:
    """The text of each item of `path` (JSONL, or parquet by its suffix); an item with no text is left out."""
    if not path.is_file():
        raise WarmstartError(f"curate.decontaminate_against: {path} does not exist")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        texts = read_parquet(path, field)
    else:
        texts = read_jsonl(path, field)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise WarmstartError(f"{path}: has no items with text to decontaminate against")
    return texts


def read_jsonl(path: Path, field: str | None) -> Iterator[str]:
    for number, record in jsonl_records(path):
        where = f"{path}:{number}"
        if field is not None and field not in record:
            raise WarmstartError(f"{where}: no field {field!r} (it has: {', '.join(record) or 'nothing'})")
        yield item_text(record, [field] if field else text_fields(where, list(record)), f"{where}: field")


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """Each record of a JSON Lines file with its line number, one line in memory at a time."""
    with path.open("rb") as file:
        # A binary file splits at b"\n" only, as JSON Lines does: U+2028 / U+2029 / U+0085, where splitlines()
        # would split, are characters JSON strings hold as they are.
        for number, raw in enumerate(file, start=1):
            line = decode_line(path, number, raw)
            if line.strip():
                yield number, parse_line(path, number, line)


def decode_line(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark opens a file only
    except UnicodeDecodeError:
        raise WarmstartError(f"{path}:{number}: not UTF-8 text (JSON Lines expected, or a .parquet file)") from None


def parse_line(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except JSON_ERRORS as exc:
        raise WarmstartError(f"{path}:{number}: not valid JSON ({json_problem(exc)}); JSON Lines expected") from None
    if not isinstance(record, dict):
        raise WarmstartError(f"{path}:{number}: a JSON {type(record).__name__}, not an object with a text field")
    return record


def read_parquet(path: Path, field: str | None) -> Iterator[str]:
    try:  # an optional extra, loaded only when a parquet file is listed
        import pyarrow.parquet as pq
    except ImportError:
        raise WarmstartError(f"{path}: reading parquet needs pyarrow: pip install 'warmstart[datasets]'") from None
    try:
        file = pq.ParquetFile(path)
        names = file.schema_arrow.names
        if field is not None and field not in names:
            raise WarmstartError(f"{path}: no column {field!r} (it has: {', '.join(names) or 'nothing'})")
        fields = [field] if field else text_fields(str(path), names)
        rows = (row for batch in file.iter_batches(columns=fields) for row in batch.to_pylist())
        for number, row in enumerate(rows):
            yield item_text(row, fields, f"{path}: row {number}: column")
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise WarmstartError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None


def text_fields(where: str, names: list[str]) -> list[str]:
    """The fields of TEXT_FIELDS and CHAT_FIELDS among `names`, in that order: where an item's text may be."""
    found = [name for name in TEXT_FIELDS + CHAT_FIELDS if name in names]
    if not found:
        raise WarmstartError(
            f"{where}: no text field (it has: {', '.join(names) or 'nothing'}); "
            f"expected one of {', '.join(TEXT_FIELDS + CHAT_FIELDS)}, or set curate.decontaminate_field"
        )
    return found


def item_text(record: dict, fields: list[str], where: str) -> str:
    """The text of the first of `fields` that holds any (empty when none does). A later field is read only
    when the earlier ones are null or empty: `{"question": "...", "input": 5}` is a question. An Alpaca-style
    item (`instruction`, `input`, `output`, its fields found, not named) is its instruction and then its input
    (`alpaca_text`)."""
    for name in fields:
        text = as_text(record[name], f"{where} {name!r}")
        if text.strip():
            if name in ALPACA_FIELDS and set(ALPACA_FIELDS) <= set(fields):
                return alpaca_text(record, where)
            return text
    return ""


# Alpaca's layout: the task in `instruction`, what it applies to in `input` (often empty), the reply in
# `output`. Its `input` alone (`The dog chased the cat`, `I loved it`) is not the item: a few words any text
# may hold, while the instruction, the words a copy repeats, would go unindexed.
ALPACA_FIELDS = ("instruction", "input")


def alpaca_text(record: dict, where: str) -> str:
    """An Alpaca item's text: its instruction, then its input where it has one (a line apart)."""
    parts = (as_text(record[name], f"{where} {name!r}") for name in ALPACA_FIELDS)
    return "\n".join(part for part in parts if part.strip())


def as_text(value: Any, where: str) -> str:
    """A string as it is; a chat's user turns joined; a list of content parts (OpenAI's, a message's content
    exported alone) as its text parts joined; nothing (null) as empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        if not any("role" in m or "from" in m for m in value):  # no message has a speaker: they are parts
            return turn_text({"content": value}, where)
        return "\n".join(turn_text(m, where) for m in value if (m.get("role") or m.get("from")) in USER_ROLES)
    raise WarmstartError(f"{where} holds {type(value).__name__!r} values, not text or a list of chat messages")


def turn_text(message: dict, where: str) -> str:
    """A chat turn's text: OpenAI's `content` (a string or a list of parts; parts without text, an image's,
    add none) or ShareGPT's `value`."""
    content = message.get("content", message.get("value"))
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        odd = next((text for text in texts if text is not None and not isinstance(text, str)), None)
        if odd is not None:
            raise WarmstartError(f"{where} holds a chat part whose text is {type(odd).__name__!r}, not text")
        return "\n".join(text for text in texts if text)
    return content if isinstance(content, str) else ""
