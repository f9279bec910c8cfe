"""The per-call time limit holds when the program switches its alarm off (SIG_IGN, a cleared timer): only
`wall_s` (10 s) had stopped it, and a program taking twice the limit on every test passed. An io task's run
is stopped from outside; a function's calls are timed by the harness's own clock. A program's load is
bounded by `wall_s` alone (an outside bound of its calls' limits had cut a slow import)."""

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


CLEARED = "import signal, time\ndef g(n):\n    signal.setitimer(signal.ITIMER_REAL, 0)\n"


def test_a_function_that_ignores_the_alarm_is_a_timeout(tmp_path):
    env = env_of(tmp_path, FUNCTION_TASK)
    [task] = env.all_tasks
    # The harness sets its alarm before each call: the function clears it, then takes 1.5 s (limit 1 s).
    slow = CLEARED + "    time.sleep(1.5)\n    return n + 1\n"
    verdict = env.verify(task, code_reply(task, slow))
    assert not verdict.passed and verdict.details["reason"] == "time limit"
    assert env.verify(task, code_reply(task, "def g(n):\n    return n + 1\n")).passed


def test_one_call_over_its_limit_fails_the_task_though_the_run_is_short(tmp_path):
    env = env_of(tmp_path, FUNCTION_TASK)
    [task] = env.all_tasks
    one_slow = CLEARED + "    if n == 2:\n        time.sleep(1.5)\n    return n + 1\n"
    verdict = env.verify(task, code_reply(task, one_slow))
    assert not verdict.passed and verdict.details["tests_passed"] == 1 and verdict.details["reason"] == "time limit"


def test_a_program_whose_load_takes_longer_than_its_calls_limits_has_wall_s(tmp_path):
    env = env_of(tmp_path, FUNCTION_TASK)
    [task] = env.all_tasks
    # Calls' limits 2 x 1 s: a table computed at import in ~4.5 s (under wall_s 10 s) is the program's own time.
    slow_load = "import time\ntime.sleep(4.5)\nTABLE = {n: n + 1 for n in range(10)}\ndef g(n):\n    return TABLE[n]\n"
    verdict = env.verify(task, code_reply(task, slow_load))
    assert verdict.passed, verdict.details


def test_a_program_that_patches_the_clock_at_import_is_still_timed(tmp_path):
    """The harness took its clock after loading the program: `time.monotonic = lambda: 0.0` at import, with
    the alarm cleared in the call, let a call past its limit pass."""
    env = env_of(tmp_path, FUNCTION_TASK)
    [task] = env.all_tasks
    frozen = "import time\n_sleep = time.sleep\ntime.monotonic = lambda: 0.0\n" + CLEARED.replace(
        "import signal, time\n", "import signal\n"
    )
    verdict = env.verify(task, code_reply(task, frozen + "    _sleep(1.5)\n    return n + 1\n"))
    assert not verdict.passed and verdict.details["reason"] == "time limit"
