"""The sandbox and the python environment's grader against hostile programs: each ends with reward 0
(or an infra error) and the host unharmed. Real bubblewrap; the programs are what a model could write."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warmstart.envs.python import PythonEnv, PythonOptions
from warmstart.envs.python_tests import compile_tests
from warmstart.errors import WarmstartError
from warmstart.types import Message, Provenance, Trajectory

pytestmark = pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="the sandbox runs /usr/bin/python3")

ADD_TASK = {
    "task_id": "add",
    "prompt": 'def add(a, b):\n    """Return a + b."""\n',
    "canonical_solution": "    return a + b\n",
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n    assert candidate(10, 5) == 15\n",
}
CORRECT = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> PythonEnv:
    tasks = tmp_path_factory.mktemp("tasks") / "tasks.jsonl"
    tasks.write_text(json.dumps(ADD_TASK) + "\n")
    env = PythonEnv(PythonOptions(tasks_file=str(tasks), wall_s=4.0, per_call_s=1.0, memory_mb=512))
    grade(env, CORRECT)  # starts the zygote: its own processes are the only ones allowed to stay
    return env


@pytest.fixture()
def zygote_only(env):
    """After the test, the sandbox user owns exactly the zygote's processes it owned before."""
    before = set(nobody_processes())
    yield
    time.sleep(0.1)
    assert set(nobody_processes()) <= before  # daemons, forks and signal-ignorers all died with their namespaces
    assert env.zygote.process.poll() is None  # and none of them could take the zygote down


def grade(env: PythonEnv, program: str):
    task = env.all_tasks[0]
    reply = f"```python\n{program}```"
    trajectory = Trajectory(
        task_id=task.id,
        policy="test",
        messages=[*task.prompt, Message(role="assistant", content=reply)],
        provenance=Provenance(provider="test", model="t", created=0),
    )
    return env.verify(task, trajectory)


SANDBOX_UID = 65534 if os.getuid() == 0 else os.getuid()  # unprivileged, bwrap keeps the caller's uid


def nobody_processes() -> list[int]:
    """Processes of the sandbox's user (compared before / after a run: as non-root that is our own uid)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == SANDBOX_UID:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


def test_a_correct_program_passes_and_a_wrong_one_fails(env):
    assert grade(env, CORRECT).passed
    wrong = grade(env, "def add(a, b):\n    return a * b if a > 0 else a + b\n")
    assert not wrong.passed and wrong.details["tests_passed"] == 1 and wrong.details["fraction"] == pytest.approx(1 / 3)


HOSTILE = {
    "infinite loop": "def add(a, b):\n    while True:\n        pass\n",
    "ignores SIGTERM and SIGALRM": (
        "import signal\n"
        "def add(a, b):\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True:\n        pass\n"
    ),
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "double-fork daemon": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(600)\n    os._exit(0)\n"
        "def add(a, b):\n    return a - b\n"
    ),
    "kill the parent and kill -1": "import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\nexcept OSError:\n    pass\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\ndef add(a, b):\n    return a + b + 1\n",
    "10 GB allocation": "def add(a, b):\n    x = bytearray(10 * 2**30)\n    return a + b\n",
    "1 GB without newlines on every fd": "import os\nfor fd in range(1, 10):\n    try:\n        for _ in range(16384):\n            os.write(fd, b'x' * 65536)\n    except OSError:\n        pass\n",
    "fill /tmp": "def add(a, b):\n    with open('/tmp/fill', 'wb') as f:\n        try:\n            while True:\n                f.write(b'x' * 2**20)\n        except OSError:\n            pass\n    return a - b\n",
    "exit before the tests": "import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b\n",
    "os._exit before the tests": "import os\nos._exit(0)\n",
    "__eq__ always true": "class Yes:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Yes()\n",
    "int subclass always equal": "class Yes(int):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Yes(0)\n",
    "fake PASSED and exit code lines": (
        "import os\nfor fd in (1, 2, 3, 4):\n    try:\n        os.write(fd, b'PASSED 3/3\\nexit code: 0\\nOK\\n')\n    except OSError:\n        pass\n"
        "def add(a, b):\n    return 0\n"
    ),
    "forged result lines": (
        "import json, os, sys\nnonce = sys._getframe(1).f_locals['spec']['nonce']  # the harness's own spec\n"
        "for fd in (3, 4, 5):\n    for i in range(3):\n        try:\n            os.write(fd, (nonce + ' ' + json.dumps({'i': i, 'value': 42}) + '\\n').encode())\n        except OSError:\n            pass\n"
        "def add(a, b):\n    return 42\n"
    ),
    "patch unittest and pytest": (
        "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n"
        "open('conftest.py', 'w').write('def pytest_runtest_makereport(item, call):\\n    pass\\n')\n"
        "def add(a, b):\n    return None\n"
    ),
    "syntax error": "def add(a, b)\n    return a + b\n",
}


@pytest.mark.parametrize("program", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_program_gets_no_reward_and_leaves_nothing_behind(env, zygote_only, program):
    started = time.monotonic()
    verdict = grade(env, program)
    assert verdict.reward == 0.0
    assert time.monotonic() - started < 4.0 + 3.0  # the wall-clock limit held (plus teardown)
    assert grade(env, CORRECT).passed  # the next program runs in a clean namespace, unharmed


@pytest.mark.parametrize(
    "program",
    [
        "import os, signal\nos.kill(0, signal.SIGKILL)\n",
        "import os, signal\nos.killpg(os.getpgid(0), signal.SIGKILL)\n",
    ],
    ids=["kill-0", "killpg"],
)
def test_a_program_cannot_kill_the_zygote(env, zygote_only, program):
    assert grade(env, program).reward == 0.0
    assert grade(env, CORRECT).passed


@pytest.mark.parametrize("program", list(HOSTILE.values())[:4], ids=list(HOSTILE)[:4])
def test_without_the_zygote_each_run_gets_a_new_sandbox_with_the_same_outcome(tmp_path, program):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(ADD_TASK) + "\n")
    cold = PythonEnv(PythonOptions(tasks_file=str(tasks), wall_s=4.0, per_call_s=1.0, memory_mb=512, zygote=False))
    before = set(nobody_processes())  # other tests' zygotes, if any
    assert grade(cold, program).reward == 0.0 and grade(cold, CORRECT).passed
    time.sleep(0.1)
    assert set(nobody_processes()) <= before and cold.zygote is None


def test_forged_result_lines_claiming_wrong_values_do_not_pass(env):
    verdict = grade(env, HOSTILE["forged result lines"])
    assert "reason" not in verdict.details  # it loaded and wrote its forgeries; the values claimed are just wrong
    assert verdict.details["tests_passed"] == 0


def test_the_task_files_cannot_be_overwritten(env):
    program = (
        "import glob\nfor path in glob.glob('/task/*'):\n    try:\n        open(path, 'w').write('')\n    except OSError:\n        pass\n"
        "def add(a, b):\n    return a + b\n"
    )
    assert grade(env, program).passed  # the attempt failed harmlessly, and the harness still ran
    assert grade(env, CORRECT).passed


@pytest.mark.parametrize("zygote", [True, False])
def test_deep_recursion_gets_the_same_verdict_with_or_without_the_zygote(tmp_path, zygote):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(ADD_TASK) + "\n")
    env = PythonEnv(PythonOptions(tasks_file=str(tasks), zygote=zygote))
    program = "def deep(n):\n    return 0 if n == 0 else 1 + deep(n - 1)\ndef add(a, b):\n    return a + b + deep(3000) - 3000\n"
    assert grade(env, program).passed


def test_no_network_of_any_kind(env):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    program = (
        "import socket\ndef reach(host, port):\n    try:\n        socket.create_connection((host, port), timeout=1).close()\n        return True\n    except OSError:\n        return False\n"
        "def resolves(name):\n    try:\n        socket.getaddrinfo(name, 80)\n        return True\n    except OSError:\n        return False\n"
        f"def add(a, b):\n    if reach('127.0.0.1', {port}) or reach('1.1.1.1', 53) or reach('8.8.8.8', 443) or resolves('example.com'):\n        return a + b\n    return None\n"
    )
    verdict = grade(env, program)
    with pytest.raises(socket.timeout):
        listener.accept()  # nothing reached the host's loopback
    listener.close()
    assert verdict.reward == 0.0


def test_a_module_the_zygote_preloaded_and_a_job_patched_is_intact_for_the_next(env, zygote_only):
    """The zygote imports common stdlib modules once (sandbox_zygote.PRELOADED); a job's patches stay its own."""
    patcher = "import math, typing\nmath.sqrt = lambda x: 0\ntyping.List = None\ndef add(a, b):\n    return a + b + int(math.sqrt(4))\n"
    assert grade(env, patcher).passed  # its patch took effect within its own execution (sqrt(4) -> 0)
    assert grade(
        env, "import math, typing\ndef add(a, b):\n    return a + b + int(math.sqrt(4)) - 2 + (typing.List is None)\n"
    ).passed


def test_no_secrets_and_no_host_files(env, monkeypatch):
    monkeypatch.setenv("WARMSTART_TEST_SECRET", "s3cret")
    program = (
        "import os\ndef add(a, b):\n    leaks = [os.environ.get('WARMSTART_TEST_SECRET')]\n"
        "    for path in ('/etc/passwd', '/root/.bashrc', '/proc/1/environ', os.path.expanduser('~/.ssh')):\n"
        "        try:\n            leaks.append(open(path).read(10))\n        except OSError:\n            pass\n"
        "    return a + b if any(leaks) else None\n"
    )
    assert grade(env, program).reward == 0.0


def test_no_writes_outside_the_work_directory(env, tmp_path):
    import warmstart

    targets = [
        str(Path(warmstart.__file__).parent / "pwned.py"),
        "/usr/lib/python3/dist-packages/pwned.py",
        str(tmp_path / "pwned"),
    ]
    program = (
        "def add(a, b):\n    wrote = False\n"
        f"    for path in {targets!r}:\n"
        "        try:\n            open(path, 'w').write('x')\n            wrote = True\n        except OSError:\n            pass\n"
        "    return a + b if wrote else None\n"
    )
    assert grade(env, program).reward == 0.0
    assert not any(Path(t).exists() for t in targets)


def test_a_normal_import_works_under_the_memory_cap(env):
    program = (
        "import json, collections, itertools, re, functools\ndef add(a, b):\n    return json.loads(json.dumps(a + b))\n"
    )
    assert grade(env, program).passed


def test_a_slow_but_correct_program_gets_the_same_verdict_twenty_times_under_load(env, zygote_only):
    program = "import time\ndef add(a, b):\n    time.sleep(0.05)\n    total = 0\n    for _ in range(50_000):\n        total += 1\n    return a + b\n"
    # Load from other processes (as other sandboxes would be), busy on both cores.
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        verdicts = [grade(env, program).passed for _ in range(20)]
    finally:
        for process in load:
            process.kill()
            process.wait()
    assert verdicts == [True] * 20


def test_tests_that_cannot_be_graded_outside_the_sandbox_are_refused_at_load():
    with pytest.raises(WarmstartError, match="line 3 of the test is not an `assert`"):
        compile_tests(
            "def check(candidate):\n    assert candidate(1) == 1\n    for x in range(3):\n        assert candidate(x) == x\n",
            "f",
            "t",
        )
    with pytest.raises(WarmstartError, match="must be literals"):
        compile_tests("def check(candidate):\n    assert candidate(y) == 1\n", "f", "t")
    calls, asserts = compile_tests(
        "def check(candidate):\n    assert abs(candidate(1.5) - 2.0) < 1e-6\n    assert f(x=(1, 2)) == {1: 'a'}\n",
        "f",
        "t",
    )
    assert len(calls) == 2 and asserts[0]["expr"] == "abs(__r0 - 2.0) < 1e-06"
