"""The CLI and the recipe it is given: a path that is a directory, `run --rl` beside the recipe's own eval rows."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from warmstart import cli


@pytest.fixture
def stages_run(monkeypatch) -> dict:
    """`cli._run_stages` replaced: what a command would run, recorded instead of run."""
    seen: dict = {}

    def record(recipe, names):
        seen.update(policies={name: str(spec) for name, spec in recipe.eval.policies.items()}, stages=names)

    monkeypatch.setattr(cli, "_run_stages", record)
    return seen


def test_a_recipe_path_that_is_a_directory_is_said_to_be_one(tmp_path):
    result = CliRunner().invoke(cli.app, ["eval", str(tmp_path)])
    assert result.exit_code == 1
    assert f"error: {tmp_path}: a directory, not a recipe file" in result.output


def test_run_rl_adds_the_grpo_row_beside_the_recipes_rows(tmp_path, stages_run):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[run]\ndir = "r"\n[eval.policies]\nbase = "base"\n')
    result = CliRunner().invoke(cli.app, ["run", str(recipe), "--rl"])
    assert result.exit_code == 0, result.output
    assert stages_run["policies"] == {"base": "base", "student + GRPO": "run:student-grpo"}


def test_run_rl_refuses_to_replace_a_row_of_the_users_named_student_grpo(tmp_path, stages_run):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[run]\ndir = "r"\n[eval.policies]\n"student + GRPO" = "reference"\n')
    result = CliRunner().invoke(cli.app, ["run", str(recipe), "--rl"])
    assert result.exit_code == 1 and not stages_run  # nothing ran
    assert (
        'error: eval.policies row "student + GRPO" is reference, but --rl evaluates run:student-grpo' in result.output
    )
