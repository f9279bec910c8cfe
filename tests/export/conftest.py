"""Run directories to export, made by the real generate and curate stages with the reference teacher
(seconds, no model): arithmetic (one turn, with reasoning, some trajectories dropped) and calculator
(tool calls on large problems, reasoning on small ones). Shared by the module's tests, which only read
them: a test that changes a run copies it first (`copied_run`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import curated_run


@pytest.fixture(scope="session")
def arithmetic_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export") / "arithmetic"
    # A teacher that slips often, so that curation drops some trajectories for failing verification.
    curated_run(root, "env.options.teacher_error_rate=0.3", train=24)
    return root


@pytest.fixture(scope="session")
def calculator_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export") / "calculator"
    curated_run(root, "env.name=calculator", "env.options.teacher_error_rate=0.0", train=12)
    return root


@pytest.fixture()
def copied_run(arithmetic_run, tmp_path) -> Path:
    return Path(shutil.copytree(arithmetic_run, tmp_path / "run"))
