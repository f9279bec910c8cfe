"""Tasks from data: the rows of a JSONL file, a parquet file, a `datasets` directory or a Hugging Face
hub dataset, mapped to a prompt, an answer, an id and a split, for an environment to turn into Tasks.

An environment that takes tasks from data has a `data: DataSource | None` option and calls
`load_rows(source, where)`; `where` names the option in every error (`env.options.data`).

- The format follows the path: `.jsonl`/`.json` is JSON Lines, `.parquet`/`.pq` parquet, a directory
  `datasets.save_to_disk`'s layout. A hub dataset (`load_dataset(path, subset, split=split)`) is asked
  for by `format = "hub"` only, so that a mistyped local path is an error here, never a download.
- pyarrow and datasets are the `datasets` extra, imported only for the formats that need them.
- The split is a hash of the prompt (`base.hash_split`): the same on every run and machine, whatever the
  order or size of the data, and a prompt that appears twice cannot land in both splits.
- Every problem with the input is one `WarmstartError` line naming the file and the row or field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..curation.text import matching_key
from ..errors import JSON_ERRORS, WarmstartError, json_problem
from ..types import Message
from .base import hash_split

log = logging.getLogger(__name__)

EXTRA = "pip install 'warmstart[datasets]'"
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
SHOWN_FIELDS = 12  # a row's field names listed in an error, at most
MISSING = object()  # a field a row does not have (None is a null it has)


class DataSource(BaseModel):
    """Where an environment's tasks come from and which field of a row is what."""

    model_config = ConfigDict(extra="forbid")

    path: str  # a file, a save_to_disk directory, or with format = "hub" a hub dataset name
    format: Literal["auto", "jsonl", "parquet", "datasets", "hub"] = "auto"  # auto: by suffix or directory
    subset: str | None = None  # hub: the dataset's configuration (load_dataset's `name`), e.g. "main"
    split: str = "train"  # a dataset with several splits: the one to read (train/eval is the hash split)
    prompt_field: str = "problem"
    answer_field: str = "answer"
    solution_field: str | None = None  # a worked solution, for the reference teacher
    id_field: str | None = None  # None: a hash of the prompt
    system_prompt: str | None = None
    eval_share: float = Field(0.125, gt=0.0, le=0.5)  # 1/N: one hash bucket in N is eval

    @field_validator("eval_share")
    @classmethod
    def _one_in_n(cls, value: float) -> float:
        buckets = round(1 / value)
        if abs(buckets * value - 1) > 1e-9 or buckets > 256:
            raise ValueError(
                f"eval_share must be 1/N for a whole N up to 256 (0.5, 0.25, 0.2, 0.125, 0.1, ...), got {value}: "
                "the split puts one hash bucket in N in eval"
            )
        return value

    @property
    def eval_buckets(self) -> int:
        return round(1 / self.eval_share)


@dataclass(frozen=True)
class TaskRow:
    """One row, mapped: what an environment needs to make a Task."""

    id: str
    prompt: str
    answer: str
    solution: str | None
    split: str  # "train" | "eval"


def load_rows(source: DataSource, where: str) -> list[TaskRow]:
    """Every row of the source, mapped and split; duplicates of a prompt after its first row left out. A
    prompt is its text as the splits' overlap check reads it (`curation.text.normalize`): rows apart only in
    case, a digit's script (`٤٦`, fullwidth `４６`) or number separators had each been a task, split by
    their raw text: two in different splits stopped every stage with an overlap no setting could fix."""
    records, origin = read_records(source, where)
    if not records:
        raise WarmstartError(f"{where}: {origin} has no rows")
    rows: dict[str, TaskRow] = {}
    first_at: dict[str, str] = {}  # prompt -> where its kept row is
    disagreeing: list[str] = []  # repeats of a prompt with another answer: a label problem to say, not to hide
    ids: set[str] = set()
    for number, record in records:
        row = map_row(source, record, f"{where}: {origin}: {number}")
        key = matching_key(row.prompt)
        if key in rows:
            if row.answer != rows[key].answer:
                disagreeing.append(f"{number} (answer {row.answer[:40]!r}) repeats {first_at[key]}")
            continue
        if row.id in ids:
            raise WarmstartError(f"{where}: {origin}: {number}: id {row.id!r} is used by an earlier row")
        ids.add(row.id)
        rows[key], first_at[key] = row, f"{number} (answer {row.answer[:40]!r})"
    if disagreeing:
        log.warning(
            "%s: %s: %d rows repeat an earlier row's prompt with another answer; the first row of each is kept "
            "(first: %s)",
            where,
            origin,
            len(disagreeing),
            disagreeing[0],
        )
    return list(rows.values())


def prompt_messages(source: DataSource, text: str) -> list[Message]:
    system = [Message(role="system", content=source.system_prompt)] if source.system_prompt else []
    return [*system, Message(role="user", content=text)]


def map_row(source: DataSource, record: dict, where: str) -> TaskRow:
    where = with_id(record, source.id_field or "id", where)
    prompt = nonblank_text(record, source.prompt_field, where)
    # A blank answer is a task no reply can pass: every sample would score 0, silently.
    answer = nonblank_text(record, source.answer_field, where)
    solution = field_text(record, source.solution_field, where) if source.solution_field else None
    row_id = nonblank_text(record, source.id_field, where) if source.id_field else prompt_hash(prompt)
    split = hash_split(" ".join(prompt.lower().split()), source.eval_buckets)
    return TaskRow(id=row_id, prompt=prompt, answer=answer, solution=solution, split=split)


def nonblank_text(record: dict, field: str, where: str) -> str:
    text = field_text(record, field, where)
    if not text.strip():
        raise WarmstartError(f"{where}: field {field!r} is empty")
    return text


def field_text(record: dict, field: str, where: str) -> str:
    """A mapped field as text: strings as they are, numbers written out (GSM8K-style integer answers)."""
    value = field_value(record, field)
    if value is MISSING or value is None:
        fields = ", ".join(list(record)[:SHOWN_FIELDS]) or "nothing"
        missing = "no field" if value is MISSING else "a null in field"
        raise WarmstartError(f"{where}: {missing} {field!r} (it has: {fields})")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise WarmstartError(f"{where}: field {field!r} holds {type(value).__name__!r}, not text or a number")
    if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN / Infinity, a parquet NaN
        raise WarmstartError(f"{where}: field {field!r} holds {value}, not text or a number a reply can give")
    return value if isinstance(value, str) else number_text(value)


def field_value(record: dict, field: str) -> Any:
    """`record[field]`, or for a dotted name not a key itself (`meta.answer`) the nested value; MISSING if absent."""
    if field in record:
        return record[field]
    value: Any = record
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def number_text(value: int | float) -> str:
    """A number as a person writes it: never in exponent notation (str(2.5e-05) is "2.5e-05", str(1e16)
    "1e+16", which no answer is judged equal to), a float with the digits of its shortest repr."""
    return str(value) if isinstance(value, int) else format(Decimal(repr(value)), "f")


def with_id(record: dict, id_field: str, where: str) -> str:
    """`where` with the row's id, when it has one: a row is easier to find by its id than by its number."""
    row_id = record.get(id_field)
    return f"{where} (id {row_id!r})" if isinstance(row_id, (str, int)) and not isinstance(row_id, bool) else where


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def read_records(source: DataSource, where: str) -> tuple[list[tuple[str, dict]], str]:
    """(row label, record) pairs and the name of where they came from."""
    kind = detect_format(source, where)
    path = Path(source.path)
    if kind == "jsonl":
        return read_jsonl(path, where), str(path)
    if kind == "parquet":
        return numbered(read_parquet(path, where)), str(path)
    if kind == "datasets":
        return numbered(read_saved_dataset(path, source.split, where)), str(path)
    return numbered(read_hub(source, where)), f"hub dataset {source.path}"


def detect_format(source: DataSource, where: str) -> str:
    if source.format == "hub":
        return "hub"
    path = Path(source.path)
    if not path.exists():
        raise WarmstartError(f"{where}: {path} does not exist (a Hugging Face hub dataset needs format = 'hub')")
    if source.format != "auto":
        return source.format
    if path.is_dir():
        return "datasets"
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return "parquet"
    if path.suffix.lower() in JSONL_SUFFIXES:
        return "jsonl"
    raise WarmstartError(
        f"{where}: {path}: unknown format from its suffix (.jsonl, .parquet, or a datasets directory); set format"
    )


def numbered(records: list[dict]) -> list[tuple[str, dict]]:
    return [(f"row {index}", record) for index, record in enumerate(records)]


def read_jsonl(path: Path, where: str) -> list[tuple[str, dict]]:
    try:
        # "\n" only: splitlines() would also split at U+2028 / U+2029 / U+0085, which JSON strings hold as they are
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError:
        raise WarmstartError(f"{where}: {path}: not UTF-8 text (JSON Lines expected)") from None
    except OSError as exc:
        raise WarmstartError(f"{where}: {path}: cannot be read ({exc.strerror})") from None
    if path.suffix.lower() == ".json" and "".join(lines).lstrip().startswith("["):
        return json_array(path, "\n".join(lines), where)
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            records.append((f"line {number}", parse_line(line, f"{where}: {path}: line {number}")))
    return records


def json_array(path: Path, text: str, where: str) -> list[tuple[str, dict]]:
    """A `.json` file holding one array of objects (how many datasets ship), rows numbered from 0."""
    try:
        records = json.loads(text)
    except JSON_ERRORS as exc:
        at = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise WarmstartError(f"{where}: {path}: not valid JSON ({json_problem(exc)}{at})") from None
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise WarmstartError(f"{where}: {path}: row {index}: a JSON {type(record).__name__}, not an object")
    return numbered(records)


def parse_line(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except JSON_ERRORS as exc:
        raise WarmstartError(f"{where}: not valid JSON ({json_problem(exc)}); JSON Lines expected") from None
    if not isinstance(record, dict):
        raise WarmstartError(f"{where}: a JSON {type(record).__name__}, not an object")
    return record


def read_parquet(path: Path, where: str) -> list[dict]:
    try:  # the optional extra, loaded only when a parquet file is read
        import pyarrow.parquet as pq
    except ImportError:
        raise WarmstartError(f"{where}: {path}: reading parquet needs pyarrow: {EXTRA}") from None
    try:
        return pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise WarmstartError(f"{where}: {path}: not a readable parquet file ({first_line(exc)})") from None


def read_saved_dataset(path: Path, split: str, where: str) -> list[dict]:
    datasets = import_datasets(where)
    try:
        data = datasets.load_from_disk(str(path))
    except Exception as exc:  # not its layout (FileNotFoundError), or one it cannot read (an empty one: IndexError)
        raise WarmstartError(
            f"{where}: {path}: not a readable datasets.save_to_disk directory ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    return dataset_records(data, split, f"{where}: {path}")


def read_hub(source: DataSource, where: str) -> list[dict]:
    datasets = import_datasets(where)
    try:  # a hub name works online; offline (HF_DATASETS_OFFLINE=1) only what is in the local cache
        data = datasets.load_dataset(source.path, source.subset, split=source.split)
    except Exception as exc:  # the hub, the network and the cache raise many types; every one is the input's
        raise WarmstartError(
            f"{where}: hub dataset {source.path!r} could not be loaded ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    return dataset_records(data, source.split, f"{where}: hub dataset {source.path}")


def dataset_records(data: Any, split: str, where: str) -> list[dict]:
    """The rows of a Dataset, or of one split of a DatasetDict."""
    if hasattr(data, "keys"):  # a DatasetDict: one directory or hub dataset per split
        if split not in data:
            raise WarmstartError(f"{where}: no split {split!r} (it has: {', '.join(data.keys())}); set split")
        data = data[split]
    return data.to_list()


def import_datasets(where: str):
    try:  # the optional extra, loaded only for a datasets directory or a hub dataset
        import datasets
    except ImportError:
        raise WarmstartError(f"{where}: reading a Hugging Face dataset needs datasets: {EXTRA}") from None
    return datasets


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
