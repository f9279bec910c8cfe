"""A graded program shares its process with the harness, so it can write on the grader's channel (the nonce
and the channel are in the harness's frame): what it writes there may be refused, never crash the grading
(a record nested past the recursion limit, `{"complex": []}`, a dict of two keys had raised out of
`verify_all` and ended a whole batch), and a load error it forges on an io task is its own failure, not an
infra error masked from training. A proxied candidate's StopIteration no longer ends a test's loop, and an
assertion whose work a returned value can make unbounded is graded in the sandbox, not in this process."""

from __future__ import annotations

import json
import re

import pytest

from helpers import code_reply
from warmstart.envs.python import PythonEnv, PythonOptions
from warmstart.envs.python_tests import NotLiteral, compile_tests
from warmstart.envs.sandbox import bubblewrap
from warmstart.envs.verification import verify_all

pytestmark = pytest.mark.skipif(bubblewrap.bwrap_path() is None, reason="bubblewrap is not installed")

ADD = {
    "task_id": "add",
    "prompt": 'def add(a, b):\n    """Return a+b."""\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(10, 5) == 15\n",
    "entry_point": "add",
}
IO = {
    "task_id": "io",
    "prompt": "Read two ints, print their sum.",
    "io_tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "10 5\n", "output": "15\n"}],
    "solution": "a, b = map(int, input().split())\nprint(a + b)\n",
}
ZIPPED = {
    "task_id": "zipped",
    "prompt": 'def add(a, b):\n    """Return a+b."""\n',
    "canonical_solution": "    return a + b\n",
    # The candidate called inside the iterator: its StopIteration, raised in the test as itself, ends the loop.
    "test": "EXPECTED = [3, 15]\ndef check(candidate):\n    for got, want in zip(map(lambda p: candidate(*p), [(1, 2), (10, 5)]), EXPECTED):\n        assert got == want\n",
    "entry_point": "add",
}
POWER = {
    "task_id": "power",
    "prompt": 'def n_of(k):\n    """Return k."""\n',
    "canonical_solution": "    return k\n",
    "test": "def check(candidate):\n    assert 2 ** candidate(3) == 8\n    assert math.factorial(candidate(3)) == 6\n",
    "entry_point": "n_of",
}
FIND_CHANNEL = (
    "import sys\nf = sys._getframe()\nwhile 'spec' not in f.f_locals:\n    f = f.f_back\n"
    "out, nonce = f.f_locals['out'], f.f_locals['spec']['nonce']\n"
)


def env_of(tmp_path, *records: dict) -> PythonEnv:
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return PythonEnv(PythonOptions(tasks_file=str(path), per_call_s=2.0, wall_s=8.0))


def forging(line: str, then: str) -> str:
    return FIND_CHANNEL + f"out.write(nonce + ' ' + {line})\nout.flush()\n" + then


DEEP = "'[' * 100000 + '\\n'"
BAD_COMPLEX = """'{"i": 0, "value": {"complex": []}}\\n'"""
TWO_KEYS = """'{"i": 0, "value": {"a": 1, "b": 2}}\\n'"""
LOAD_ERROR = """'{"load_error": "x"}\\n'"""
# RUNNER's result of the right keys with the wrong types (review 79: each had raised out of the grading).
COUNT_AS_TEXT = """'{"i": 0, "value": {"dict": [["stdout", ""], ["bytes", "x"], ["error", ""]]}}\\n'"""
ERROR_AS_LIST = """'{"i": 0, "value": {"dict": [["stdout", ""], ["bytes", 0], ["error", [1]]]}}\\n'"""
NOT_BASE64 = """'{"i": 0, "value": {"dict": [["stdout", "a"], ["bytes", 0], ["error", ""]]}}\\n'"""
WRONG_FUNCTION = "def add(a, b):\n    return 0\n"
WRONG_IO = "print('wrong')\n"


@pytest.mark.parametrize("line", [DEEP, BAD_COMPLEX, TWO_KEYS, LOAD_ERROR])
def test_a_function_program_writing_on_the_channel_fails_and_the_batch_goes_on(tmp_path, line):
    env = env_of(tmp_path, ADD)
    [task] = env.all_tasks
    forged, right = (
        code_reply(task, forging(line, WRONG_FUNCTION)),
        code_reply(task, "def add(a, b):\n    return a + b\n"),
    )
    try:
        verdicts = verify_all(env, [(task, right), (task, forged), (task, right)])
    finally:
        env.close()
    assert [v.passed for v in verdicts] == [True, False, True]
    assert verdicts[1].infra_error is None and verdicts[1].reward == 0.0


@pytest.mark.parametrize("line", [DEEP, BAD_COMPLEX, TWO_KEYS, LOAD_ERROR, COUNT_AS_TEXT, ERROR_AS_LIST, NOT_BASE64])
def test_an_io_program_writing_on_the_channel_fails_not_an_infra_error(tmp_path, line):
    env = env_of(tmp_path, IO)
    [task] = env.all_tasks
    try:
        verdict = env.verify(task, code_reply(task, forging(line, WRONG_IO)))
        assert env.verify(task, code_reply(task, IO["solution"])).passed
    finally:
        env.close()
    assert not verdict.passed and verdict.infra_error is None and verdict.reward == 0.0


def test_a_proxied_candidate_raising_stop_iteration_does_not_end_the_tests_loop(tmp_path):
    env = env_of(tmp_path, ZIPPED)
    [task] = env.all_tasks
    assert task.hidden["mode"] == "proxy"
    try:
        stops = env.verify(task, code_reply(task, "def add(a, b):\n    raise StopIteration\n"))
        assert env.verify(task, code_reply(task, "def add(a, b):\n    return a + b\n")).passed
    finally:
        env.close()
    assert not stops.passed


@pytest.mark.parametrize(
    "assertion, amplifier",
    [
        ("2 ** candidate(3) == 8", "**"),
        ("len([0] * candidate(3)) == 3", "*"),
        ("candidate(3) << 2 == 12", "<<"),
        ("math.factorial(candidate(3)) == 6", "math.factorial(...)"),
        ("candidate(4) % 2 == 0", "%"),  # a format string returned: %0200000000d
        ("'x'.ljust(candidate(2)) == 'x '", "'x'.ljust(...)"),
        ("f'{candidate(1):>{candidate(2)}}' == 'x'", "a format width"),
        ("all(x * 2 > 0 for x in candidate(3))", "*"),
    ],
)
def test_an_assertion_whose_work_a_value_can_make_unbounded_is_not_graded_here(assertion, amplifier):
    with pytest.raises(NotLiteral, match=re.escape(f"computes {amplifier} from the results")):
        compile_tests(f"def check(candidate):\n    assert {assertion}\n", "f", "task")


@pytest.mark.parametrize(
    "assertion",
    [
        "math.isclose(candidate(1.0), 2 * math.pi)",
        "candidate(3) == 2 ** 10",
        "abs(candidate(2) - 4) < 1e-9 * 4",
        "abs(candidate(2) - math.log(2)) < 1e-9",  # a math function of constants
        "candidate('a').count('a') == 1",
    ],
)
def test_constants_and_bounded_maths_are_still_graded_here(assertion):
    calls, asserts = compile_tests(f"def check(candidate):\n    assert {assertion}\n", "f", "task")
    assert len(calls) == 1 and len(asserts) == 1


def test_a_huge_value_in_an_amplifying_assertion_is_bounded_by_the_sandbox(tmp_path):
    env = env_of(tmp_path, POWER)
    [task] = env.all_tasks
    assert task.hidden["mode"] == "proxy"
    try:
        # Graded in this process, 2 ** 10**9 had run for minutes with no bound (and math.factorial of it). The
        # test names `math` without importing it, as a literal-call test may: the proxy gives it too.
        huge = env.verify(task, code_reply(task, "def n_of(k):\n    return 10 ** 9\n"))
        assert env.verify(task, code_reply(task, "def n_of(k):\n    return k\n")).passed
    finally:
        env.close()
    assert not huge.passed and huge.infra_error is None
