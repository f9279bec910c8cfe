"""The python environment: the shipped task set through the real sandbox, a HumanEval-style file,
and the whole pipeline (reference teacher -> curate -> sft -> eval) on it."""

from __future__ import annotations

import json
import random
import re

import pytest

from helpers import code_reply, small_recipe
from warmstart.envs.python import DEFAULT_TASKS, PythonEnv, PythonOptions
from warmstart.envs.verification import verify_all
from warmstart.errors import WarmstartError
from warmstart.stages import curate, evaluate, generate, grpo, sft
from warmstart.types import Trajectory

ENV_ARGS = ["env.name=python"]


def answer(task, code: str) -> Trajectory:
    return code_reply(task, code)


def test_every_shipped_task_passes_its_reference_and_fails_its_wrong_answer_in_the_sandbox():
    env = PythonEnv()
    records = {
        f"python/{json.loads(line)['task_id']}": json.loads(line) for line in DEFAULT_TASKS.read_text().splitlines()
    }
    assert len(env.all_tasks) >= 48
    pairs = [(t, env.reference(t, random.Random(0))) for t in env.all_tasks]
    pairs += [(t, answer(t, records[t.id]["prompt"] + records[t.id]["wrong_solution"])) for t in env.all_tasks]
    verdicts = verify_all(env, pairs)  # through the process pool
    n = len(env.all_tasks)
    assert all(v.passed for v in verdicts[:n]), [p[0].id for p, v in zip(pairs, verdicts) if not v.passed][:5]
    assert not any(v.passed for v in verdicts[n:])
    assert {t.meta["difficulty"] for t in env.all_tasks} == {"easy", "medium", "hard"}
    assert {t.split for t in env.all_tasks} == {"train", "eval"}


def test_a_humaneval_style_file_loads_and_grades(tmp_path):
    record = {
        "task_id": "HumanEval/0-like",
        "prompt": 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n',
        "canonical_solution": "    return sum(xs)\n",
        "test": "\n\nMETADATA = {'author': 'x'}\n\n\ndef check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n",
        "entry_point": "total",
    }
    path = tmp_path / "he.jsonl"
    path.write_text(json.dumps(record) + "\n")
    env = PythonEnv(PythonOptions(tasks_file=str(path)))
    [task] = env.all_tasks
    assert env.verify(task, env.reference(task, random.Random(0))).passed
    assert env.verify(task, answer(task, "    return sum(xs)\n")).passed  # a body completing the prompt
    half = env.verify(task, answer(task, "def total(xs):\n    return sum(xs) if xs else 1\n"))
    assert not half.passed and half.details["tests_passed"] == 1
    looped = tmp_path / "looped.jsonl"
    looped.write_text(
        json.dumps(
            {**record, "test": "def check(candidate):\n    for x in [1, 5]:\n        assert candidate([x]) == x\n"}
        )
        + "\n"
    )
    [proxied] = PythonEnv(PythonOptions(tasks_file=str(looped))).all_tasks  # not literal: through the proxy
    assert proxied.hidden["mode"] == "proxy"
    assert env.verify(proxied, answer(proxied, "    return sum(xs)\n")).passed
    assert not env.verify(proxied, answer(proxied, "    return len(xs)\n")).passed
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**record, "test": "def check(candidate):\n    assert candidate([1] == 1\n"}) + "\n")
    with pytest.raises(WarmstartError, match="HumanEval/0-like: the test cannot be parsed"):
        PythonEnv(PythonOptions(tasks_file=str(bad)))


def test_the_pipeline_runs_on_python_tasks(tmp_path):
    recipe = small_recipe(
        tmp_path,
        *ENV_ARGS,
        "sft.steps=4",
        "sft.seq_len=2048",
        "sft.tiny.max_positions=4096",
        "eval.k=1",
        "eval.max_new_tokens=32",
        'eval.policies={teacher="teacher", student="student"}',
        train=30,
        eval_=4,
    )
    generate.run(recipe)
    curate.run(recipe)
    dropped = json.loads((tmp_path / "curated" / "train.dropped.json").read_text())
    assert dropped["kept"] == 30  # the reference solutions all pass in the sandbox
    sft.run(recipe)
    grpo_recipe = small_recipe(
        tmp_path,
        *ENV_ARGS,
        "sft.steps=4",
        "sft.seq_len=2048",
        "sft.tiny.max_positions=4096",
        "grpo.steps=1",
        "grpo.tasks_per_step=2",
        "grpo.group_size=2",
        "grpo.max_new_tokens=16",
        "grpo.max_refills=0",
        train=30,
        eval_=4,
    )
    grpo.run(grpo_recipe)  # rewards from the sandbox; an untrained student earns none
    stages = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert stages["grpo:student-grpo"]["zero_variance_fraction"] == 1.0
    summary = json.loads(evaluate.run(recipe).read_text())
    assert summary["policies"]["teacher"]["pass@1"] == 1.0
    assert summary["policies"]["student"]["pass@1"] == 0.0  # four SFT steps write no working code


def test_verification_pool_workers_do_not_import_the_training_stages():
    """A pool worker imports the module of the function it runs: that module and the environments must not
    pull in torch (seconds per worker, paid by every verified batch)."""
    import subprocess
    import sys

    code = (
        "import sys, warmstart.envs.verification, warmstart.envs; assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-500:]
    from warmstart.envs.verification import verify_all, verify_in_order

    assert verify_all.__module__ == verify_in_order.__module__ == "warmstart.envs.verification"


HUMANEVAL_RECORD = {
    "task_id": "t/1",
    "prompt": 'def total(xs):\n    """Sum of xs."""\n',
    "canonical_solution": "    return sum(xs)\n",
    "test": "def check(candidate):\n    assert candidate([1, 2]) == 3\n",
    "entry_point": "total",
}


@pytest.mark.parametrize(
    "line, why",
    [
        ("[1, 2]", ":2: a task is a JSON object, not list"),
        ('"hello"', ":2: a task is a JSON object, not str"),
        ("null", ":2: a task is a JSON object, not NoneType"),
        (json.dumps(HUMANEVAL_RECORD | {"prompt": 5}), "task t/1: `prompt` must be str, not int"),
        (json.dumps(HUMANEVAL_RECORD | {"prompt": None}), "task t/1: `prompt` must be str, not NoneType"),
        (json.dumps(HUMANEVAL_RECORD | {"test": None}), "`test` must be str"),
        (json.dumps(HUMANEVAL_RECORD | {"canonical_solution": ["x"]}), "`canonical_solution` must be str"),
        (json.dumps(HUMANEVAL_RECORD | {"entry_point": ["total"]}), "`entry_point` must be str"),
        (json.dumps(HUMANEVAL_RECORD | {"task_id": True}), "`task_id` must be str or int, not bool"),
        (json.dumps(HUMANEVAL_RECORD | {"entry_point": "totl"}), "entry_point 'totl' is defined by neither"),
        (json.dumps(HUMANEVAL_RECORD | {"entry_point": "no such"}), "entry_point 'no such' is not a Python name"),
        (
            json.dumps(
                {"task_id": 3, "text": "Add.", "code": "def f(a):\n    return a\n", "test_list": "assert f(1) == 1"}
            ),
            "`test_list` must be list, not str",
        ),
    ],
)
def test_a_bad_task_record_is_one_error_naming_its_line_and_field(tmp_path, line, why):
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(HUMANEVAL_RECORD | {"task_id": "t/0"}) + "\n" + line + "\n")
    with pytest.raises(WarmstartError, match=re.escape(why)) as raised:
        PythonEnv(PythonOptions(tasks_file=str(path)))
    assert "\n" not in str(raised.value)
    if "JSON object" not in why:
        assert "tasks.jsonl:2: task " in str(raised.value)


def test_a_task_file_that_is_not_utf8_is_one_error_and_a_byte_order_mark_is_read_past(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(json.dumps(HUMANEVAL_RECORD).encode().replace(b"Sum", b"Summe \xe4") + b"\n")
    with pytest.raises(WarmstartError, match=re.escape(f"{path} is not UTF-8 text")):
        PythonEnv(PythonOptions(tasks_file=str(path)))
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(HUMANEVAL_RECORD).encode() + b"\n")
    [task] = PythonEnv(PythonOptions(tasks_file=str(path))).all_tasks
    assert task.id == "python/t/1"


def test_two_task_records_under_one_id_are_one_error_naming_both_lines(tmp_path):
    """Both had loaded, and which one a run used went by the seed and the count drawn (review 81)."""
    path = tmp_path / "tasks.jsonl"
    other = HUMANEVAL_RECORD | {"task_id": "t/0", "prompt": HUMANEVAL_RECORD["prompt"] + "    # another\n"}
    path.write_text(json.dumps(HUMANEVAL_RECORD | {"task_id": "t/0"}) + "\n\n" + json.dumps(other) + "\n")
    with pytest.raises(WarmstartError, match=re.escape(f"{path}:3: task id 'python/t/0' is also line 1's")):
        PythonEnv(PythonOptions(tasks_file=str(path)))
