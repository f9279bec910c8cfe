"""A user's own data through curate and sft: records of shapes the demo never makes (no verdicts, shared
ids, multi-turn prompts, conversations with nothing to learn, log-probs in another form, line separators
inside strings) are kept, dropped with a count, or refused in one line; nothing written is lost."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from helpers import curated_run, small_recipe
from warmstart.envs.arithmetic import Arithmetic
from warmstart.errors import WarmstartError
from warmstart.runs.jsonl import JsonlAppender, read_records
from warmstart.stages import curate, sft
from warmstart.stages.evaluate import load_tasks
from warmstart.types import Message, Trajectory


def rewrite(path: Path, trajectories: list[Trajectory]) -> None:
    path.unlink()
    with JsonlAppender(path) as writer:
        for t in trajectories:
            writer.append(t)


@pytest.fixture()
def run(tmp_path):
    """A curated run directory: its teacher's trajectories (train.jsonl's source) and its curated data."""
    recipe = curated_run(tmp_path / "run", "sft.steps=2")
    root = Path(recipe.run.dir)
    return recipe, root / "trajectories" / "teacher.jsonl", root / "curated" / "train.jsonl"


def test_a_curate_that_keeps_nothing_leaves_the_earlier_curated_data_as_it_was(run):
    recipe, teacher, curated = run
    before = curated.read_bytes()
    rewrite(teacher, [t.model_copy(update={"error": "boom"}) for t in read_records(teacher, Trajectory)])
    with pytest.raises(WarmstartError, match="was dropped"):
        curate.run(recipe)
    assert curated.read_bytes() == before
    # ... but sft does not train on it as if it were this run's (review 81: it had, silently)
    with pytest.raises(
        WarmstartError, match=r"sft.data: .*train.jsonl is an earlier curate run's: the last one failed \(.*was dropped"
    ):
        sft.run(recipe)
    assert not (Path(recipe.run.dir) / "models" / "student").exists()


def test_unverified_data_of_ones_own_is_kept_where_verification_is_not_asked_for(run):
    recipe, teacher, curated = run
    records = [t.model_copy(update={"verdict": None}) for t in read_records(teacher, Trajectory)]
    rewrite(teacher, records)
    with pytest.raises(WarmstartError, match=r"'not verified': \d+"):
        curate.run(recipe)
    kept = curate.run(recipe.model_copy(update={"curate": recipe.curate.model_copy(update={"require_passed": False})}))
    assert len(read_records(kept, Trajectory)) > 0


def test_distinct_samples_sharing_a_task_id_and_sample_index_are_said_to_be_set_aside(run, caplog):
    recipe, teacher, _ = run
    records = read_records(teacher, Trajectory)
    # A second sample of five tasks, given the first one's sample index (as where sample_index is absent).
    rewrite(teacher, [*records[:5], *records])
    with caplog.at_level(logging.WARNING, logger="warmstart.stages.curate"):
        curate.run(recipe)
    assert any("5 record(s) share a task id and sample index" in r.getMessage() for r in caplog.records)


def test_a_copied_multi_turn_eval_prompt_is_found(tmp_path):
    env = Arithmetic()
    tasks = env.tasks("eval", 3, 0)
    few_shot = [Message(role="user", content="Let us practise some sums."), Message(role="assistant", content="Sure.")]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(
        "".join(t.model_copy(update={"prompt": [*few_shot, *t.prompt]}).model_dump_json() + "\n" for t in tasks)
    )
    recipe = curated_run(tmp_path / "run", f"tasks.eval_file='{eval_file}'")
    teacher = Path(recipe.run.dir) / "trajectories" / "teacher.jsonl"
    [leaked] = load_tasks(recipe, env, "eval")[:1]
    template = read_records(teacher, Trajectory)[0]
    copy = template.model_copy(
        update={"task_id": "leak/0", "messages": [*leaked.prompt, Message(role="assistant", content="Answer: 1")]}
    )
    rewrite(teacher, [*read_records(teacher, Trajectory), copy])
    curate.run(recipe)
    report = json.loads((Path(recipe.run.dir) / "curated" / "train.dropped.json").read_text())
    assert report["contamination"]["sources"]["eval split"]["examples"] == ["leak/0"]


def test_jsonl_readers_split_lines_at_newlines_only_and_take_a_byte_order_mark(tmp_path):
    task = Arithmetic().tasks("train", 1, 0)[0]
    prompt = [Message(role="user", content=task.prompt[-1].content + "\u2028(a line separator)\u2029\x85")]
    train_file = tmp_path / "train.jsonl"
    train_file.write_text(
        "\ufeff" + json.dumps(task.model_copy(update={"prompt": prompt}).model_dump(), ensure_ascii=False) + "\n"
    )
    recipe = small_recipe(tmp_path / "run", f"tasks.train_file='{train_file}'")
    [loaded] = load_tasks(recipe, Arithmetic(), "train")
    assert loaded.prompt[-1].content.endswith("\u2028(a line separator)\u2029\x85")
    bench = tmp_path / "bench.jsonl"
    bench.write_text("\ufeff" + json.dumps({"question": "a train\u2028leaves at 3"}, ensure_ascii=False) + "\n")
    run = curated_run(tmp_path / "run2", f"curate.decontaminate_against=['{bench}']")
    assert (Path(run.run.dir) / "curated" / "train.jsonl").exists()


def test_sft_says_what_it_left_out_and_trains_nothing_without_an_assistant_turn(run, caplog):
    recipe, _, curated = run
    records = read_records(curated, Trajectory)
    long_one = records[0].model_copy(
        update={"messages": [*records[0].messages[:-1], Message(role="assistant", content="carry " * 300)]}
    )
    no_answer = records[1].model_copy(update={"messages": records[1].messages[:-1]})
    rewrite(curated, [long_one, no_answer, *records[2:]])
    with caplog.at_level(logging.WARNING, logger="warmstart.stages.sft"):
        sft.run(recipe)
    said = [r.getMessage() for r in caplog.records if "examples left out" in r.getMessage()]
    assert said == [
        f"sft:student: 2 of {len(records)} examples left out: 1 longer than a row (sft.seq_len = 128 tokens), "
        "1 no assistant turn to learn"
    ]
    summary = json.loads((Path(recipe.run.dir) / "manifest.json").read_text())["stages"]["sft:student"]
    assert summary["dropped_too_long"] == 1 and summary["dropped_no_assistant_turn"] == 1
    rewrite(curated, [t.model_copy(update={"messages": t.messages[:1]}) for t in records])
    with pytest.raises(
        WarmstartError, match=rf"no example to train on of {len(records)} \({len(records)} no assistant"
    ):
        sft.run(recipe.model_copy(update={"sft": recipe.sft.model_copy(update={"output": "other"})}))


@pytest.mark.parametrize(
    "change, why",
    [
        ({"messages": [Message(role="assistant", content="Hello")]}, "starts with an assistant turn"),
        ({"logprobs": [{"token": "A", "logprob": -0.1, "top_logprobs": []}]}, r"logprobs\[0\] is a dict, not a list"),
        ({"logprobs": [[{"text": "A", "logprob": -0.1}]]}, r"logprobs\[0\]\[0\] has no token text or id"),
        ({"logprobs": [[{"token": "A"}]]}, r"logprobs\[0\]\[0\] has no logprob"),
        # A null for the sampled token had crashed the alignment (IndexError) where no alternative was listed.
        ({"logprobs": [[{"token": "A", "logprob": None}]]}, r"logprobs\[0\]\[0\] has a null logprob"),
        ({"logprobs": [[{"token": "A", "logprob": 0.5}]]}, r"logprobs\[0\]\[0\] has a logprob that is not a log-prob"),
        ({"logprobs": [[{"id": "5", "logprob": -0.1}]]}, r"logprobs\[0\]\[0\] has an id that is not a token id"),
        (
            {"logprobs": [[{"token": "A", "logprob": -0.1, "top_logprobs": {"A": -0.1}}]]},
            "top_logprobs that are a dict",
        ),
    ],
)
def test_records_sft_cannot_read_are_one_error_naming_the_record(run, change, why):
    recipe, _, curated = run
    records = read_records(curated, Trajectory)
    rewrite(curated, [records[0].model_copy(update=change), *records[1:]])
    recipe = recipe.model_copy(update={"sft": recipe.sft.model_copy(update={"kd_weight": 0.5, "distill": "topk"})})
    with pytest.raises(WarmstartError, match=why) as caught:
        sft.run(recipe)
    assert "\n" not in str(caught.value) and f"record {records[0].task_id}#{records[0].sample_index}: " in str(
        caught.value
    )


def test_distinct_problems_under_one_task_id_are_refused_before_curation_judges_them_as_one(run):
    recipe, teacher, curated = run
    before = curated.read_bytes()
    records = read_records(teacher, Trajectory)
    rewrite(teacher, [t.model_copy(update={"task_id": "mydata", "sample_index": i}) for i, t in enumerate(records)])
    with pytest.raises(WarmstartError, match=r"task id 'mydata' has samples asked different prompts \(1 task id"):
        curate.run(recipe)
    assert curated.read_bytes() == before


def as_content_parts(record: dict) -> dict:
    """A trajectory's record as a chat dataset writes it: every message's content a list of text parts."""
    messages = [
        {**m, "content": [{"type": "text", "text": line} for line in m["content"].split("\n")]} if m["content"] else m
        for m in record["messages"]
    ]
    return {**record, "messages": messages}


def test_content_parts_are_their_text_and_an_image_part_is_one_line(run):
    recipe, teacher, curated = run
    records = [json.loads(line) for line in teacher.read_text(encoding="utf-8").splitlines()]
    teacher.write_text("".join(json.dumps(as_content_parts(r)) + "\n" for r in records), encoding="utf-8")
    curate.run(recipe)
    assert [t.messages for t in read_records(teacher, Trajectory)] == [
        [Message.model_validate(m) for m in r["messages"]] for r in records
    ]
    sft.run(recipe)  # the curated data trains
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    parted = as_content_parts(records[1])
    parted["messages"][-1]["content"].append(image)
    lines = teacher.read_text(encoding="utf-8").splitlines()
    lines[1] = json.dumps(parted)
    teacher.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(
        WarmstartError,
        match=r"teacher.jsonl:2: not a valid Trajectory record \(messages.\d+.content: "
        r"Value error, a content part of type 'image_url': only text parts",
    ):
        curate.run(recipe)
