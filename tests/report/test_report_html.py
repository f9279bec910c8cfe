"""report.html: built from a real (small) run, rendered in a real browser (Debian's headless Chromium,
driven by Playwright): every figure draws something, and the page logs no error."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib import image
from playwright.sync_api import sync_playwright

from helpers import curated_run
from warmstart.report.html import build_report
from warmstart.stages import evaluate, grpo, sft

CHROMIUM = "/usr/bin/chromium"  # Debian's package: scripts/install-system-packages.sh installs it
RUN = [
    "sft.steps=6",
    "grpo.init=student",
    "grpo.steps=2",
    "grpo.tasks_per_step=2",
    "grpo.group_size=2",
    "grpo.max_new_tokens=16",
    "eval.k=2",
    "eval.max_new_tokens=48",
    "eval.policies.base='base'",
    "eval.policies.student='student'",
    "eval.policies.student-grpo='run:student-grpo'",
    "eval.policies.teacher='teacher'",
    "eval.compare=[['student-grpo', 'student']]",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    recipe = curated_run(root, *RUN)
    sft.run(recipe)
    grpo.run(recipe)
    evaluate.run(recipe)
    build_report(root)
    return root


def test_the_report_holds_the_tables_with_intervals_and_the_failures(run_dir):
    page = (run_dir / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # self-contained: nothing to fetch
    for text in ("Held-out results", "pass@1 [95 %]", "Paired differences", "student-grpo", "Some failures"):
        assert text in page
    assert page.count("<figure>") == 3  # compute, training curves, funnel


def test_every_figure_renders_in_headless_chromium_without_a_console_error(run_dir):
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((run_dir / "report.html").as_uri())
        figures = page.query_selector_all("figure svg")
        shots = [figure.screenshot() for figure in figures]
        browser.close()
    assert not errors
    assert len(shots) == 3
    for shot in shots:
        pixels = image.imread(io.BytesIO(shot), format="png")
        assert pixels.shape[0] > 150 and pixels.shape[1] > 300  # laid out at a real size
        assert pixels.std() > 0.05  # not a blank image: lines, bars and text drawn


def test_warmstart_report_rebuilds_the_page_and_refuses_what_is_not_a_run(run_dir, tmp_path):
    (run_dir / "report.html").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "report", str(run_dir)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == str(run_dir / "report.html")
    assert (run_dir / "report.html").exists()
    refused = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "report", str(tmp_path)], capture_output=True, text=True
    )
    assert (
        refused.returncode == 1
        and refused.stderr.strip() == f"error: {tmp_path}: not a run directory (no manifest.json)"
    )


@pytest.mark.parametrize(
    "name, content, why",
    [
        ("eval/results.json", '{"k": 2, "rows": ["a"', "eval/results.json: not valid JSON"),
        ("eval/results.json", "[]", "eval/results.json: holds a JSON list, not the dict warmstart writes"),
        ("eval/results.json", "{}", "eval/results.json: holds no eval results"),
        ("manifest.json", "{not json", "manifest.json: not valid JSON"),
        ("manifest.json", '{"version": 1}', "manifest.json: holds no stages"),
        (
            "metrics.jsonl",
            '{"stage": "sft:s", "step": 1}\n{"step": 2, "lo\n{"stage": "sft:s", "step": 3}\n',
            "metrics.jsonl:2: not a metrics record",
        ),
        ("eval/student.jsonl", "not json\n", "eval/student.jsonl:1: not an eval sample"),
        ("eval/student.jsonl", '{"task_id": "t"}\n', "eval/student.jsonl:1: an eval sample without its messages"),
    ],
)
def test_a_corrupt_run_file_is_one_error_line_naming_it(run_dir, tmp_path, name, content, why):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / name).write_text(content)
    done = subprocess.run([sys.executable, "-m", "warmstart.cli", "report", str(copy)], capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {copy / why.split(':')[0]}")
    assert why in lines[0], lines[0]


def test_without_a_base_row_the_cost_of_a_point_is_not_called_no_gain():
    from warmstart.report.html import cost_cells
    from warmstart.report.lineage import Lineage

    lineage = Lineage(stages=["sft:student"], seconds=48.0, flops=3.2e12)
    stages = {"sft:student": {"data": "train"}}
    assert cost_cells(0.6, None, lineage, stages)[3:] == ["n/a (no base row)", "n/a (no base row)"]
    assert cost_cells(0.6, 0.1, lineage, stages)[3] == f"{48.0 / 50:,.1f}"  # 50 points of pass@1 gained
