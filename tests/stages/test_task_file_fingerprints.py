"""Which task settings decide a stage's results once a task file is set: its content (GRPO had returned
its model of the old file as done), not the count it makes unused nor how its path is spelt (eval had sampled
every row again and curate had run again for either)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import small_recipe
from warmstart.envs.arithmetic import Arithmetic
from warmstart.errors import WarmstartError
from warmstart.runs.jsonl import JsonlAppender
from warmstart.stages import curate, evaluate, generate, grpo, sft


def write_tasks(path: Path, tasks: list) -> Path:
    path.unlink(missing_ok=True)
    with JsonlAppender(path) as writer:
        for task in tasks:
            writer.append(task)
    return path


def stage_entry(run: Path, stage: str) -> dict:
    return json.loads((run / "manifest.json").read_text())["stages"][stage]


def task_file_runs(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A run's directory and its two task files, with the overrides that name them."""
    env = Arithmetic()
    train = write_tasks(tmp_path / "train.jsonl", env.tasks("train", 40, 0))
    eval_ = write_tasks(tmp_path / "eval.jsonl", env.tasks("eval", 6, 0))
    return train, eval_, [f"tasks.train_file='{train}'", f"tasks.eval_file='{eval_}'"]


def test_eval_and_curate_keep_their_results_when_only_an_unused_count_or_a_files_spelling_changes(tmp_path):
    train, eval_, files = task_file_runs(tmp_path)
    run = tmp_path / "run"
    policies = "eval.policies={teacher='reference'}"
    recipe = small_recipe(run, *files, policies)
    generate.run(recipe)
    curate.run(recipe)
    evaluate.run(recipe)
    curated, evaluated = stage_entry(run, "curate:train"), stage_entry(run, "eval")
    respelt = [
        f"tasks.train_file='{tmp_path / '.' / 'train.jsonl'}'",
        f"tasks.eval_file='{tmp_path / '.' / 'eval.jsonl'}'",
    ]
    for changed in (["tasks.train=7", "tasks.eval=3", *files], respelt):
        recipe = small_recipe(run, *changed, policies)
        curate.run(recipe)
        evaluate.run(recipe)
        assert stage_entry(run, "curate:train") == curated, changed
        assert stage_entry(run, "eval") == evaluated, changed


def test_a_changed_eval_file_reruns_eval_and_curates_decontamination_but_not_curate_without_it(tmp_path):
    train, eval_, files = task_file_runs(tmp_path)
    run = tmp_path / "run"
    recipe = small_recipe(run, *files, "eval.policies={teacher='reference'}", "curate.decontaminate=false")
    generate.run(recipe)
    curate.run(recipe)
    evaluate.run(recipe)
    curated, evaluated = stage_entry(run, "curate:train"), stage_entry(run, "eval")
    write_tasks(eval_, Arithmetic().tasks("eval", 5, 1))
    curate.run(recipe)  # decontamination off: the eval split is not read
    evaluate.run(recipe)
    assert stage_entry(run, "curate:train") == curated
    assert stage_entry(run, "eval")["fingerprint"] != evaluated["fingerprint"]
    curate.run(small_recipe(run, *files, "curate.decontaminate=true"))
    assert stage_entry(run, "curate:train")["fingerprint"] != curated["fingerprint"]


GRPO_SMALL = [
    "sft.steps=1",
    "grpo.steps=1",
    "grpo.tasks_per_step=2",
    "grpo.group_size=2",
    "grpo.max_new_tokens=8",
    "grpo.max_refills=0",
]


def test_grpo_does_not_return_its_old_model_when_its_train_files_content_changes(tmp_path):
    train, eval_, files = task_file_runs(tmp_path)
    run = tmp_path / "run"
    recipe = small_recipe(run, *files, *GRPO_SMALL)
    generate.run(recipe)
    curate.run(recipe)
    sft.run(recipe)
    grpo.run(recipe)
    first = stage_entry(run, "grpo:student-grpo")
    grpo.run(small_recipe(run, *files, *GRPO_SMALL, "tasks.train=7"))  # an unused count: still done
    assert stage_entry(run, "grpo:student-grpo") == first
    write_tasks(train, Arithmetic().tasks("train", 40, 1))
    with pytest.raises(WarmstartError, match="checkpoints of another grpo config"):  # not "done": other tasks
        grpo.run(recipe)
