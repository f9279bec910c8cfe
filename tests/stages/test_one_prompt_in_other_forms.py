"""A task's prompt in other digits or forms (one's data exported twice, rendered differently) is one prompt:
curate takes the samples, exact dedup drops the copies; a different prompt under one task id is still refused in
one line, and an eval task that repeats a train prompt in other digits is an overlap."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import curated_run
from warmstart.errors import WarmstartError
from warmstart.runs.jsonl import JsonlAppender, read_json, read_records
from warmstart.stages import curate
from warmstart.stages.common import check_disjoint
from warmstart.types import Message, Task, Trajectory

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def rewrite(path: Path, trajectories: list[Trajectory]) -> None:
    path.unlink()
    with JsonlAppender(path) as writer:
        for t in trajectories:
            writer.append(t)


def asked(trajectory: Trajectory, prompt: str, sample_index: int) -> Trajectory:
    """`trajectory` as another sample of its task, its user turn written as `prompt`."""
    messages = [m.model_copy(update={"content": prompt}) if m.role == "user" else m for m in trajectory.messages]
    return trajectory.model_copy(update={"messages": messages, "sample_index": sample_index})


@pytest.fixture()
def run(tmp_path):
    recipe = curated_run(tmp_path / "run", train=20)
    root = Path(recipe.run.dir)
    return recipe, root / "trajectories" / "teacher.jsonl", root / "curated"


def test_a_prompt_exported_in_other_digits_or_fullwidth_forms_is_one_prompt(run):
    recipe, teacher, curated = run
    records = read_records(teacher, Trajectory)
    first = next(t for t in records if t.verdict and t.verdict.passed)
    prompt = next(m.content for m in first.messages if m.role == "user")
    copies = [asked(first, prompt.translate(ARABIC_INDIC), 1), asked(first, fullwidth(prompt), 2)]
    rewrite(teacher, [*records, *copies])
    curate.run(recipe)
    assert read_json(curated / "train.dropped.json")["dropped"]["exact duplicate"] == 2


def test_a_different_prompt_under_one_task_id_is_still_refused_in_one_line(run):
    recipe, teacher, curated = run
    before = (curated / "train.jsonl").read_bytes()
    records = read_records(teacher, Trajectory)
    prompt = next(m.content for m in records[0].messages if m.role == "user")
    other = prompt.replace("+", "-", 1).translate(ARABIC_INDIC)  # another problem, in other digits too
    rewrite(teacher, [*records, asked(records[0], other, 1)])
    with pytest.raises(
        WarmstartError, match=rf"task id '{re.escape(records[0].task_id)}' has samples asked different prompts \(1 task"
    ) as caught:
        curate.run(recipe)
    assert "\n" not in str(caught.value) and (curated / "train.jsonl").read_bytes() == before


def test_an_eval_task_repeating_a_train_prompt_in_other_digits_overlaps_it():
    def task(task_id: str, split: str, prompt: str) -> Task:
        return Task(id=task_id, env="arithmetic", prompt=[Message(role="user", content=prompt)], split=split)

    train = [task("a", "train", "What is 46+88? End with 'Answer: <integer>'.")]
    copy = task("b", "eval", "What is ٤٦+٨٨? End with 'Answer: <integer>'.")
    check_disjoint(train, [task("c", "eval", "What is 46+89? End with 'Answer: <integer>'.")])  # another problem
    with pytest.raises(WarmstartError, match=r"the eval split overlaps train: 1 eval task\(s\) .* \(first: b\)"):
        check_disjoint(train, [copy])
