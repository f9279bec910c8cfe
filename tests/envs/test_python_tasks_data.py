"""Checks on the function-synthesis task set in src/warmstart/envs/python_tasks.jsonl.

The data is our own and trusted, so solutions are run in-process with plain `exec`.
"""

import ast
import doctest
import json
import re
from pathlib import Path

import pytest

DATA = Path(__file__).parents[2] / "src/warmstart/envs/python_tasks.jsonl"
KEYS = {"task_id", "difficulty", "entry_point", "prompt", "canonical_solution", "test", "wrong_solution"}
DIFFICULTIES = ("easy", "medium", "hard")
PLAIN_TYPES = (type(None), bool, int, str)


def load_tasks() -> list[dict]:
    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


TASKS = load_tasks()
BY_ID = {task.get("task_id"): task for task in TASKS}


def define(task: dict, body: str):
    namespace: dict = {"__name__": "candidate_module"}
    exec(compile(task["prompt"] + body, task["task_id"], "exec"), namespace)
    return namespace[task["entry_point"]]


def load_check(task: dict):
    namespace: dict = {}
    exec(compile(task["test"], task["task_id"] + ":test", "exec"), namespace)
    return namespace["check"]


def is_plain(value) -> bool:
    """Only values the sandbox harness can carry back: None, bool, int, str and containers of them."""
    if type(value) in PLAIN_TYPES:
        return True
    if type(value) in (list, tuple, set):
        return all(is_plain(v) for v in value)
    if type(value) is dict:
        return all(is_plain(k) and is_plain(v) for k, v in value.items())
    return False


def candidate_call(node: ast.expr) -> ast.Call | None:
    """The `candidate(...)` call of an assert's left side: bare, or wrapped in `sorted(...)`."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id == "candidate":
            return node
        if node.func.id == "sorted" and len(node.args) == 1 and not node.keywords:
            return candidate_call(node.args[0])
    return None


def test_file_and_counts():
    assert DATA.is_file()
    assert len(TASKS) >= 48
    counts = {level: sum(task.get("difficulty") == level for task in TASKS) for level in DIFFICULTIES}
    assert all(count >= 16 for count in counts.values()), counts
    assert sum(counts.values()) == len(TASKS)


def test_task_ids_unique():
    ids = [task.get("task_id") for task in TASKS]
    assert len(ids) == len(set(ids))


@pytest.fixture(params=sorted(BY_ID, key=str))
def task(request) -> dict:
    return BY_ID[request.param]


def test_keys_and_fields(task):
    assert set(task) == KEYS
    assert all(isinstance(task[key], str) and task[key] for key in KEYS)
    assert re.fullmatch(r"warmstart/[a-z][a-z0-9_]*", task["task_id"])
    assert task["difficulty"] in DIFFICULTIES
    assert task["entry_point"].isidentifier()
    assert task["canonical_solution"].startswith("    ")
    assert task["wrong_solution"].startswith("    ")


def test_prompt_has_docstring(task):
    prompt = task["prompt"]
    assert prompt.endswith('"""\n')
    functions = [n for n in ast.parse(prompt).body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in functions] == [task["entry_point"]]
    docstring = ast.get_docstring(functions[0])
    assert docstring and ">>>" in docstring


def test_test_source_shape(task):
    module = ast.parse(task["test"])
    assert len(module.body) == 1
    check = module.body[0]
    assert isinstance(check, ast.FunctionDef) and check.name == "check"
    assert [a.arg for a in check.args.args] == ["candidate"]
    assert len(check.body) >= 6
    for statement in check.body:
        assert isinstance(statement, ast.Assert), ast.unparse(statement)
        calls = [
            n
            for n in ast.walk(statement.test)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "candidate"
        ]
        assert calls, ast.unparse(statement)
        # The restricted shape a sandboxed grader relies on: `<call> ==/is <literal>`, literal args.
        test = statement.test
        assert isinstance(test, ast.Compare) and len(test.ops) == 1, ast.unparse(statement)
        assert isinstance(test.ops[0], (ast.Eq, ast.Is)), ast.unparse(statement)
        call = candidate_call(test.left)
        assert call is not None and len(calls) == 1, ast.unparse(statement)
        for argument in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(argument)
        if isinstance(test.ops[0], ast.Is):
            assert isinstance(test.comparators[0], ast.Constant)
            assert test.comparators[0].value in (True, False, None)
        else:
            ast.literal_eval(test.comparators[0])


def test_canonical_solution_passes(task):
    function = define(task, task["canonical_solution"])
    load_check(task)(function)


def test_canonical_results_are_plain_data(task):
    function = define(task, task["canonical_solution"])
    for statement in ast.parse(task["test"]).body[0].body:
        call = candidate_call(statement.test.left)
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        assert is_plain(function(*args, **kwargs)), ast.unparse(statement)


def test_wrong_solution_fails(task):
    function = define(task, task["wrong_solution"])
    check = load_check(task)
    try:
        check(function)
    except Exception:
        return
    pytest.fail(f"{task['task_id']}: wrong_solution passes every assert")


def test_prompt_examples_hold(task):
    function = define(task, task["canonical_solution"])
    examples = doctest.DocTestParser().get_doctest(
        function.__doc__, {task["entry_point"]: function}, task["task_id"], None, 0
    )
    assert examples.examples
    runner = doctest.DocTestRunner(verbose=False)
    result = runner.run(examples, out=lambda _text: None)
    assert result.failed == 0
