"""`warmstart report` on the run directories users bring: stopped before eval, hand-edited into valid JSON of
the wrong shape, with sample files that are huge or not UTF-8. Each is a report that says what is missing
or one `error:` line naming the file and the field; never a traceback, and an earlier report.html is left
as it was."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import curated_run
from warmstart.cli import app
from warmstart.report.html import failed_samples
from warmstart.stages import evaluate, sft

RUN = [
    "sft.steps=4",
    "eval.k=2",
    "eval.max_new_tokens=24",
    "eval.policies.base='base'",
    "eval.policies.student='student'",
    "eval.policies.teacher='teacher'",
]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory) -> Path:
    """A real run: reference-teacher data curated, a 4-step student, eval of base, student and teacher."""
    root = tmp_path_factory.mktemp("odd") / "run"
    recipe = curated_run(root, *RUN, train=40)
    sft.run(recipe)
    evaluate.run(recipe)
    return root


@pytest.fixture()
def copied(evaluated_run, tmp_path) -> Path:
    return Path(shutil.copytree(evaluated_run, tmp_path / "run"))


def report(run_dir: Path):
    return CliRunner().invoke(app, ["report", str(run_dir)])


def assert_one_error_line(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def student(results: dict) -> dict:
    return results["policies"]["student"]


# (file, edit, what the error line says): valid JSON, not what warmstart writes.
HAND_EDITS = {
    "a row with no entry in policies": ("eval/results.json", lambda r: r["rows"].append("ghost"), "'ghost'"),
    "rows as one string": ("eval/results.json", lambda r: r.update(rows="student"), 'rows is "student"'),
    "k removed": ("eval/results.json", lambda r: r.pop("k"), "k is missing"),
    "a policy null": ("eval/results.json", lambda r: r["policies"].update(student=None), "policies.student is null"),
    "pass@1 removed": ("eval/results.json", lambda r: student(r).pop("pass@1"), "policies.student.pass@1"),
    "pass@1 as text": ("eval/results.json", lambda r: student(r).update({"pass@1": "0.5"}), 'pass@1 is "0.5"'),
    "an interval of one number": (
        "eval/results.json",
        lambda r: student(r).update({"pass@1_ci": [0.1]}),
        "policies.student.pass@1_ci",
    ),
    "no task scored": ("eval/results.json", lambda r: student(r).update(tasks_scored=0), "no task scored"),
    "a comparison cut short": (
        "eval/results.json",
        lambda r: r["comparisons"][0].pop("within_noise"),
        "comparisons[0].within_noise is missing",
    ),
    "a stage that is a list": ("manifest.json", lambda m: m["stages"].update({"sft:student": [1]}), "sft:student"),
    "seconds as text": (
        "manifest.json",
        lambda m: m["stages"]["sft:student"].update(seconds="12"),
        "stages.sft:student.seconds",
    ),
    "drop reasons null": (
        "manifest.json",
        lambda m: m["stages"]["curate:train"].update(dropped=None),
        "stages.curate:train.dropped",
    ),
}


@pytest.mark.parametrize("case", HAND_EDITS)
def test_a_hand_edited_run_file_is_one_error_line_and_the_old_report_stays(copied, case):
    name, edit, says = HAND_EDITS[case]
    assert report(copied).exit_code == 0
    before = (copied / "report.html").read_bytes()
    edit_json(copied / name, edit)
    assert_one_error_line(report(copied), str(copied / name), says)
    assert (copied / "report.html").read_bytes() == before
    assert sorted(p.name for p in copied.iterdir() if "report" in p.name) == ["report.html"]  # no .tmp left


def test_a_sample_file_that_is_not_utf8_is_one_error_line(copied):
    (copied / "eval" / "student.jsonl").write_bytes(b"\xff\xfe not UTF-8\n")
    assert_one_error_line(report(copied), f"{copied / 'eval' / 'student.jsonl'}:1", "not an eval sample")


def test_a_sample_whose_message_content_is_not_text_is_one_error_line(copied):
    path = copied / "eval" / "student.jsonl"
    sample = json.loads(path.read_text().splitlines()[0])
    sample["messages"][-1]["content"] = {"text": "hand-edited"}
    path.write_text(json.dumps(sample) + "\n")
    assert_one_error_line(report(copied), f"{path}:1", "without its messages")


def test_a_large_sample_file_is_read_a_line_at_a_time(copied):
    """eval/<policy>.jsonl of a large eval (here 20 MB of passed samples, no failure to stop early at) is
    scanned for failures without holding the file in memory."""
    path = copied / "eval" / "teacher.jsonl"
    passed = next(line for line in path.read_text().splitlines() if '"passed":true' in line.replace(" ", ""))
    lines = (passed + "\n") * (20_000_000 // (len(passed) + 1))
    path.write_text(lines)
    tracemalloc.start()
    try:
        assert failed_samples(path) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"{peak:,} bytes held for a {len(lines):,}-byte file"


def test_a_run_stopped_before_eval_says_what_it_lacks(tmp_path):
    """generate and curate done, nothing trained or evaluated: the page says so, rather than leaving the
    results and curves out without a word."""
    root = tmp_path / "run"
    curated_run(root, train=24)
    result = report(root)
    assert result.exit_code == 0, result.output
    page = (root / "report.html").read_text()
    assert "Not in this run yet: held-out results (no eval/results.json: eval has not finished)" in page
    assert "training curves (no training steps in metrics.jsonl)" in page
    assert "the data funnel" not in page.split("Not in this run yet")[1].split("</p>")[0]  # curate finished
