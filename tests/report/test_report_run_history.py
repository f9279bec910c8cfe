"""`warmstart report` on run directories with a history: a training stage whose last run failed, a model
trained again after eval, an eval that failed after an earlier one had finished, a run copied with its
original in place, a run directory that cannot be written to (`--out`). Each row's cost is that of the
training that made the model it scored, or said to be unknown; results an earlier eval wrote are said to be
so; what failed runs spent is shown apart from the rows."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fake_api import FakeAPI
from helpers import curated_run, small_recipe
from warmstart.cli import app
from warmstart.errors import WarmstartError
from warmstart.stages import evaluate, sft

RUN = ["sft.steps=2", "eval.k=1", "eval.max_new_tokens=16", "tasks.eval=6", "eval.policies={student='student'}"]


def trained_run(root: Path) -> Path:
    """A real run: reference-teacher data curated, a 2-step student, eval of the student."""
    recipe = curated_run(root, *RUN, train=24)
    sft.run(recipe)
    evaluate.run(recipe)
    return root


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory) -> Path:
    """A run the tests below only read (or copy)."""
    return trained_run(tmp_path_factory.mktemp("history") / "run")


def report(run_dir: Path, *options: str):
    return CliRunner().invoke(app, ["report", str(run_dir), *options])


def page_of(run_dir: Path) -> str:
    result = report(run_dir)
    assert result.exit_code == 0, result.output
    return (run_dir / "report.html").read_text()


def cost_cells(page: str, row: str) -> list[str]:
    """The results table's train s, train FLOPs, API $, s and $ per point of `row`."""
    cells = re.search(rf"<tr><td>{re.escape(row)}</td>(.*?)</tr>", page).group(1)
    return re.findall(r"<td>(.*?)</td>", cells)[-5:]


def sft_entry(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())["stages"]["sft:student"]


def train_again(root: Path, steps: int) -> None:
    """sft:student from scratch with `steps` steps (its old checkpoints removed: another config's)."""
    shutil.rmtree(root / "checkpoints" / "student")
    sft.run(small_recipe(root, *RUN, f"sft.steps={steps}", train=24))


def test_a_failed_training_run_is_in_no_rows_cost_and_is_shown_apart(tmp_path):
    """sft trained again (4 steps) and failed as it published: models/student, which eval scored, is still
    the 2-step run's, whose record the failed run replaced. The row had shown the failed run's seconds and
    FLOPs; now its cost is unknown, and what the failed run spent is listed apart."""
    root = trained_run(tmp_path / "run")
    before = sft_entry(root)
    (root / "models" / "student.tmp").write_text("in the way of publishing")
    with pytest.raises(OSError):
        train_again(root, steps=4)
    failed = sft_entry(root)
    assert failed["status"] == "failed" and failed["flops_estimate"] > before["flops_estimate"]
    page = page_of(root)
    assert cost_cells(page, "student") == ["unknown"] * 5
    assert "student: sft:student&#x27;s last run failed, and its record replaced" in page
    assert "<h2>Runs that failed</h2>" in page and f"{failed['flops_estimate']:.2e}" in page
    assert f"{before['flops_estimate']:.2e}" not in page  # nor the run before, whose record is gone
    costs = json.loads((root / "costs.json").read_text())
    assert costs["total"]["seconds_failed"] == round(failed["seconds"], 2)
    (root / "models" / "student.tmp").unlink()
    train_again(root, steps=4)  # a rerun that succeeds replaces the failed entry: its seconds stay counted
    rerun = sft_entry(root)
    assert "status" not in rerun and rerun["seconds_failed_before"] == round(failed["seconds"], 3)
    costs = json.loads((root / "costs.json").read_text())
    assert costs["total"]["seconds_failed"] == round(failed["seconds"], 2)
    assert costs["stages"]["sft:student"]["seconds_failed_before"] == rerun["seconds_failed_before"]
    everything = sum(s["seconds"] + s.get("seconds_failed_before", 0) for s in costs["stages"].values())
    assert costs["total"]["seconds"] == round(everything, 2)
    assert f"({round(failed['seconds']):,} s of them in runs that failed)" in page_of(root)


def test_a_model_trained_again_after_eval_has_no_cost_until_eval_runs_again(tmp_path):
    """The row is the old model's pass@1; the manifest records the new model's training."""
    root = trained_run(tmp_path / "run")
    train_again(root, steps=4)
    page = page_of(root)
    assert cost_cells(page, "student") == ["unknown"] * 5
    assert "sft:student made models/student again after the eval used it" in page
    assert f"{sft_entry(root)['flops_estimate']:.2e}" not in page


def test_results_an_earlier_eval_wrote_are_said_to_be_so_when_the_last_eval_failed(tmp_path):
    root = tmp_path / "run"
    evaluate.run(small_recipe(root, "eval.k=1", "eval.policies={teacher='reference'}", "tasks.eval=5"))
    written = (root / "eval" / "results.json").read_bytes()
    with FakeAPI() as api:
        api.faults = ["500"] * 10
        rows = f"eval.policies={{teacher='reference', api='openai:fake-model@{api.url}/v1'}}"
        with pytest.raises(WarmstartError, match="eval.policies.api"):
            evaluate.run(small_recipe(root, "eval.k=1", rows, "tasks.eval=5", "api.max_retries=0"))
    assert (root / "eval" / "results.json").read_bytes() == written
    error = json.loads((root / "manifest.json").read_text())["stages"]["eval"]["error"]
    page = page_of(root)
    stale = re.search(r"<p class='stale'>(.*?)</p>", page).group(1)
    assert stale.startswith("These are not the last eval&#x27;s results: the last eval failed at ")
    assert error.replace("'", "&#x27;") in stale and "file last modified" in stale
    assert "Some failures (of the earlier eval: the last one failed)" in page


def test_an_eval_that_failed_with_no_earlier_results_says_so(tmp_path):
    root = tmp_path / "run"
    with FakeAPI() as api:
        api.faults = ["500"] * 10
        rows = f"eval.policies={{api='openai:fake-model@{api.url}/v1'}}"
        with pytest.raises(WarmstartError, match="eval.policies.api"):
            evaluate.run(small_recipe(root, "eval.k=1", rows, "tasks.eval=5", "api.max_retries=0"))
    page = page_of(root)
    assert "held-out results (no eval/results.json: the last eval failed at " in page
    assert "eval has not finished" not in page


def test_a_run_copied_with_its_original_in_place_keeps_its_rows_costs(shared_run, tmp_path):
    """results.json names the original's models/student: the same model, so the copy's records apply (the
    row's cost had been left blank, and the compute figure out)."""
    copy = Path(shutil.copytree(shared_run, tmp_path / "copy"))
    entry = sft_entry(copy)
    page = page_of(copy)
    assert cost_cells(page, "student")[:2] == [f"{entry['train_seconds']:,.0f}", f"{entry['flops_estimate']:.2e}"]
    assert "pass@1 versus training compute" in page


def test_a_run_directory_given_as_dot_is_named_by_its_own_name(shared_run, tmp_path, monkeypatch):
    copy = Path(shutil.copytree(shared_run, tmp_path / "my-run"))
    monkeypatch.chdir(copy)
    result = report(Path("."))
    assert result.exit_code == 0, result.output
    assert "<title>warmstart: my-run</title>" in (copy / "report.html").read_text()


def read_only(run_dir: Path, *command: str) -> subprocess.CompletedProcess:
    """`warmstart COMMAND` with `run_dir` mounted read-only (a mount namespace of its own: no root needed,
    and root is refused too, as on a read-only share)."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    args = ["unshare", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(run_dir)]
    return subprocess.run([*args, sys.executable, "-m", "warmstart.cli", *command], capture_output=True, text=True)


def test_a_read_only_run_directory_gets_its_report_with_out(shared_run, tmp_path):
    if shutil.which("unshare") is None or read_only(tmp_path, "--help").returncode != 0:
        pytest.skip("no mount namespace here (unshare) to make a read-only run directory")
    copy = Path(shutil.copytree(shared_run, tmp_path / "run"))
    (copy / "report.html").unlink(missing_ok=True)
    refused = read_only(copy, "report", str(copy))
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert lines[0] == (
        f"error: {copy}: the run directory is not writable, so report.html cannot be written there; "
        "give --out PATH to write the report elsewhere"
    )
    out = tmp_path / "elsewhere" / "page.html"
    out.parent.mkdir()
    done = read_only(copy, "report", str(copy), "--out", str(out))
    assert done.returncode == 0 and done.stdout.strip() == str(out), done.stderr
    assert "Held-out results" in out.read_text() and not (copy / "report.html").exists()


@pytest.mark.parametrize(
    "target, says",
    [
        ("manifest.json", "exists and is not a warmstart report; refusing to replace it"),
        ("eval", "a directory; give the file to write"),
        ("no/such/dir/page.html", "there is no directory"),
    ],
)
def test_an_out_that_would_lose_a_file_or_has_nowhere_to_go_is_one_error_line(shared_run, tmp_path, target, says):
    copy = Path(shutil.copytree(shared_run, tmp_path / "run"))
    manifest = (copy / "manifest.json").read_bytes()
    result = report(copy, "--out", str(copy / target))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith(f"error: --out {copy / target}: ")
    assert says in lines[0], lines[0]
    assert (copy / "manifest.json").read_bytes() == manifest


def test_a_report_at_out_is_rebuilt_in_place(shared_run, tmp_path):
    page = tmp_path / "page.html"
    for _ in range(2):
        result = report(shared_run, "--out", str(page))
        assert result.exit_code == 0 and result.stdout.strip() == str(page), result.output
    assert "Held-out results" in page.read_text()
