"""Each format, from a real run, read back by `datasets` as users read it: `load_dataset(DIR)` for jsonl
and parquet (the card points it at the data and types the columns), `load_from_disk` for hf. Same rows
in every format, the conversation as the run recorded it; the files themselves hold the OpenAI shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from helpers import load_export
from warmstart.export.exporter import export_run
from warmstart.runs.jsonl import read_records
from warmstart.types import Message, ToolCall, ToolFunction, Trajectory

RUNS = ["arithmetic_run", "calculator_run"]


def expected_messages(t: Trajectory, arguments=json.loads) -> list[dict]:
    """The trajectory's messages as an exported row should hold them; tool-call arguments through
    `arguments` (decoded by `datasets`, JSON text in the files)."""
    return [
        {
            "role": m.role,
            "content": m.content or "",
            "reasoning_content": m.reasoning,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": arguments(c.function.arguments)},
                }
                for c in m.tool_calls or []
            ],
            "tool_call_id": m.tool_call_id,
        }
        for m in t.messages
    ]


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_datasets_reads_back_every_trajectory(run, fmt, request, tmp_path):
    root = request.getfixturevalue(run)
    trajectories = read_records(root / "curated" / "train.jsonl", Trajectory)
    out = export_run(root, fmt, out=tmp_path / fmt)
    ds = load_export(out, fmt)
    assert ds.num_rows == len(trajectories)
    for row, t in zip(ds, trajectories):
        assert (row["task_id"], row["sample_index"]) == t.key
        assert row["messages"] == expected_messages(t)
        assert (row["reward"], row["passed"]) == (t.verdict.reward, t.verdict.passed)
        assert (row["provider"], row["model"], row["seed"]) == (
            t.provenance.provider,
            t.provenance.model,
            t.provenance.seed,
        )
        assert row["created"].timestamp() == int(t.provenance.created)
        assert json.loads(row["sampling"]) == t.provenance.sampling


def test_the_calculator_run_has_what_the_round_trip_must_cover(calculator_run):
    trajectories = read_records(calculator_run / "curated" / "train.jsonl", Trajectory)
    assert any(m.tool_calls for t in trajectories for m in t.messages)
    assert any(m.reasoning for t in trajectories for m in t.messages)
    assert any(not m.tool_calls for t in trajectories for m in t.messages if m.role == "assistant")


@pytest.mark.parametrize("run", RUNS)
def test_every_format_loads_with_the_same_types_and_values(run, request, tmp_path):
    root = request.getfixturevalue(run)
    loaded = {fmt: load_export(export_run(root, fmt, out=tmp_path / fmt), fmt) for fmt in ["jsonl", "parquet", "hf"]}
    assert loaded["jsonl"].features == loaded["parquet"].features == loaded["hf"].features
    assert list(loaded["jsonl"]) == list(loaded["parquet"]) == list(loaded["hf"])


def test_the_files_hold_the_openai_shape(calculator_run, tmp_path):
    trajectories = read_records(calculator_run / "curated" / "train.jsonl", Trajectory)
    jsonl = export_run(calculator_run, "jsonl", out=tmp_path / "jsonl") / "data.jsonl"
    parquet = export_run(calculator_run, "parquet", out=tmp_path / "parquet") / "data.parquet"
    from_jsonl = [json.loads(line)["messages"] for line in jsonl.read_text(encoding="utf-8").splitlines()]
    from_parquet = [row["messages"] for row in pq.read_table(parquet).to_pylist()]
    expected = [expected_messages(t, arguments=str) for t in trajectories]  # arguments as JSON text
    assert from_jsonl == expected and from_parquet == expected


def test_think_in_content_moves_the_reasoning_into_the_content(arithmetic_run, tmp_path):
    trajectories = read_records(arithmetic_run / "curated" / "train.jsonl", Trajectory)
    ds = load_export(export_run(arithmetic_run, "parquet", out=tmp_path / "p", think_in_content=True), "parquet")
    answer, t = ds[0]["messages"][-1], trajectories[0]
    assert answer["reasoning_content"] is None
    assert answer["content"] == f"<think>\n{t.messages[-1].reasoning}\n</think>\n{t.messages[-1].content}"


def test_another_curated_data_set_with_data(copied_run, tmp_path):
    records = read_records(copied_run / "curated" / "train.jsonl", Trajectory)[:3]
    (copied_run / "curated" / "small.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records))
    out = export_run(copied_run, "jsonl", data="small")
    assert out == copied_run / "export" / "jsonl"  # the default output directory
    assert load_export(out, "jsonl").num_rows == 3


def test_exports_to_directories_of_one_name_load_their_own_rows(arithmetic_run, calculator_run, tmp_path):
    """`datasets` caches a local directory's data by its name and card: the card's digest of the data keeps
    a second export named like the first (another run's, or a re-export) from loading the first's rows."""
    cache = tmp_path / "cache"
    first = export_run(arithmetic_run, "jsonl", out=tmp_path / "a" / "jsonl")
    second = export_run(calculator_run, "jsonl", out=tmp_path / "b" / "jsonl")
    assert load_export(first, "jsonl", cache)[0]["task_id"].startswith("arithmetic/")
    assert load_export(second, "jsonl", cache)[0]["task_id"].startswith("calculator/")
    export_run(arithmetic_run, "jsonl", out=second, force=True)  # the same directory, re-exported
    assert load_export(second, "jsonl", cache)[0]["task_id"].startswith("arithmetic/")


def test_jsonl_loads_neither_torch_nor_the_datasets_extra(arithmetic_run, tmp_path):
    """`warmstart export` in its own process: a jsonl export needs none of the heavy libraries a stage does."""
    heavy = "('torch', 'transformers', 'pyarrow', 'datasets')"
    code = (
        f"import atexit, sys; atexit.register(lambda: print(sorted(m for m in {heavy} if m in sys.modules))); "
        "from warmstart.cli import main; main()"
    )
    args = ["export", str(arithmetic_run), "--out", str(tmp_path / "j")]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path / "j"), "[]"]


# Arguments Python's json reads but `datasets` cannot decode as written: NaN became null, and an integer
# beyond 64 bits made the whole parquet or hf export fail to load ("Value is too big!").
UNDECODABLE = [
    '{"x": NaN}',
    '{"x": -Infinity}',
    '{"n": 123456789012345678901234567890}',
    '{"x": -12345678901234567890123.5}',
]


def test_arguments_datasets_cannot_decode_load_as_the_text_the_teacher_wrote(copied_run, tmp_path):
    template = read_records(copied_run / "curated" / "train.jsonl", Trajectory)[0]
    calls = [ToolCall(id=f"c{i}", function=ToolFunction(name="calc", arguments=a)) for i, a in enumerate(UNDECODABLE)]
    fine = ToolCall(id="ok", function=ToolFunction(name="calc", arguments='{"n": 18446744073709551615, "x": -0.5}'))
    messages = [*template.messages[:-1], Message(role="assistant", tool_calls=[*calls, fine])]
    t = template.model_copy(update={"messages": messages})
    (copied_run / "curated" / "train.jsonl").write_text(t.model_dump_json() + "\n")
    for fmt in ["jsonl", "parquet", "hf"]:
        ds = load_export(export_run(copied_run, fmt, out=tmp_path / fmt), fmt)
        arguments = [c["function"]["arguments"] for c in ds[0]["messages"][-1]["tool_calls"]]
        assert arguments == [*UNDECODABLE, {"n": 18446744073709551615, "x": -0.5}], fmt
