"""A test's assertions graded outside the sandbox may name only what is there (the results, a few builtins,
`math`): one naming anything else (range, pow, the test's helper or constant, an import, the prompt's helper)
had raised NameError there, read as a failed assert, so every answer, the canonical one included, scored 0.
Such tests now go through the proxy, where the test file runs whole. And a reply's ```Python or ```python3
block is its program (it had been taken as prose)."""

from __future__ import annotations

import json

import pytest

from helpers import code_reply
from warmstart.envs.python import PythonEnv, PythonOptions, last_code_block
from warmstart.envs.python_tests import NotLiteral, compile_tests
from warmstart.envs.sandbox import bubblewrap

PROMPT = 'def sq(n: int) -> int:\n    """n squared."""\n'
TESTS = {
    "helper": "def expected(n):\n    return n * n\n\n\ndef check(candidate):\n    assert candidate(3) == expected(3)\n",
    "import": "from math import isclose\n\n\ndef check(candidate):\n    assert isclose(candidate(3), 9)\n",
    "pow": "def check(candidate):\n    assert candidate(10) == pow(10, 2)\n",
    "range": "def check(candidate):\n    assert candidate(3) in range(9, 10)\n",
    "constant": "N = 9\n\n\ndef check(candidate):\n    assert candidate(3) == N\n",
}


@pytest.mark.skipif(bubblewrap.bwrap_path() is None, reason="bubblewrap is not installed")
def test_assertions_naming_more_than_the_results_are_graded_whole(tmp_path):
    path = tmp_path / "tasks.jsonl"
    records = [
        {
            "task_id": name,
            "prompt": PROMPT,
            "canonical_solution": "    return n * n\n",
            "test": test,
            "entry_point": "sq",
        }
        for name, test in TESTS.items()
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    env = PythonEnv(PythonOptions(tasks_file=str(path)))
    for task in env.all_tasks:
        right = env.verify(task, code_reply(task, task.hidden["solution"]))
        wrong = env.verify(task, code_reply(task, "def sq(n):\n    return n + 1\n"))
        assert (right.passed, wrong.passed) == (True, False), (task.id, right.details)


def test_only_assertions_on_what_is_there_outside_are_graded_outside():
    literal = "def check(c):\n    assert abs(c(3) - 9) < 1e-9 and all(v > 0 for v in [c(2)])\n"
    calls, asserts = compile_tests(literal, "f", "t")  # builtins, math and its own comprehension's names
    assert len(calls) == 2 and len(asserts) == 1
    for test in TESTS.values():
        with pytest.raises(NotLiteral, match="names"):
            compile_tests(test, "sq", "t")


@pytest.mark.parametrize("fence", ["python", "Python", "PYTHON", "python3", "py", "py3", "", "python title=x"])
def test_a_python_block_is_the_program_whatever_its_tag_says(fence):
    reply = f"Here it is:\n```{fence}\nprint(1)\n```\nDone."
    assert last_code_block(reply) == "print(1)\n"


def test_a_block_of_another_language_is_not_taken_for_python():
    assert last_code_block("```text\nnot code\n```\n```python\nprint(2)\n```") == "print(2)\n"
    assert last_code_block("```pyrite\nnot python\n```") != "not python\n"


@pytest.mark.skipif(bubblewrap.bwrap_path() is None, reason="bubblewrap is not installed")
def test_an_assertion_whose_comprehension_or_lambda_reads_a_result_is_graded(tmp_path):
    """A generator expression's or a lambda's body does not see eval's locals: results kept there had been a
    NameError, read as a failure, for every answer."""
    tests = {
        "genexpr": "def check(candidate):\n    assert all(x in candidate(3) for x in [0, 1, 2])\n",
        "lambda": "def check(candidate):\n    assert (lambda: candidate(3))() == [0, 1, 2]\n",
    }
    prompt = 'def upto(n: int) -> list:\n    """0..n-1."""\n'
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {"task_id": name, "prompt": prompt, "canonical_solution": "    return list(range(n))\n", "test": test}
                | {"entry_point": "upto"}
            )
            + "\n"
            for name, test in tests.items()
        )
    )
    env = PythonEnv(PythonOptions(tasks_file=str(path)))
    for task in env.all_tasks:
        assert env.verify(task, code_reply(task, task.hidden["solution"])).passed, task.id
        assert not env.verify(task, code_reply(task, "def upto(n):\n    return [0]\n")).passed, task.id


@pytest.mark.parametrize(
    "reply",
    [
        "Here: ```python\nprint(1)\n```",  # a fence after text on its line
        "````python\nprint(1)\n````",  # four backticks
        "```python\nprint(1)\n``` That's it.",  # words after the closing fence
        "```python\r\nprint(1)\r\n```",  # CRLF
    ],
)
def test_odd_fences_still_give_the_block(reply):
    assert last_code_block(reply).replace("\r", "").strip() == "print(1)"
