"""The run's own policy names resolved to what they stand for (`policies.spec`)."""

from __future__ import annotations

import pytest

from helpers import small_recipe
from warmstart.config import PolicySpec
from warmstart.errors import WarmstartError
from warmstart.policies.spec import base_model_path, local_model_path, resolve


def test_the_runs_own_names_resolve_to_its_model_directories(tmp_path):
    recipe = small_recipe(tmp_path, "sft.output=my-student", "generate.teacher=openai:gpt-4.1")
    models = tmp_path / "models"
    assert resolve(PolicySpec.parse("base"), recipe) == PolicySpec.local(models / "base")
    assert resolve(PolicySpec.parse("student"), recipe) == PolicySpec.local(models / "my-student")
    assert resolve(PolicySpec.parse("run:student-grpo"), recipe) == PolicySpec.local(models / "student-grpo")
    assert resolve(PolicySpec.parse("teacher"), recipe) == PolicySpec.parse("openai:gpt-4.1")
    assert (
        str(resolve(PolicySpec.parse("student"), recipe)) == f"hf:{models / 'my-student'}"
    )  # fingerprints keep their text


def test_other_policies_resolve_to_themselves(tmp_path):
    recipe = small_recipe(tmp_path)
    for text in ("reference", "hf:/m", "openai:m@http://127.0.0.1:1/v1", "anthropic:claude", "vllm:/m"):
        assert resolve(PolicySpec.parse(text), recipe) == PolicySpec.parse(text)


def test_a_teacher_that_names_the_runs_own_model_is_refused(tmp_path):
    recipe = small_recipe(tmp_path, "generate.teacher=teacher")
    with pytest.raises(WarmstartError, match="generate.teacher: teacher names the run's own model"):
        resolve(PolicySpec.parse("teacher"), recipe)


def test_the_base_of_a_user_student_is_its_own_directory_until_a_gguf_is_converted(tmp_path):
    student = tmp_path / "student"
    student.mkdir()
    (student / "config.json").write_text("{}")
    recipe = small_recipe(tmp_path / "run", f"sft.student='{student}'")
    assert base_model_path(recipe) == student
    gguf = tmp_path / "m.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    converted = small_recipe(tmp_path / "run", f"sft.student='{gguf}'")
    assert base_model_path(converted) == gguf
    (tmp_path / "run" / "models" / "base").mkdir(parents=True)
    assert base_model_path(converted) == tmp_path / "run" / "models" / "base"


def test_a_local_model_path_is_checked_and_an_api_has_none(tmp_path):
    recipe = small_recipe(tmp_path)
    assert local_model_path(PolicySpec.parse("openai:m"), recipe, "sft.teacher") is None
    with pytest.raises(WarmstartError, match="sft.teacher: no model directory or .gguf file at"):
        local_model_path(PolicySpec.parse("run:missing"), recipe, "sft.teacher")
