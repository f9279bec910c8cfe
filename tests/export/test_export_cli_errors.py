"""Bad input to `warmstart export`: one `error:` line naming the problem, a non-zero exit, and nothing
half-written left behind (an earlier export stays as it was)."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from warmstart.cli import app
from warmstart.export import writers


def export(*args: str):
    return CliRunner().invoke(app, ["export", *map(str, args)])


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_not_a_run_directory(tmp_path):
    assert_one_line_error(export(tmp_path), str(tmp_path), "not a run directory")


def test_no_such_curated_data_names_those_there_are(arithmetic_run, tmp_path):
    assert_one_line_error(export(arithmetic_run, "--data", "nope", "--out", tmp_path / "o"), "nope.jsonl", "train")


def test_no_curated_data_at_all(tmp_path):
    (tmp_path / "manifest.json").write_text('{"stages": {}}')
    assert_one_line_error(export(tmp_path), "no curated data here")


def test_empty_curated_data(copied_run):
    (copied_run / "curated" / "train.jsonl").write_text("")
    assert_one_line_error(export(copied_run), "no trajectories")
    assert not (copied_run / "export").exists()


def test_unknown_format(arithmetic_run, tmp_path):
    assert_one_line_error(
        export(arithmetic_run, "--format", "csv", "--out", tmp_path / "o"), "csv", "jsonl, parquet, hf"
    )


def test_a_non_empty_output_directory_is_kept_without_force(arithmetic_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert_one_line_error(export(arithmetic_run, "--out", out), str(out), "--force")
    assert files(out) == {"mine.txt": b"keep me"}


def test_an_output_that_is_a_file(arithmetic_run, tmp_path):
    (tmp_path / "out").write_text("a file")
    assert_one_line_error(export(arithmetic_run, "--out", tmp_path / "out", "--force"), "not a directory")
    assert (tmp_path / "out").read_text() == "a file"


def test_an_empty_output_directory_is_used_without_force(arithmetic_run, tmp_path):
    (tmp_path / "out").mkdir()
    result = export(arithmetic_run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert set(files(tmp_path / "out")) == {"data.jsonl", "README.md"}


def test_force_replaces_an_earlier_export_whole(arithmetic_run, tmp_path):
    out = tmp_path / "out"
    assert export(arithmetic_run, "--out", out, "--format", "parquet").exit_code == 0
    result = export(arithmetic_run, "--out", out, "--force")  # another format: the earlier one's file goes too
    assert result.exit_code == 0, result.stderr
    assert set(files(out)) == {"data.jsonl", "README.md"}
    assert list(tmp_path.iterdir()) == [out]  # no staging or old directory left beside it


def test_force_never_deletes_what_was_added_to_an_earlier_export(arithmetic_run, tmp_path):
    out = tmp_path / "out"
    assert export(arithmetic_run, "--out", out).exit_code == 0
    (out / "LICENSE").write_text("CC-BY-4.0")  # as a dataset repository holds them
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    before = files(out)
    assert_one_line_error(export(arithmetic_run, "--out", out, "--force"), ".git, LICENSE", "which no export writes")
    assert files(out) == before


def test_force_never_replaces_a_directory_that_is_not_an_export(arithmetic_run, copied_run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "README.md").write_text("# my project\n")
    for out in (mine, copied_run):  # a user's directory; another run
        before = files(out)
        assert_one_line_error(export(arithmetic_run, "--out", out, "--force"), "is not an earlier export")
        assert files(out) == before


def test_force_never_replaces_the_run_itself(copied_run):
    before = files(copied_run)
    assert_one_line_error(export(copied_run, "--out", copied_run, "--force"), "choose another directory")
    assert_one_line_error(export(copied_run, "--out", copied_run / "curated", "--force"), "train.jsonl")
    assert files(copied_run) == before


def test_a_failed_write_leaves_the_earlier_export(arithmetic_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert export(arithmetic_run, "--out", out).exit_code == 0
    before = files(out)

    def disk_full(rows, directory):
        (directory / "data.jsonl").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(directory / "data.jsonl"))

    monkeypatch.setitem(writers.FORMATS, "jsonl", writers.Format("jsonl", disk_full, "data.jsonl"))
    assert_one_line_error(export(arithmetic_run, "--out", out, "--force"), "No space left on device")
    assert files(out) == before
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("fmt", ["parquet", "hf"])
def test_a_missing_library_names_the_extra(arithmetic_run, tmp_path, monkeypatch, fmt):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what `import pyarrow` finds when it is not installed
    assert_one_line_error(
        export(arithmetic_run, "--format", fmt, "--out", tmp_path / "o"), "pyarrow", "pip install 'warmstart[datasets]'"
    )
    assert not (tmp_path / "o").exists()
    assert export(arithmetic_run, "--format", "jsonl", "--out", tmp_path / "j").exit_code == 0  # needs neither


def test_a_datasets_without_json_names_the_version(arithmetic_run, tmp_path, monkeypatch):
    monkeypatch.delattr(datasets, "Json")  # as in datasets before 4.7
    assert_one_line_error(export(arithmetic_run, "--format", "hf", "--out", tmp_path / "o"), "datasets 4.7 or later")


def test_data_is_a_plain_name_and_a_run_given_as_dot_is_named_by_its_directory(copied_run, tmp_path, monkeypatch):
    assert_one_line_error(export(copied_run, "--data", "../trajectories/teacher", "--out", tmp_path / "o"), "a path")
    monkeypatch.chdir(copied_run)
    result = export(".", "--out", tmp_path / "dot")
    assert result.exit_code == 0, result.stderr
    assert f"# warmstart {copied_run.name}: train" in (tmp_path / "dot" / "README.md").read_text()


def edit_json(path, edit) -> None:
    import json

    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# (file, edit, what the error line says): what the dataset card reads, hand-edited into valid JSON of the wrong shape.
CARD_INPUT_EDITS = {
    "costs total null": ("costs.json", lambda c: c.update(total=None), "total is null"),
    "unknown price without its models": ("costs.json", lambda c: c.update(total={"usd": None}), "unknown_price_models"),
    "stages as a list": ("costs.json", lambda c: c.update(stages=[]), "stages is []"),
    "a bill without its tokens": (
        "costs.json",
        lambda c: c["stages"]["generate:teacher"]["api"].pop("tokens_in"),
        "stages.generate:teacher.api.tokens_in",
    ),
    "a drop count as text": (
        "curated/train.dropped.json",
        lambda d: d.update(dropped={"failed verification": "3"}),
        "dropped is",
    ),
    "drop reasons as a list": ("curated/train.dropped.json", lambda d: d.update(dropped=[1]), "dropped is [1]"),
}


@pytest.mark.parametrize("case", CARD_INPUT_EDITS)
def test_a_hand_edited_file_the_card_reads_is_one_error_line_before_anything_is_written(copied_run, case):
    name, edit, says = CARD_INPUT_EDITS[case]
    edit_json(copied_run / name, edit)
    assert_one_line_error(export(copied_run), str(copied_run / name), says)
    assert not (copied_run / "export").exists()


def test_an_export_through_a_symlink_replaces_what_it_points_at(arithmetic_run, calculator_run, tmp_path):
    """--force on a link to an earlier export had replaced the link with a directory and left the target's
    older export in place (and a dangling `.link....old` beside it)."""
    target, link = tmp_path / "target", tmp_path / "link"
    assert export(calculator_run, "--out", target).exit_code == 0
    link.symlink_to(target)
    result = export(arithmetic_run, "--out", link, "--force")
    assert result.exit_code == 0, result.stderr
    assert export(arithmetic_run, "--out", tmp_path / "reference").exit_code == 0
    assert link.is_symlink() and files(target) == files(tmp_path / "reference")  # the new export, at the target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "reference", "target"]  # nothing left beside


def test_an_export_into_the_working_directory_stays_that_directory(arithmetic_run, tmp_path, monkeypatch):
    """`--out .` had failed (Device or resource busy: "." has no name to stage beside); an empty directory is
    filled in place, so a shell standing in it sees the files."""
    here = tmp_path / "here"
    here.mkdir()
    inode = here.stat().st_ino
    monkeypatch.chdir(here)
    result = export(arithmetic_run, "--out", ".")
    assert result.exit_code == 0, result.stderr
    assert here.stat().st_ino == inode and set(files(here)) == {"data.jsonl", "README.md"}


def test_force_in_the_working_directory_replaces_the_earlier_export_in_place(arithmetic_run, tmp_path, monkeypatch):
    """`--out . --force` over an earlier export had renamed the directory away and put a new one in its place:
    the shell standing in it was left in a deleted directory."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert export(arithmetic_run, "--out", ".", "--format", "parquet").exit_code == 0
    inode = here.stat().st_ino
    result = export(arithmetic_run, "--out", ".", "--force")  # another format: the earlier one's file goes too
    assert result.exit_code == 0, result.stderr
    assert here.stat().st_ino == inode and set(files(here)) == {"data.jsonl", "README.md"}
    assert sorted(p.name for p in here.iterdir()) == ["README.md", "data.jsonl"]  # nothing set aside is left


def test_a_failed_write_in_the_working_directory_leaves_the_earlier_export(arithmetic_run, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert export(arithmetic_run, "--out", ".").exit_code == 0
    before = files(here)

    def disk_full(rows, directory):
        (directory / "data.jsonl").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(directory / "data.jsonl"))

    monkeypatch.setitem(writers.FORMATS, "jsonl", writers.Format("jsonl", disk_full, "data.jsonl"))
    assert_one_line_error(export(arithmetic_run, "--out", ".", "--force"), "No space left on device")
    assert files(here) == before and sorted(p.name for p in here.iterdir()) == ["README.md", "data.jsonl"]


def test_a_move_that_fails_half_way_in_place_puts_the_earlier_export_back(tmp_path, monkeypatch):
    from warmstart.export import output

    here = tmp_path / "here"
    here.mkdir()
    (here / "README.md").write_text("old card")
    (here / "data.parquet").write_text("old data")
    monkeypatch.chdir(here)
    real_replace, calls = output.os.replace, []

    def failing_fourth(source, target):
        calls.append(target)
        if len(calls) == 4:  # two set aside, one new file moved in, then the disk fails
            raise OSError(errno.EIO, "Input/output error")
        real_replace(source, target)

    monkeypatch.setattr(output.os, "replace", failing_fourth)
    with pytest.raises(output.WarmstartError, match="Input/output error"):
        with output.staged(Path(".")) as stage:
            (stage / "README.md").write_text("new card")
            (stage / "data.jsonl").write_text("new data")
    assert files(here) == {"README.md": b"old card", "data.parquet": b"old data"}


@pytest.mark.parametrize(
    "field, value, needles",
    [
        ("created", 1.7e12, ["provenance.created = 1700000000000.0 is no time (in milliseconds?"]),
        ("created", float("nan"), ["provenance.created = nan is no time"]),
        ("reward", float("nan"), ["its verdict's reward is nan, not a number a dataset can hold"]),
    ],
)
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_time_or_reward_no_dataset_can_hold_is_one_error_line_and_writes_nothing(
    copied_run, field, value, needles, fmt
):
    """Of one's own curated data: a time in milliseconds or NaN had stopped export with a traceback, and a NaN
    reward was written as NaN, no JSON, read back by `datasets` as null (review 81)."""
    from warmstart.runs.jsonl import read_records
    from warmstart.types import Trajectory

    curated = copied_run / "curated" / "train.jsonl"
    records = read_records(curated, Trajectory)
    last = records[-1]
    if field == "created":
        last = last.model_copy(update={"provenance": last.provenance.model_copy(update={"created": value})})
    else:
        last = last.model_copy(update={"verdict": last.verdict.model_copy(update={"reward": value})})
    # json.dumps, as a user's own tool would write the file: NaN as a bare NaN (pydantic would write null)
    curated.write_text("".join(json.dumps(r.model_dump()) + "\n" for r in [*records[:-1], last]))
    result = export(copied_run, "--format", fmt)
    assert_one_line_error(result, f"task {last.task_id!r}, sample {last.sample_index}", *needles)
    assert not (copied_run / "export").exists()
