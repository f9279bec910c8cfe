"""The per-call time limit holds from outside the program too: it is an alarm in the program's own process,
which a program can switch off (SIG_IGN, a cleared timer), and then only `wall_s` (10 s) had stopped it: a
program taking twice the limit on every test passed."""

from __future__ import annotations

import json

import pytest

from helpers import code_reply
from warmstart.envs.python import PythonEnv, PythonOptions
from warmstart.envs.sandbox import bubblewrap

pytestmark = pytest.mark.skipif(bubblewrap.bwrap_path() is None, reason="bubblewrap is not installed")

TIMER_OFF = "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
IO_TASK = {
    "task_id": "add",
    "prompt": "Read a and b, print a+b.",
    "io_tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "5 7\n", "output": "12\n"}],
    "solution": "a, b = map(int, input().split())\nprint(a + b)\n",
}
FUNCTION_TASK = {
    "task_id": "inc",
    "prompt": 'def g(n: int) -> int:\n    """n+1."""\n',
    "canonical_solution": "    return n + 1\n",
    "test": "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(2) == 3\n",
    "entry_point": "g",
}


def env_of(tmp_path, record: dict) -> PythonEnv:
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return PythonEnv(PythonOptions(tasks_file=str(path), per_call_s=1.0, wall_s=10.0))


def test_a_stdin_program_that_ignores_the_alarm_is_stopped_at_the_limit_not_at_wall_s(tmp_path):
    env = env_of(tmp_path, IO_TASK)
    [task] = env.all_tasks
    slow = TIMER_OFF + "time.sleep(6)\na, b = map(int, input().split())\nprint(a + b)\n"
    verdict = env.verify(task, code_reply(task, slow))
    assert not verdict.passed and verdict.details["failure"] == "timeout"
    assert env.verify(task, code_reply(task, task.hidden["solution"])).passed


def test_a_function_that_ignores_the_alarm_is_stopped_within_its_calls_limits(tmp_path):
    env = env_of(tmp_path, FUNCTION_TASK)
    [task] = env.all_tasks
    # The harness sets its alarm before each call: the function clears it, then takes 3 s (limit: 2 x 1 s + 2).
    slow = "import signal, time\ndef g(n):\n    signal.setitimer(signal.ITIMER_REAL, 0)\n    time.sleep(3)\n    return n + 1\n"
    verdict = env.verify(task, code_reply(task, slow))
    assert not verdict.passed and verdict.details["reason"] == "time limit"
    assert env.verify(task, code_reply(task, "def g(n):\n    return n + 1\n")).passed
