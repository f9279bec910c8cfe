"""Tests of any shape through the proxy: the candidate lives in its own sandboxed process and cannot reach
the test's code, expected values or report channel, whatever it tries."""

from __future__ import annotations

import json
import random

import pytest

from helpers import code_reply
from warmstart.envs.python import PythonEnv, PythonOptions
from warmstart.envs.sandbox import bubblewrap
from warmstart.errors import WarmstartError
from warmstart.types import Trajectory

pytestmark = pytest.mark.skipif(bubblewrap.bwrap_path() is None, reason="bubblewrap is not installed")

SECRET = "warmstart-secret-7f3a9c"  # only the test knows it; a candidate that returns it has read the test
PROMPT = 'def guess() -> str:\n    """Return the secret."""\n'
TEST = f"""
EXPECTED = "{SECRET}"


def check(candidate):
    for _ in range(2):  # a loop: not the literal-call shape, so the proxy path
        assert candidate() == EXPECTED
"""
# Looks everywhere a sandboxed program can look for the test's text: its own memory (every readable
# mapping of /proc/self/mem), every process it can see (/proc/*/mem, cmdline, environ), every file.
SNOOP = r"""
import os, re

PATTERN = re.compile(rb"warmstart-" + rb"secret-[0-9a-f]{6}")


def scan_memory(pid):
    found = []
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                if not perms.startswith("r"):
                    continue
                start, end = (int(x, 16) for x in span.split("-"))
                if end - start > 256 << 20:
                    continue
                try:
                    mem.seek(start)
                    found += PATTERN.findall(mem.read(end - start))
                except (OSError, OverflowError, ValueError):
                    pass
    except OSError:
        pass
    return found


def scan_files():
    found = []
    for root in ("/task", "/work", "/tmp", "/dev/shm"):
        for folder, _, names in os.walk(root):
            for name in names:
                try:
                    found += PATTERN.findall(open(os.path.join(folder, name), "rb").read())
                except OSError:
                    pass
    return found


def guess():
    found = scan_memory("self") + scan_files()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            found += scan_memory(pid)
            for name in ("cmdline", "environ"):
                try:
                    found += PATTERN.findall(open(f"/proc/{pid}/{name}", "rb").read())
                except OSError:
                    pass
    return found[0].decode() if found else "not found"
"""
# Writes made-up passing reports into every descriptor it holds and every process it can signal.
FORGE = r"""
import os, signal


def guess():
    forged = '{"unit": 0, "passed": true}\n{"done": true}\n'
    for fd in range(1024):
        try:
            os.write(fd, forged.encode())
        except OSError:
            pass
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    return "wrong"
"""


def answer(task, code: str) -> Trajectory:
    return code_reply(task, code)


def write_tasks(tmp_path, records: list[dict]):
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def secret_env(tmp_path, zygote: bool) -> PythonEnv:
    record = {
        "task_id": "secret/0",
        "prompt": PROMPT,
        "canonical_solution": f"    return {SECRET!r}\n",
        "test": TEST,
        "entry_point": "guess",
    }
    return PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, [record]), zygote=zygote, per_call_s=20, wall_s=60))


@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "per-execution"])
def test_the_candidate_cannot_find_the_tests_expected_value_anywhere(tmp_path, zygote):
    env = secret_env(tmp_path, zygote)
    [task] = env.all_tasks
    assert task.hidden["mode"] == "proxy"
    try:
        # First the right answer, so that the zygote has held this very test before the snooper runs.
        assert env.verify(task, env.reference(task, random.Random(0))).passed
        verdict = env.verify(task, answer(task, SNOOP))
        assert not verdict.passed and verdict.infra_error is None
        # The snooper does find the secret wherever it can look: here, in its own program's memory.
        control = SNOOP + "\nKEEP = '-'.join(['warmstart', 'secret', '7f3a9c'])\n"
        assert env.verify(task, answer(task, control)).passed
        assert "AssertionError" in verdict.details["first_failure"]
        assert env.verify(task, env.reference(task, random.Random(0))).passed  # nothing broken for the next
    finally:
        env.close()


@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "per-execution"])
def test_forged_reports_and_kills_from_the_candidate_change_nothing(tmp_path, zygote):
    env = secret_env(tmp_path, zygote)
    [task] = env.all_tasks
    try:
        verdict = env.verify(task, answer(task, FORGE))
        assert not verdict.passed and verdict.infra_error is None
        assert verdict.details["tests_passed"] == 0
        assert env.verify(task, env.reference(task, random.Random(0))).passed
    finally:
        env.close()


CHEATS = {
    "an object equal to everything": "class Any:\n    def __eq__(self, other):\n        return True\n\n\ndef guess():\n    return Any()\n",
    "a str subclass equal to everything": "class S(str):\n    def __eq__(self, other):\n        return True\n\n\ndef guess():\n    return S('x')\n",
    "SystemExit": "def guess():\n    raise SystemExit(0)\n",
    "KeyboardInterrupt": "def guess():\n    raise KeyboardInterrupt\n",
    "an exit with the sandbox's old set-up-failure code": "import os\n\n\ndef guess():\n    os._exit(70)\n",
    "an exit at load": "import os\nos._exit(72)\n",
    "prints that look like answers": 'print(\'{"i": 1, "value": "x"}\')\n\n\ndef guess():\n    print(\'{"i": 1, "value": "x"}\')\n    return "wrong"\n',
    "a swallowed time limit": "import signal\n\n\ndef guess():\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass\n",
}


@pytest.mark.parametrize("cheat", list(CHEATS))
def test_cheats_fail_and_are_never_infra_errors(tmp_path, cheat):
    env = secret_env(tmp_path, zygote=True)
    env.options.per_call_s = 1.0
    [task] = env.all_tasks
    try:
        verdict = env.verify(task, answer(task, CHEATS[cheat]))
        assert not verdict.passed and verdict.reward == 0.0
        assert verdict.infra_error is None, verdict.infra_error
    finally:
        env.close()


def test_a_literal_test_program_exiting_with_a_set_up_failure_code_is_a_failure_not_an_infra_error(tmp_path):
    record = {
        "task_id": "lit/0",
        "prompt": "def one() -> int:\n    pass\n",
        "canonical_solution": "    return 1\n",
        "test": "def check(candidate):\n    assert candidate() == 1\n",
        "entry_point": "one",
    }
    env = PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, [record])))
    [task] = env.all_tasks
    assert "calls" in task.hidden  # the literal path
    try:
        for code in ("import os\nos._exit(70)\n", "import os\n\n\ndef one():\n    os._exit(71)\n"):
            verdict = env.verify(task, answer(task, code))
            assert not verdict.passed and verdict.infra_error is None
    finally:
        env.close()


def test_the_tasks_own_broken_test_is_an_infra_error_never_a_zero(tmp_path):
    record = {
        "task_id": "broken/0",
        "prompt": "def one() -> int:\n    pass\n",
        "test": "import numpy_that_is_not_there\n\n\ndef check(candidate):\n    for _ in range(1):\n        assert candidate() == 1\n",
        "entry_point": "one",
    }
    env = PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, [record])))
    [task] = env.all_tasks
    try:
        verdict = env.verify(task, answer(task, "def one():\n    return 1\n"))
        assert (
            verdict.infra_error
            and "broken/0" in verdict.infra_error
            and "numpy_that_is_not_there" in verdict.infra_error
        )
    finally:
        env.close()


@pytest.mark.parametrize(
    "record, message",
    [
        (
            {"test": "def check(candidate):\n    for x in [1]\n        assert candidate(x)\n"},
            "bad/1: the test cannot be parsed \\(line 2",
        ),
        ({"test": "def test_it():\n    assert True\n"}, "bad/1: the test has no `def check"),
    ],
)
def test_a_test_that_cannot_be_parsed_is_one_error_naming_the_task(tmp_path, record, message):
    base = {"task_id": "bad/1", "prompt": "def f(x):\n    pass\n", "entry_point": "f"}
    with pytest.raises(WarmstartError, match=message):
        PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, [{**base, **record}])))


def test_mbpp_records_missing_a_field_or_calling_nothing_they_define_are_refused(tmp_path):
    base = {
        "task_id": 7,
        "text": "Add.",
        "code": "def add(a, b):\n    return a + b\n",
        "test_list": ["assert add(1, 2) == 3"],
    }
    for change, message in (
        ({"code": None}, "task 7: missing code"),
        ({"test_list": []}, "task 7: test_list is empty"),
        ({"test_list": ["assert plus(1, 2) == 3"]}, "task 7: the tests call none of the functions"),
        ({"test_setup_code": "import ("}, "task 7: the test_setup_code cannot be parsed"),
    ):
        record = {k: v for k, v in {**base, **change}.items() if v is not None}
        with pytest.raises(WarmstartError, match=message):
            PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, [record])))


def test_alternating_proxied_and_literal_jobs_leave_nothing_behind_in_the_zygote(tmp_path):
    """The zygote keeps a candidate process waiting after a proxied job; a literal job next must retire
    it, or each switch would leave processes behind until the sandbox's process limit stops the zygote."""
    records = [
        {
            "task_id": "alt/proxied",
            "prompt": "def one() -> int:\n    pass\n",
            "canonical_solution": "    return 1\n",
            "test": "def check(candidate):\n    for _ in range(2):\n        assert candidate() == 1\n",
            "entry_point": "one",
        },
        {
            "task_id": "alt/literal",
            "prompt": "def one() -> int:\n    pass\n",
            "canonical_solution": "    return 1\n",
            "test": "def check(candidate):\n    assert candidate() == 1\n",
            "entry_point": "one",
        },
    ]
    env = PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, records)))
    proxied, literal = env.all_tasks
    assert proxied.hidden["mode"] == "proxy" and "calls" in literal.hidden
    try:
        for _ in range(60):  # more switches than the zygote's spare processes (8) could absorb
            for task in (proxied, literal):
                verdict = env.verify(task, env.reference(task, random.Random(0)))
                assert verdict.passed, (task.id, verdict)
    finally:
        env.close()


# A literal job's program runs in a fork of the zygote (no exec): it scans its own memory, freed memory
# included, for an earlier proxied job's test and an earlier literal job's program.
HEAP_SCAN = r"""
import ctypes, re


def scan(pattern):
    found = set()
    for line in open("/proc/self/maps"):
        parts = line.split()
        start, end = (int(x, 16) for x in parts[0].split("-"))
        named = len(parts) > 5 and parts[5] != "[heap]"
        if not parts[1].startswith("r") or named or end - start > 256 << 20:
            continue
        found |= {m.decode() for m in re.findall(pattern, ctypes.string_at(start, end - start))}
    return found


def snoop(control):
    earlier = scan(rb"warmstart-" + rb"secret-[0-9a-f]{6}") | scan(rb"EARLIER-" + rb"PROGRAM-[0-9]{4}")
    return sorted(earlier), bool(scan(re.escape(control.encode())))
"""


def test_a_literal_job_finds_nothing_of_earlier_jobs_in_the_zygotes_memory(tmp_path):
    """It had found an earlier proxied job's test (expected values included) and an earlier sample's program
    in the zygote's freed memory: the zygote now never parses a job's spec and zeroes it, and its output,
    once the job is done."""
    records = [
        {
            "task_id": "secret/0",
            "prompt": PROMPT,
            "canonical_solution": f"    return {SECRET!r}\n",
            "test": TEST,
            "entry_point": "guess",
        },
        {
            "task_id": "earlier/literal",
            "prompt": "def one() -> str:\n    pass\n",
            "canonical_solution": "    return 'EARLIER-PROGRAM-1234'\n",
            "test": "def check(candidate):\n    assert candidate() == 'EARLIER-PROGRAM-1234'\n",
            "entry_point": "one",
        },
        {
            "task_id": "snoop/literal",
            "prompt": "def snoop(control: str):\n    pass\n",
            "canonical_solution": "    return [], True\n",
            # The control: the job's own call argument is found (the scan works); nothing earlier is.
            "test": "def check(candidate):\n    assert candidate('control-marker-7731') == ([], True)\n",
            "entry_point": "snoop",
        },
    ]
    env = PythonEnv(PythonOptions(tasks_file=write_tasks(tmp_path, records), per_call_s=20, wall_s=60))
    secret, earlier, snoop = env.all_tasks
    assert secret.hidden["mode"] == "proxy" and "calls" in earlier.hidden and "calls" in snoop.hidden
    try:
        for task in (secret, earlier):
            assert env.verify(task, env.reference(task, random.Random(0))).passed
        verdict = env.verify(snoop, answer(snoop, HEAP_SCAN))
    finally:
        env.close()
    assert verdict.passed, verdict.details
