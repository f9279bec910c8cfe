"""Benchmark files for decontamination: the text of each item of a JSONL or parquet file.

The text field is the one named (`curate.decontaminate_field`) or the first of TEXT_FIELDS the file
has. A field holding a chat (a list of messages) gives its user turns: the question, not a system
prompt every item repeats or a reference answer short enough to be anywhere. Every problem is one
`WarmstartError` line naming the file (and the line of a JSONL file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import WarmstartError

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


def read_jsonl(path: Path, field: str | None) -> list[str]:
    texts = []
    try:
        # "\n" only: splitlines() would also split at U+2028 / U+2029 / U+0085, which JSON strings hold as they are
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError:
        raise WarmstartError(f"{path}: not UTF-8 text (JSON Lines expected, or a .parquet file)") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = parse_line(path, number, line)
        field = field or detect_field(f"{path}:{number}", list(record))
        if field not in record:
            raise WarmstartError(f"{path}:{number}: no field {field!r} (it has: {', '.join(record) or 'nothing'})")
        texts.append(as_text(record[field], f"{path}:{number}: field {field!r}"))
    return texts


def parse_line(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise WarmstartError(f"{path}:{number}: not valid JSON ({exc.msg}); JSON Lines expected") from None
    if not isinstance(record, dict):
        raise WarmstartError(f"{path}:{number}: a JSON {type(record).__name__}, not an object with a text field")
    return record


def read_parquet(path: Path, field: str | None) -> list[str]:
    try:  # an optional extra, loaded only when a parquet file is listed
        import pyarrow.parquet as pq
    except ImportError:
        raise WarmstartError(f"{path}: reading parquet needs pyarrow: pip install 'warmstart[datasets]'") from None
    try:
        names = pq.read_schema(path).names
        field = field or detect_field(str(path), names)
        if field not in names:
            raise WarmstartError(f"{path}: no column {field!r} (it has: {', '.join(names) or 'nothing'})")
        values = pq.read_table(path, columns=[field]).column(field).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise WarmstartError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    return [as_text(value, f"{path}: row {row}: column {field!r}") for row, value in enumerate(values)]


def detect_field(where: str, names: list[str]) -> str:
    found = next((name for name in TEXT_FIELDS + CHAT_FIELDS if name in names), None)
    if found is None:
        raise WarmstartError(
            f"{where}: no text field (it has: {', '.join(names) or 'nothing'}); "
            f"expected one of {', '.join(TEXT_FIELDS + CHAT_FIELDS)}, or set curate.decontaminate_field"
        )
    return found


def as_text(value: Any, where: str) -> str:
    """A string as it is; a chat's user turns joined; nothing (null) as empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
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
