"""stdin/stdout tests in the python environment: comparison, task files, and programs run through the
real sandbox (zygote and per-execution), failures named, sample tasks' references passing."""

from __future__ import annotations

import json
import random
import time

import pytest

from helpers import code_reply
from warmstart.envs.io_tests import grade_io, outputs_match
from warmstart.envs.python import PythonEnv, PythonOptions
from warmstart.envs.sandbox.bubblewrap import SANDBOX_FAILED, Execution
from warmstart.errors import WarmstartError
from warmstart.types import Trajectory

# Sample io tasks with reference solutions (for these tests only; the package ships none).
SAMPLE_TASKS = [
    {
        "task_id": "io/sum-two",
        "prompt": "Read two integers a and b on one line; print a + b.",
        "io_tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "-5 5", "output": "0"}],
        "solution": "a, b = map(int, input().split())\nprint(a + b)\n",
    },
    {
        "task_id": "io/reverse-words",
        "prompt": "Read a line of words; print them in reverse order, separated by single spaces.",
        "io_tests": [{"input": "a b c\n", "output": "c b a\n"}, {"input": "hello\n", "output": "hello\n"}],
        "solution": "print(' '.join(reversed(input().split())))\n",
    },
    {
        "task_id": "io/gcd-cases",
        "prompt": "The first line holds t; each of the next t lines two integers. Print the gcd of each pair on its own line.",
        "io_tests": [
            {"input": "3\n4 6\n7 13\n100 75\n", "output": "2\n1\n25\n"},
            {"input": "1\n0 9\n", "output": "9\n"},
        ],
        "solution": "import math, sys\ndata = sys.stdin.read().split()\nt = int(data[0])\nprint('\\n'.join(str(math.gcd(int(data[1 + 2 * i]), int(data[2 + 2 * i]))) for i in range(t)))\n",
    },
    {
        "task_id": "io/mean",
        "prompt": "The first line holds n, the second n integers. Print their mean (absolute or relative error 1e-6 allowed).",
        "io_tests": [
            {"input": "3\n1 2 2\n", "output": "1.6666666667\n"},
            {"input": "2\n1000000 1\n", "output": "500000.5\n"},
        ],
        "float_tolerance": 1e-6,
        "solution": "n = int(input())\nxs = list(map(int, input().split()))\nprint(f'{sum(xs) / n:.9f}')\n",
    },
    {
        "task_id": "io/distinct",
        "prompt": "Read integers (any whitespace) until the end of input; print how many distinct values there are.",
        "io_tests": [{"input": "1 2 2\n3\n1\n", "output": "3\n"}, {"input": "\n", "output": "0\n"}],
        "solution": "import os\nprint(len(set(os.read(0, os.fstat(0).st_size).split())))\n",
    },
    {
        "task_id": "io/prefix-sums",
        "prompt": "n and q, then n integers, then q queries l r (1-based, inclusive): print each range's sum.",
        "io_tests": [{"input": "5 3\n1 2 3 4 5\n1 5\n2 3\n4 4\n", "output": "15\n5\n4\n"}],
        "solution": (
            "import sys\ninput = sys.stdin.readline\nn, q = map(int, input().split())\nprefix = [0]\n"
            "for x in map(int, input().split()):\n    prefix.append(prefix[-1] + x)\nout = []\n"
            "for _ in range(q):\n    l, r = map(int, input().split())\n    out.append(prefix[r] - prefix[l - 1])\n"
            "sys.stdout.write('\\n'.join(map(str, out)) + '\\n')\n"
        ),
    },
]
SUM_TASK = SAMPLE_TASKS[0]["solution"]


def write_tasks(tmp_path, records, name="io.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def answer(task, code: str) -> Trajectory:
    return code_reply(task, code, "Here:\n")


@pytest.fixture(scope="module")
def sum_env(tmp_path_factory):
    """One task, sums of ten pairs, short time limit: the failure cases below share its zygote."""
    tests = [{"input": f"{i} {i * 7}\n", "output": f"{i * 8}\n"} for i in range(10)]
    path = write_tasks(tmp_path_factory.mktemp("io"), [{"task_id": "sum10", "prompt": "a + b", "io_tests": tests}])
    env = PythonEnv(PythonOptions(tasks_file=path, per_call_s=0.5, wall_s=3.0, memory_mb=256))
    yield env, env.all_tasks[0]
    env.close()


def test_outputs_compare_as_whitespace_separated_tokens():
    assert outputs_match("1 2\n3  \n\n\n", "1 2\n3")
    assert outputs_match("1\n2\n", "1 2")  # line breaks are whitespace, like Codeforces' default checker
    assert not outputs_match("1 2", "1 2 3")
    assert not outputs_match("Yes", "YES")
    assert not outputs_match("", "0")


def test_floats_match_within_the_tolerance_only_when_one_is_given():
    assert not outputs_match("0.3333333", "0.333333333")
    assert outputs_match("0.3333333", "0.333333333", float_tolerance=1e-6)
    assert outputs_match("1000000.4", "1000000", float_tolerance=1e-6)  # relative
    assert outputs_match("1e-9", "0", float_tolerance=1e-6)  # absolute
    assert not outputs_match("0.34", "0.333", float_tolerance=1e-6)
    assert not outputs_match("abc", "abd", float_tolerance=0.5)  # words stay exact
    assert not outputs_match("9" * 400, "8" * 400, float_tolerance=1e-6)  # both overflow to inf: not equal


def test_every_sample_reference_passes_and_a_wrong_program_fails(tmp_path):
    env = PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, SAMPLE_TASKS)))
    try:
        assert len(env.all_tasks) == len(SAMPLE_TASKS)
        for task in env.all_tasks:
            verdict = env.verify(task, env.reference(task, random.Random(0)))
            assert verdict.passed and verdict.reward == 1.0, (task.id, verdict)
            assert verdict.details["passed_tests"] == verdict.details["total_tests"] == len(task.hidden["io_tests"])
        mean = next(t for t in env.all_tasks if t.id == "python/io/mean")
        assert not env.verify(mean, answer(mean, "input()\nprint(1.6)\n")).passed
    finally:
        env.close()


def test_one_wrong_answer_fails_with_the_fraction_and_the_test(sum_env):
    env, task = sum_env
    verdict = env.verify(task, answer(task, "a, b = map(int, input().split())\nprint(a + b if a != 3 else -1)\n"))
    assert not verdict.passed and verdict.reward == 0.0
    assert verdict.details["passed_tests"] == 9 and verdict.details["fraction"] == 0.9
    assert verdict.details["failed_test"] == 3 and verdict.details["failure"] == "wrong_answer"


@pytest.mark.parametrize(
    ("program", "failure", "stderr"),
    [
        ("raise ValueError('no luck')\n", "runtime_error", "ValueError: no luck"),
        ("input()\ninput()\n", "runtime_error", "EOFError: EOF when reading a line"),  # reads past the input
        ("import sys\nsys.exit(3)\n", "runtime_error", "SystemExit: 3"),
        ("while True:\n    pass\n", "timeout", None),
        ("import sys\nsys.stdout.write('x' * 10**7)\n", "output_limit", None),
        ("x = bytearray(2 << 30)\n", "memory", "MemoryError: "),
    ],
    ids=["raises", "eof", "exit-code", "timeout", "too-much-output", "memory"],
)
def test_a_failing_program_names_its_failure(sum_env, program, failure, stderr):
    env, task = sum_env
    verdict = env.verify(task, answer(task, program))
    assert not verdict.passed and verdict.infra_error is None
    assert verdict.details["failed_test"] == 0 and verdict.details["failure"] == failure
    assert verdict.details.get("stderr") == stderr


def test_a_timeout_stops_the_remaining_tests(sum_env):
    env, task = sum_env
    started = time.monotonic()
    verdict = env.verify(task, answer(task, "while True:\n    pass\n"))
    assert verdict.details["not_run"] == 9 and verdict.details["passed_tests"] == 0
    assert time.monotonic() - started < 3.0  # one 0.5 s limit paid, not ten


def test_contest_idioms_read_and_write_the_real_descriptors(sum_env):
    env, task = sum_env
    for program in (
        "import os\nos.write(1, str(sum(map(int, open(0).read().split()))).encode())\nos._exit(0)\n",
        "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))\nexit()\n",
        "def main():\n    print(sum(map(int, input().split())))\n\n\nif __name__ == '__main__':\n    main()\n",
    ):
        verdict = env.verify(task, answer(task, program))
        assert verdict.passed, (program, verdict.details)


# Programs that are right when Python runs them as a script, through what the interpreter does as a
# program ends: each printed nothing here (wrong_answer) or failed a flush of a closed stdout.
ENDINGS = {
    "thread": (
        "import sys, threading\nsys.setrecursionlimit(10**6)\nthreading.stack_size(1 << 26)\n"
        "def main():\n    print(sum(map(int, input().split())))\n"
        "threading.Thread(target=main).start()\n"
    ),
    "atexit": (
        "import atexit, io, sys\nreal, sys.stdout = sys.stdout, io.StringIO()\n"
        "atexit.register(lambda: real.write(sys.stdout.getvalue()))\nprint(sum(map(int, input().split())))\n"
    ),
    "dunder-stdout": "import sys\nsys.__stdout__.write(str(sum(map(int, input().split()))) + '\\n')\n",
    "closed-stdout": "import sys\nprint(sum(map(int, input().split())))\nsys.stdout.close()\n",
    "file-on-fd-1": "import os\nout = os.fdopen(1, 'w')\nout.write(str(sum(map(int, input().split()))))\n",
}


@pytest.mark.parametrize("program", ENDINGS.values(), ids=ENDINGS.keys())
def test_a_program_ends_as_the_interpreter_ends_it(sum_env, program):
    env, task = sum_env
    verdict = env.verify(task, answer(task, program))
    assert verdict.passed, verdict.details


def test_a_thread_that_never_ends_is_a_timeout(sum_env):
    env, task = sum_env
    program = "import threading, time\nthreading.Thread(target=lambda: time.sleep(60)).start()\nprint(1)\n"
    verdict = env.verify(task, answer(task, program))
    assert verdict.details["failure"] == "timeout" and verdict.infra_error is None


def test_a_new_sandbox_per_execution_grades_the_same(tmp_path):
    env = PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, SAMPLE_TASKS[:1]), zygote=False))
    [task] = env.all_tasks
    assert env.verify(task, env.reference(task, random.Random(0))).passed
    wrong = env.verify(task, answer(task, "print(3)\n"))
    assert not wrong.passed and wrong.details["passed_tests"] == 1 and wrong.details["failed_test"] == 1
    assert env.verify(task, answer(task, ENDINGS["thread"])).passed  # no zygote: the harness's own process


def test_a_sandbox_that_fails_is_an_infra_error_not_a_zero():
    def broken(spec: dict, calls_s: float | None = None) -> Execution:
        return Execution(returncode=None, stdout=b"", stderr=f"{SANDBOX_FAILED}no answer in time".encode())

    hidden = {"io_tests": [{"input": "1 2", "output": "3"}], "float_tolerance": None}
    verdict = grade_io(hidden, SUM_TASK, broken, per_test_s=1.0)
    assert verdict.infra_error and "no answer in time" in verdict.infra_error
    assert verdict.details == {}


def test_an_apps_style_file_loads_and_bad_files_are_one_error_naming_the_task(tmp_path):
    apps = {
        "problem_id": 4242,
        "question": "Print a + b.",
        "input_output": json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", ["7"]]}),
        "solutions": json.dumps([SUM_TASK]),
        "difficulty": "introductory",
    }
    env = PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, [apps])))
    [task] = env.all_tasks
    assert task.id == "python/4242" and task.meta["difficulty"] == "introductory"
    assert task.hidden["io_tests"][1] == {"input": "3 4\n", "output": "7"}
    assert env.verify(task, env.reference(task, random.Random(0))).passed
    env.close()
    bad = [
        ({**apps, "input_output": json.dumps({"inputs": ["1 2"], "outputs": []})}, "1 inputs but 0 outputs"),
        ({**apps, "input_output": json.dumps({"inputs": [], "outputs": []})}, "no io tests"),
        ({**apps, "input_output": json.dumps({"fn_name": "f", "inputs": [[1]], "outputs": [1]})}, "fn_name"),
        ({"task_id": "t7", "prompt": "p", "io_tests": [{"input": "1"}]}, "io test 0 needs string"),
        ({"task_id": "t8", "prompt": "p", "io_tests": [{"input": "", "output": ""}], "float_tolerance": "x"}, "float_"),
    ]
    for record, message in bad:
        name = record.get("task_id", record.get("problem_id"))
        with pytest.raises(WarmstartError, match=f"task {name}: .*{message}") as error:
            PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, [record], "bad.jsonl")))
        assert "\n" not in str(error.value)


def test_executions_per_second_on_a_ten_test_task(sum_env, capsys):
    env, task = sum_env
    correct = answer(task, "a, b = map(int, input().split())\nprint(a + b)\n")
    env.verify(task, correct)  # the zygote started
    rounds = 3
    started = time.monotonic()
    verdicts = [env.verify(task, correct) for _ in range(rounds)]
    rate = rounds * 10 / (time.monotonic() - started)
    assert all(v.passed for v in verdicts)
    with capsys.disabled():
        print(f"\nio tests, zygote: {rate:.0f} executions/s (one per test input)")
