"""The curate stage on the demo's data: planted near-duplicates and benchmark items are dropped under the
right reason, and nothing else is; benchmark files are stage inputs; bad input is one error line."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warmstart.config import Recipe, load_recipe, recipe_toml
from warmstart.demos.recipe import DEMO_RECIPE
from warmstart.envs import make_env
from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions
from warmstart.errors import WarmstartError
from warmstart.runs.jsonl import JsonlAppender, read_records
from warmstart.stages import curate, generate
from warmstart.types import Message, Provenance, Trajectory, Verdict

PARAPHRASES = [  # the same problem reworded: its numbers, in their order, kept
    "End with 'Answer: <integer>'. What is {a}{op}{b}?",
    "what's {a} {op} {b}?? END WITH answer: <integer>",
    "What is {a}{op}{b}? End your reply with 'Answer: <integer>'.",
    "What is {a} {op} {b}? Finish with 'Answer: <integer>'.",
]
WORD_PROBLEM = (
    "A baker makes 24 loaves every morning and sells two thirds of them before noon; in the afternoon she "
    "sells half of what is left and gives the rest to the shelter down the street. How many loaves does "
    "the shelter get each week?"
)
OTHER_PROBLEM = (
    "A train leaves the station at 9 and travels 60 miles per hour for 3 hours, then 40 miles per hour "
    "for 2 hours. How far has it gone?"
)


def demo_recipe(run_dir: Path, *overrides: str, train: int = 300) -> Recipe:
    base = copy.deepcopy(DEMO_RECIPE)
    base["run"]["dir"] = str(run_dir)
    return load_recipe(None, [f"tasks.train={train}", "tasks.eval=50", *overrides], base)


def teacher_file(recipe: Recipe) -> Path:
    return Path(recipe.run.dir) / "trajectories" / "teacher.jsonl"


def dropped_report(recipe: Recipe) -> dict:
    return json.loads((Path(recipe.run.dir) / "curated" / "train.dropped.json").read_text())


def kept_keys(recipe: Recipe) -> set[tuple[str, int]]:
    return {t.key for t in read_records(Path(recipe.run.dir) / "curated" / "train.jsonl", Trajectory)}


def with_prompt(t: Trajectory, task_id: str, prompt: str) -> Trajectory:
    return t.model_copy(
        update={"task_id": task_id, "messages": [Message(role="user", content=prompt), *t.messages[1:]]}
    )


def reordered(t: Trajectory) -> Trajectory:
    answer = t.messages[-1]
    lines = answer.reasoning.split("\n")
    steps = answer.model_copy(update={"reasoning": "\n".join(lines[1:] + lines[:1])})
    return t.model_copy(update={"sample_index": 1, "messages": [*t.messages[:-1], steps]})


def word_problem_trajectory(template: Trajectory) -> Trajectory:
    """A training task whose prompt copies 20 words of a benchmark's word problem (not all of it)."""
    excerpt = " ".join(WORD_PROBLEM.split()[:20])
    messages = [
        Message(role="user", content=f"Solve this: {excerpt}. End with 'Answer: <integer>'."),
        Message(role="assistant", reasoning="24*(1/3)/2 = 4 a day", content="Answer: 28"),
    ]
    return template.model_copy(update={"task_id": "plant/word-problem", "messages": messages})


def eval_split_trajectory(recipe: Recipe, index: int) -> Trajectory:
    """A verified trajectory of an eval task, as if it had slipped into the training data."""
    env = make_env(recipe.env)
    task = env.tasks("eval", 50, recipe.run.seed)[index]
    t = Arithmetic(ArithmeticOptions(teacher_error_rate=0.0)).reference(task, random.Random(0))
    return t.model_copy(update={"verdict": env.verify(task, t), "finish_reason": "stop"})


def write_benchmarks(tmp_path: Path, jsonl_prompts: list[str], parquet_prompts: list[str]) -> tuple[Path, Path]:
    jsonl = tmp_path / "bench.jsonl"
    items = [*jsonl_prompts, WORD_PROBLEM, OTHER_PROBLEM, "What is 7*8? End with 'Answer: <integer>'.", "yes"]
    jsonl.write_text("".join(json.dumps({"id": i, "question": q, "answer": "0"}) + "\n" for i, q in enumerate(items)))
    chats = [
        [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": prompt}]
        + [{"role": "assistant", "content": "Answer: 1"}]
        for prompt in [*parquet_prompts, "What is 9*9? End with 'Answer: <integer>'."]
    ]
    parquet = tmp_path / "bench.parquet"
    pq.write_table(pa.table({"messages": chats}), parquet)
    return jsonl, parquet


def test_every_plant_is_dropped_under_its_reason_and_nothing_else(tmp_path):
    recipe = demo_recipe(tmp_path / "run")
    generate.run(recipe)
    clean = read_records(teacher_file(recipe), Trajectory)
    failed = {t.key for t in clean if not t.verdict.passed}
    # Originals: passed two-digit problems whose chain has several steps, a different one for each plant.
    meta = {t.id: t.meta for t in make_env(recipe.env).tasks("train", 300, recipe.run.seed)}
    originals = [t for t in clean if t.verdict.passed and meta[t.task_id]["digits"] == 2][:11]
    assert len(originals) == 11 and all("\n" in t.messages[-1].reasoning for t in originals)
    to_paraphrase, to_reorder, in_jsonl, in_parquet = originals[:4], originals[4:7], originals[7:9], originals[9:]

    paraphrases = [
        with_prompt(t, f"plant/paraphrase-{k}", PARAPHRASES[k].format(**meta[t.task_id]))
        for k, t in enumerate(to_paraphrase)
    ]
    reorders = [reordered(t) for t in to_reorder]
    leaked = [eval_split_trajectory(recipe, 0), eval_split_trajectory(recipe, 1)]
    copied = word_problem_trajectory(originals[0])
    with JsonlAppender(teacher_file(recipe)) as writer:
        for t in [*paraphrases, *reorders, *leaked, copied]:
            writer.append(t)
    # Benchmark items that are training prompts, reformatted (case, spacing, punctuation) or as a chat turn.
    jsonl, parquet = write_benchmarks(
        tmp_path,
        [t.messages[0].content.lower().replace("?", " ?") for t in in_jsonl],
        [t.messages[0].content for t in in_parquet],
    )
    recipe = demo_recipe(tmp_path / "run", f"curate.decontaminate_against=['{jsonl}', '{parquet}']")
    curate.run(recipe)

    report = dropped_report(recipe)
    assert report["dropped"] == {
        "failed verification (wrong answer)": len(failed),
        "near-duplicate prompt": 4,
        "near-duplicate trajectory": 3,
        "contaminated (eval split)": 2,
        f"contaminated ({jsonl})": 3,
        f"contaminated ({parquet})": 2,
    }
    all_keys = {t.key for t in clean} | {t.key for t in [*paraphrases, *reorders, *leaked, copied]}
    planted_drops = {t.key for t in [*paraphrases, *reorders, *leaked, copied, *in_jsonl, *in_parquet]}
    assert kept_keys(recipe) == all_keys - failed - planted_drops  # every original of a near-duplicate is kept
    sources = report["contamination"]["sources"]
    assert sources["eval split"] == {
        "items": 50, "too_short": 0, "dropped": 2, "examples": [t.task_id for t in leaked],
    }  # fmt: skip
    assert sources[str(jsonl)] == {
        "items": 5, "too_short": 1, "dropped": 3, "examples": [t.task_id for t in in_jsonl] + [copied.task_id],
    }  # fmt: skip
    assert sources[str(parquet)] == {
        "items": 3, "too_short": 0, "dropped": 2, "examples": [t.task_id for t in in_parquet],
    }  # fmt: skip
    near = report["near_duplicates"]
    assert near["prompt"] == {
        "tasks": 4, "examples": [f"{p.task_id} ~ {t.task_id}" for p, t in zip(paraphrases, to_paraphrase)],
    }  # fmt: skip
    assert near["trajectory"] == {
        "trajectories": 3, "examples": [f"{t.task_id}#1 ~ {t.task_id}#0" for t in to_reorder],
    }  # fmt: skip
    assert report["teacher_pass_rate"]["tasks"] == 300 + 4 + 2 + 1


def trajectory(task_id: str, system: str, user: str, passed: bool) -> Trajectory:
    messages = [Message(role="system", content=system), Message(role="user", content=user)]
    messages.append(Message(role="assistant", content="Answer: 4"))
    return Trajectory(
        task_id=task_id,
        policy="reference",
        messages=messages,
        verdict=Verdict(reward=float(passed), passed=passed),
        provenance=Provenance(provider="reference", model="m", created=0.0),
        finish_reason="stop",
    )


def test_a_near_duplicate_task_keeps_its_best_verified_member_whatever_the_system_prompt(tmp_path):
    system = " ".join(f"Rule {word}: be exact, be brief and show the steps." for word in "abcdefghij")
    samples = [
        trajectory("first-seen-failed", system, "How many legs does a spider have?", passed=False),
        trajectory("other-question", system, "How many wings does a bee have?", passed=True),
        trajectory("reworded-passed", system, "How many legs does a spider have, please?", passed=True),
    ]
    cfg = demo_recipe(tmp_path, "curate.require_passed=false").curate
    kept, report = curate.curate(samples, None, cfg)
    # The long shared system prompt does not make the two questions alike; the passed rewording wins.
    assert [t.task_id for t in kept] == ["other-question", "reworded-passed"]
    assert report["dropped"] == {"near-duplicate prompt": 1}
    assert report["near_duplicates"]["prompt"]["examples"] == ["first-seen-failed ~ reworded-passed"]


def test_a_benchmark_item_with_invisible_characters_inside_its_words_is_still_found(tmp_path):
    """A scraped benchmark's zero-width spaces and soft hyphens inside words split them into others: the
    item, copied into a training prompt without them, went unnoticed."""
    recipe = demo_recipe(tmp_path / "run", train=60)
    generate.run(recipe)
    passed = next(t for t in read_records(teacher_file(recipe), Trajectory) if t.verdict.passed)
    with JsonlAppender(teacher_file(recipe)) as writer:
        writer.append(with_prompt(passed, "plant/spider", "How many legs does a spider have in total?"))
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "How many le\u200bgs does a spi\u00adder have in total?"}) + "\n")
    recipe = demo_recipe(tmp_path / "run", f"curate.decontaminate_against=['{bench}']", train=60)
    curate.run(recipe)
    report = dropped_report(recipe)
    assert report["contamination"]["sources"][str(bench)]["examples"] == ["plant/spider"]
    assert report["kept"] + sum(report["dropped"].values()) == report["input"] == 61


def test_a_power_written_in_superscript_is_not_a_near_duplicate_of_the_plain_number(tmp_path):
    """NFKC reads `2³` as `23`: two distinct problems were one prompt to near-dedup, and one was dropped."""
    samples = [
        trajectory("power", "Be brief.", "What is 2³ + 1? End with 'Answer: <integer>'.", passed=True),
        trajectory("number", "Be brief.", "What is 23 + 1? End with 'Answer: <integer>'.", passed=True),
        trajectory("caret", "Be brief.", "what is 2^3 + 1?? END WITH answer: <integer>", passed=True),
    ]
    kept, report = curate.curate(samples, None, demo_recipe(tmp_path).curate)
    assert [t.task_id for t in kept] == ["power", "number"]
    assert report["near_duplicates"]["prompt"]["examples"] == ["caret ~ power"]


def test_a_changed_benchmark_file_reruns_curate(tmp_path):
    recipe = demo_recipe(tmp_path / "run", train=60)
    generate.run(recipe)
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": OTHER_PROBLEM}) + "\n")
    recipe = demo_recipe(tmp_path / "run", f"curate.decontaminate_against=['{bench}']", train=60)
    curate.run(recipe)
    report_path = Path(recipe.run.dir) / "curated" / "train.dropped.json"
    report_path.write_text('{"marker": true}')
    curate.run(recipe)  # same inputs: nothing to do
    assert json.loads(report_path.read_text()) == {"marker": True}

    passed = next(t for t in read_records(teacher_file(recipe), Trajectory) if t.verdict.passed)
    with bench.open("a") as f:
        f.write(json.dumps({"problem": passed.messages[0].content}) + "\n")
    curate.run(recipe)
    assert dropped_report(recipe)["contamination"]["sources"][str(bench)]["examples"] == [passed.task_id]


def test_teacher_pass_rate_keeps_the_tasks_in_range(tmp_path):
    overrides = ["generate.samples_per_task=4", "env.options.teacher_error_rate=0.3"]
    recipe = demo_recipe(tmp_path / "run", *overrides, "curate.teacher_pass_rate=[0.25, 0.75]", train=80)
    generate.run(recipe)
    curate.run(recipe)
    samples = read_records(teacher_file(recipe), Trajectory)
    passed: dict[str, int] = {}
    for t in samples:
        passed[t.task_id] = passed.get(t.task_id, 0) + t.verdict.passed
    in_range = {task for task, n in passed.items() if 1 <= n <= 3}
    always = [task for task, n in passed.items() if n == 4]
    assert in_range and always

    report = dropped_report(recipe)
    # A task's passed samples are one chain (the reference slips or not): one kept, the rest exact duplicates.
    assert report["dropped"] == {
        "failed verification (wrong answer)": sum(not t.verdict.passed for t in samples),
        "teacher pass rate 1.00 outside [0.25, 0.75]": 4 * len(always),
        "exact duplicate": sum(passed[task] - 1 for task in in_range),
    }
    assert {task for task, _ in kept_keys(recipe)} == in_range
    rates = report["teacher_pass_rate"]
    assert rates["tasks_per_rate"] == {
        f"{k / 4:.2f}": sum(n == k for n in passed.values()) for k in range(5) if k in passed.values()
    }
    assert rates["tasks_outside"] == len(passed) - len(in_range)


def test_teacher_pass_rate_needs_several_samples(tmp_path):
    recipe = demo_recipe(tmp_path / "run", "curate.teacher_pass_rate=[0.2, 0.8]", train=20)
    generate.run(recipe)
    with pytest.raises(WarmstartError, match="every task has one judged sample"):
        curate.run(recipe)


def test_decontaminate_false_reads_no_benchmark(tmp_path):
    recipe = demo_recipe(
        tmp_path / "run", "curate.decontaminate=false", "curate.decontaminate_against=['nowhere.jsonl']"
    )
    generate.run(recipe)
    curate.run(recipe)
    assert "contamination" not in dropped_report(recipe)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "warmstart.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "curate.decontaminate_against: {bench} does not exist"),
        ('{"id": 1, "label": "x"}\n', "{bench}:1: no text field (it has: id, label)"),
        ('{"question": "a b c"}\n{"question": \n', "{bench}:2: not valid JSON"),
    ],
)
def test_bad_benchmark_files_are_one_error_line(tmp_path, content, needle):
    recipe = demo_recipe(tmp_path / "run", train=20)
    generate.run(recipe)
    recipe_file = tmp_path / "recipe.toml"
    recipe_file.write_text(recipe_toml(recipe))
    bench = tmp_path / "bench.jsonl"
    if content is not None:
        bench.write_text(content)
    result = cli("curate", str(recipe_file), "--set", f"curate.decontaminate_against=['{bench}']")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle.format(bench=bench) in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (Path(recipe.run.dir) / "curated" / "train.jsonl").exists()


@pytest.mark.parametrize(
    ("finish", "dropped"),
    [
        ("stop", None),
        (None, None),
        ("turns", None),
        ("length", "truncated"),
        ("abort", "unfinished (finish reason 'abort')"),  # vLLM's, for a request it stopped
        ("pause_turn", "unfinished (finish reason 'pause_turn')"),  # Anthropic's, for a turn it will go on with
        ("unknown", "unfinished (finish reason 'unknown')"),  # a reply that named no finish reason
    ],
)
def test_a_reply_that_ended_for_a_reason_curate_does_not_know_as_complete_is_dropped(finish, dropped):
    trajectory = Trajectory(
        task_id="t",
        policy="teacher",
        messages=[Message(role="user", content="2+2?"), Message(role="assistant", content="Answer: 4")],
        verdict=Verdict(reward=1.0, passed=True),
        provenance=Provenance(provider="openai", model="m", created=0.0),
        finish_reason=finish,
    )
    assert curate.drop_reason(trajectory, require_passed=True) == dropped
