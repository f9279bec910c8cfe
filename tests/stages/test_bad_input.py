"""Bad input ends with one line naming the problem, a non-zero exit, and nothing written is lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import curated_run, small_recipe, write_recipe_file
from warmstart.envs.arithmetic import Arithmetic
from warmstart.lm.tinymodel import TinyModelConfig, save_tiny_student
from warmstart.runs.jsonl import JsonlAppender


def snapshot(root: Path) -> dict[str, bytes]:
    """The run directory's files, but the resolved recipe the CLI writes and the lock a stage takes (which
    names the pid that held it last)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("recipe.toml", ".lock")
    }


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "warmstart.cli", *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture()
def run(tmp_path):
    recipe = curated_run(tmp_path / "run", "sft.steps=2")
    return recipe, write_recipe_file(tmp_path / "recipe.toml", recipe)


@pytest.mark.parametrize("content", [b"", b"{not json\n", b'{"task_id": "x"}\n'])
def test_empty_or_corrupt_curated_data(run, content):
    recipe, recipe_file = run
    root = Path(recipe.run.dir)
    (root / "curated" / "train.jsonl").write_bytes(content)
    before = snapshot(root)
    result = cli("sft", str(recipe_file))
    assert_one_line_error(result, "train.jsonl")
    assert snapshot(root) == before


def test_corrupt_trajectories_file_for_curate(run):
    recipe, recipe_file = run
    root = Path(recipe.run.dir)
    path = root / "trajectories" / "teacher.jsonl"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], b"garbage", *lines[1:]]))
    (root / "manifest.json").unlink()  # forget that curate ran, so it reads the file again
    before = snapshot(root)
    assert_one_line_error(cli("curate", str(recipe_file)), "teacher.jsonl:2")
    assert snapshot(root) == before


def test_missing_student_model(run):
    recipe, recipe_file = run
    before = snapshot(Path(recipe.run.dir))
    assert_one_line_error(
        cli("sft", str(recipe_file), "--set", "sft.student=/nonexistent/model"), "sft.student", "/nonexistent/model"
    )
    assert snapshot(Path(recipe.run.dir)) == before


def test_template_that_cannot_mark_assistant_turns(run, tmp_path):
    recipe, recipe_file = run
    student = save_tiny_student(
        ["user assistant hello"],
        tmp_path / "odd-student",
        TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300),
        seed=0,
    )
    # Renders the number of messages in every header: no prefix of a conversation renders as a prefix of it.
    odd = "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ messages|length }}\n{{ m['content'] }}<|im_end|>{% endfor %}"
    config = student / "tokenizer_config.json"
    import json

    settings = json.loads(config.read_text())
    settings["chat_template"] = odd
    config.write_text(json.dumps(settings))
    (student / "chat_template.jinja").unlink(missing_ok=True)
    before = snapshot(Path(recipe.run.dir))
    assert_one_line_error(
        cli("sft", str(recipe_file), "--set", f"sft.student='{student}'"), "cannot mark assistant turns"
    )
    assert snapshot(Path(recipe.run.dir)) == before


def task_files_recipe(tmp_path, train: list, eval_: list | None = None) -> Path:
    """A recipe file whose train tasks (and eval tasks, where given) come from task files written here."""
    files = {"train": train, **({"eval": eval_} if eval_ is not None else {})}
    for split, tasks in files.items():
        with JsonlAppender(tmp_path / f"{split}.jsonl") as writer:
            for task in tasks:
                writer.append(task)
    keys = [f"tasks.{split}_file='{tmp_path / f'{split}.jsonl'}'" for split in files]
    return write_recipe_file(tmp_path / "recipe.toml", small_recipe(tmp_path / "run", *keys))


def test_eval_split_that_overlaps_train(tmp_path):
    env = Arithmetic()
    train, eval_ = env.tasks("train", 30, 0), env.tasks("eval", 10, 0)
    leaked = eval_[0].model_copy(update={"split": "train"})
    recipe_file = task_files_recipe(tmp_path, [*train, leaked], eval_)
    for stage in ("generate", "eval"):
        assert_one_line_error(cli(stage, str(recipe_file)), "eval split overlaps train", eval_[0].id)
    assert not (tmp_path / "run" / "trajectories").exists()


def test_a_task_file_that_gives_one_id_twice(tmp_path):
    env = Arithmetic()
    train, eval_ = env.tasks("train", 6, 0), env.tasks("eval", 3, 0)
    relabelled = train[1].model_copy(update={"id": train[0].id})  # another problem under the first one's id
    recipe_file = task_files_recipe(tmp_path, [*train, relabelled], [*eval_, eval_[0]])
    assert_one_line_error(
        cli("generate", str(recipe_file)), "tasks.train_file", f"task id {train[0].id!r} more than once"
    )
    assert not (tmp_path / "run" / "trajectories").exists()
    # The train file fixed: the eval file's repeated task is refused too (it would count twice in pass@k).
    (tmp_path / "train.jsonl").write_text("".join(t.model_dump_json() + "\n" for t in train))
    assert_one_line_error(cli("eval", str(recipe_file)), "tasks.eval_file", f"task id {eval_[0].id!r} more than once")


def test_a_refused_command_leaves_the_runs_recipe_as_it_was(tmp_path):
    recipe = small_recipe(tmp_path / "run")
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    assert cli("generate", str(recipe_file)).returncode == 0
    written = (tmp_path / "run" / "recipe.toml").read_text()
    before = snapshot(tmp_path / "run")
    refused = cli("generate", str(recipe_file), "--set", "env.options.teacher_error_rate=0.5")
    assert_one_line_error(refused, "another config")
    assert (tmp_path / "run" / "recipe.toml").read_text() == written  # still the recipe its data came from
    assert snapshot(tmp_path / "run") == before
    refused = cli("demo", "--dir", str(tmp_path / "run"), "--set", "sft.steps=5")  # the demo's other config
    assert_one_line_error(refused, "another config")
    assert (tmp_path / "run" / "recipe.toml").read_text() == written
    assert snapshot(tmp_path / "run") == before


@pytest.mark.parametrize("override", ["sft.output=mine", "grpo.init=base", "eval.policies={}", " curate.output = x"])
def test_the_demo_refuses_names_it_sets_itself_before_any_work(tmp_path, override):
    """Taken by some of its stages and not others, such a name had run the whole demo into a traceback."""
    refused = cli("demo", "--dir", str(tmp_path / "run"), "--set", override)
    assert_one_line_error(refused, "the demo names its own data, models and eval rows")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "change, why",
    [
        ({"hidden": {}}, "hidden.answer is missing"),
        ({"hidden": {"answer": "134"}}, "hidden.answer must be int, not str"),
        ({"meta": {"a": 46, "op": "+"}}, "meta.b is missing"),
        ({"meta": {"a": "46", "op": "+", "b": 88}}, "meta.a must be int, not str"),
        ({"meta": {"a": 46, "op": "/", "b": 88}}, "meta.op must be one of + - *"),
        ({"hidden": {"answer": 135}}, "hidden.answer 135 is not 46+88 = 134"),
    ],
)
def test_a_task_file_whose_task_lacks_what_its_environment_reads(tmp_path, change, why):
    env = Arithmetic()
    good = env._task(46, "+", 88, "train")
    train = [*env.tasks("train", 4, 0), good.model_copy(update=change)]
    recipe_file = task_files_recipe(tmp_path, train)
    assert_one_line_error(cli("generate", str(recipe_file)), "tasks.train_file", "task arithmetic/46+88", why)
    assert not (tmp_path / "run" / "trajectories").exists()


def test_a_task_file_of_answers_only_serves_an_api_teacher_but_not_the_reference(tmp_path):
    env = Arithmetic()
    answers_only = [t.model_copy(update={"meta": {}}) for t in env.tasks("train", 4, 0)]  # a user's own tasks
    recipe_file = task_files_recipe(tmp_path, answers_only)
    # Loads (verification needs only hidden.answer); the reference teacher, which works from meta, says why not.
    assert_one_line_error(cli("generate", str(recipe_file)), f"task {answers_only[0].id}: no meta.a", "another teacher")


def test_a_task_files_bad_last_line_is_an_error_not_a_torn_tail(tmp_path):
    """Without a newline, a typo on the last line had been skipped as the torn tail of an interrupted writer (a
    warning), the task silently gone from the split (review 81): the user wrote the file, warmstart did not."""
    env = Arithmetic()
    recipe_file = task_files_recipe(tmp_path, env.tasks("train", 4, 0))
    with (tmp_path / "train.jsonl").open("a") as f:
        f.write('{"id": "z", oops}')
    assert_one_line_error(cli("generate", str(recipe_file)), "train.jsonl:5: not a valid Task record")
    assert not (tmp_path / "run" / "trajectories").exists()


def test_a_task_file_task_of_another_env_or_split_says_which(tmp_path):
    env = Arithmetic()
    other = env.tasks("eval", 1, 0)[0]
    recipe_file = task_files_recipe(tmp_path, [*env.tasks("train", 4, 0), other])
    assert_one_line_error(
        cli("generate", str(recipe_file)),
        f"train.jsonl: task {other.id} is of env 'arithmetic', split 'eval' (this run's: env 'arithmetic', split 'train')",
    )


def test_a_task_file_that_is_a_directory_says_so(tmp_path):
    (tmp_path / "tasks").mkdir()
    recipe = small_recipe(tmp_path / "run", f"tasks.train_file='{tmp_path / 'tasks'}'")
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    assert_one_line_error(cli("generate", str(recipe_file)), f"{tmp_path / 'tasks'}: a directory, not a JSONL file")


def test_generate_keeps_its_trajectories_when_only_an_unused_count_or_the_task_files_spelling_changes(tmp_path):
    """With tasks.train_file set, tasks.train is not used and `dir/./train.jsonl` is `dir/train.jsonl`: either
    change had made generate refuse its own trajectories as another config's, telling the user to remove them."""
    from warmstart.stages import generate

    env = Arithmetic()
    task_files_recipe(tmp_path, env.tasks("train", 4, 0))
    train_file = tmp_path / "train.jsonl"
    out = generate.run(small_recipe(tmp_path / "run", f"tasks.train_file='{train_file}'"))
    before = out.read_bytes()
    for changed in ("tasks.train=7", f"tasks.train_file='{tmp_path / '.' / 'train.jsonl'}'"):
        generate.run(small_recipe(tmp_path / "run", f"tasks.train_file='{train_file}'", changed))
        assert out.read_bytes() == before, changed
