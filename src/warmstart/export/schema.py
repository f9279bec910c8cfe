"""The columns of an exported row, described once: the dataset card's `features` and the Arrow schema
are both made from `COLUMNS`, so the three formats load with the same types.

Notation: a string is a `datasets` dtype, a dict a struct of named fields, a one-item list a list of that
item. Every type is nullable in Arrow; `rows.py` fills the fields that are never null (`content` is always a
string, `tool_calls` always a list): chat templates concatenate `content` and loop over `tool_calls`, and a
reader that infers the types from the rows (a JSON file read without its card) finds one type per field.
"""

from __future__ import annotations

STRING, INT, FLOAT, BOOL = "string", "int64", "float64", "bool"
# A real timestamp, not text: a JSON reader (pyarrow's, under `load_dataset`) parses ISO text into one anyway,
# and cast back to a string it would lose the "T" and the time zone.
TIME = "timestamp[s, tz=UTC]"
# JSON text that `datasets` (4.7 or later) hands to the user decoded: a tool call's `arguments`, whose keys
# differ from tool to tool (no struct type could hold them). The OpenAI shape keeps them as text; the chat
# templates of open models render them as an object (`arguments | tojson`: given text, they would write a
# quoted string, and a model trained on that calls its tools with a string).
JSON = "json"

TOOL_CALL = {"id": STRING, "type": STRING, "function": {"name": STRING, "arguments": JSON}}
MESSAGE = {
    "role": STRING,
    "content": STRING,
    "reasoning_content": STRING,
    "tool_calls": [TOOL_CALL],
    "tool_call_id": STRING,
}
COLUMNS = {
    "messages": [MESSAGE],
    "task_id": STRING,
    "sample_index": INT,
    "reward": FLOAT,
    "passed": BOOL,
    "provider": STRING,
    "model": STRING,
    "created": TIME,  # in JSON: ISO 8601 text
    # A JSON object, left as text: its keys differ by provider, and `datasets` decodes JSON floats through
    # pandas' ujson, inexactly (0.3 comes back 0.30000000000000004).
    "sampling": STRING,
    "seed": INT,
    "terms": STRING,
}


def card_features(columns: dict = COLUMNS) -> list[dict]:
    """The columns as a dataset card's `dataset_info.features` (what `datasets.Features._to_yaml_list`
    writes): `load_dataset(DIR)` types a JSON file by it instead of guessing from the rows."""
    return [{"name": name, **_card_type(kind)} for name, kind in columns.items()]


def _card_type(kind) -> dict:
    if isinstance(kind, str):
        return {"dtype": kind}
    if isinstance(kind, dict):
        return {"struct": card_features(kind)}
    (item,) = kind
    return {"list": card_features(item) if isinstance(item, dict) else item}
