"""verification.Verifier: one set of worker processes (and one sandboxed zygote per worker) for every
batch of a stage, the same verdicts as in-process, in order, and nothing left running once it is closed
— after an exception or Ctrl-C in its with-block, a worker killed from outside, or the parent killed, too.

The test environments are module-level classes: the workers unpickle them by importing this module."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from warmstart.envs.python import PythonEnv
from warmstart.envs.verification import Verifier, split_in_order, verify_all, verify_in_order
from warmstart.errors import WarmstartError
from warmstart.types import Message, Provenance, Task, Trajectory, Verdict

needs_sandbox = pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="the sandbox runs /usr/bin/python3")


class PidEnv:
    """Reward = the number in the reply; the verdict names the process that verified it."""

    name = "pid"
    tools: tuple[dict, ...] = ()
    verify_workers = 2

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        return Verdict(reward=float(trajectory.messages[-1].content), passed=True, details={"pid": os.getpid()})


class KillsItsWorkerEnv(PidEnv):
    """Its verification kills the process it runs in (as the OOM killer would): once, or every time."""

    def __init__(self, flag: Path | None = None):
        self.flag = flag  # None: every time; else only while this file does not exist
        self.parent = os.getpid()

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        if os.getpid() != self.parent and (self.flag is None or not self.flag.exists()):
            if self.flag is not None:
                self.flag.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().verify(task, trajectory)


class RaisesEnv(PidEnv):
    """Its verification raises on the reply "3", as a bug in an environment would."""

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        if trajectory.messages[-1].content == "3":
            raise ValueError("a bug in verify")
        return super().verify(task, trajectory)


class HangsEnv(PidEnv):
    """Its verification of the reply "2" never returns, as a plugin's `verify` waiting on a dead server would."""

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        if trajectory.messages[-1].content == "2":
            time.sleep(3600)
        return super().verify(task, trajectory)


class FailsToLoadEnv(PidEnv):
    """An environment the workers cannot unpickle (as a plugin whose module only the parent can import)."""

    def __init__(self):
        self.parent = os.getpid()

    def __setstate__(self, state: dict) -> None:
        if os.getpid() != state["parent"]:
            raise ImportError("No module named 'user_checker'")
        self.__dict__.update(state)


class PidPythonEnv(PythonEnv):
    """The python environment, with each verdict naming the process (the worker) that gave it."""

    verify_workers = 2  # as on a two-core machine, wherever the tests run: the timings below assume it

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        verdict = super().verify(task, trajectory)
        verdict.details["pid"] = os.getpid()
        return verdict


TASK = Task(id="pid/0", env="pid", prompt=[Message(role="user", content="a number")], split="train")


def numbered(n: int) -> list[tuple[Task, Trajectory]]:
    return [(TASK, reply(TASK, str(i))) for i in range(n)]


def reply(task: Task, text: str) -> Trajectory:
    return Trajectory(
        task_id=task.id,
        policy="t",
        messages=[*task.prompt, Message(role="assistant", content=text)],
        provenance=Provenance(provider="t", model="t", created=0),
    )


def python_pairs(env: PythonEnv, count: int, sleep_s: float = 0.0) -> list[tuple[Task, Trajectory]]:
    """Reference solutions (pass) alternating with broken ones (fail), over the shipped tasks."""
    pairs = []
    for i in range(count):
        task = env.all_tasks[i % len(env.all_tasks)]
        solution = (
            env.reference(task, random.Random(0)).messages[-1].content.removeprefix("```python\n").removesuffix("```")
        )
        program = solution if i % 2 == 0 else solution + "\nraise SystemExit(3)\n"
        pairs.append((task, reply(task, f"```python\nimport time\ntime.sleep({sleep_s})\n{program}```")))
    return pairs


def comparable(verdict: Verdict) -> tuple:
    details = {k: v for k, v in verdict.details.items() if k not in ("seconds", "pid")}  # timings and pids differ
    return verdict.reward, verdict.passed, verdict.infra_error, details


def descendants() -> dict[int, str]:
    """Every process below this one (zombies included: a zombie is a child not yet reaped), pid -> name."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = dict(
                    line.split(":", 1) for line in Path(f"/proc/{entry}/status").read_text().splitlines() if ":" in line
                )
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents[int(entry)] = (int(fields["PPid"]), fields["Name"].strip())
    found, frontier = {}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, name) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = name
                frontier.append(pid)
    return found


def assert_nothing_left_but(before: dict[int, str]) -> None:
    """No process below this one beyond `before` (waiting a moment for the kernel to tear namespaces down)."""
    deadline = time.monotonic() + 5.0
    while (extra := {p: n for p, n in descendants().items() if p not in before}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not extra, f"left running: {extra}"


@pytest.fixture(scope="module", autouse=True)
def forkserver_started():
    """multiprocessing's forkserver and resource tracker start with the first workers and stay for the
    interpreter's life, by design: started here, they are part of every test's `before`."""
    verify_all(PidEnv(), numbered(2))


@pytest.fixture(scope="module")
def python_env() -> PythonEnv:
    return PidPythonEnv()


def test_split_in_order_gives_the_pairs_back_in_at_most_that_many_chunks():
    pairs = numbered(10)
    for at_most in (1, 3, 4, 10, 50):
        chunks = split_in_order(pairs, at_most)
        assert len(chunks) <= at_most and [p for c in chunks for p in c] == pairs
    assert split_in_order([], 4) == []


def test_one_set_of_workers_serves_every_batch_of_a_verifier_in_order():
    env = PidEnv()
    before = descendants()
    with Verifier(env) as verifier:
        batches = [verifier.verify_all(numbered(n)) for n in (9, 9, 1, 17, 0)]
    for verdicts, n in zip(batches, (9, 9, 1, 17, 0)):
        assert [v.reward for v in verdicts] == list(range(n))  # in order
    pids = {v.details["pid"] for verdicts in batches for v in verdicts}
    # Workers started per batch would be new each time; here there are verify_workers of them for all
    # batches (the single pair went to the running workers, not to this process).
    assert os.getpid() not in pids and 1 <= len(pids) <= env.verify_workers
    assert_nothing_left_but(before)


def test_without_a_pool_a_verifier_verifies_in_this_process():
    env = PidEnv()
    env.verify_workers = 1
    with Verifier(env) as verifier:
        verdicts = verifier.verify_all(numbered(5))
    assert [v.reward for v in verdicts] == list(range(5)) and {v.details["pid"] for v in verdicts} == {os.getpid()}
    [single] = verify_all(PidEnv(), numbered(1))  # one pair: not worth a pool
    assert single.details["pid"] == os.getpid()


@needs_sandbox
def test_sandboxed_verdicts_through_one_verifier_equal_the_in_process_ones_and_nothing_leaks(python_env):
    batches = [python_pairs(python_env, n) for n in (10, 1, 17, 6)]
    expected = [[comparable(v) for v in verify_in_order(python_env, batch)] for batch in batches]
    assert any(e[1] for e in expected[0]) and not all(e[1] for e in expected[0])  # some pass, some fail
    before = descendants()  # after the in-process runs: this process's own zygote is in it
    with Verifier(python_env) as verifier:
        got = [verifier.verify_all(batch) for batch in batches]
        during = set(descendants()) - set(before)
    assert [[comparable(v) for v in verdicts] for verdicts in got] == expected
    workers = {v.details["pid"] for verdicts in got for v in verdicts}
    assert os.getpid() not in workers and len(workers) <= python_env.verify_workers
    assert workers <= during  # the workers (and their zygotes) were ours, and are gone now:
    assert_nothing_left_but(before)


@needs_sandbox
def test_an_exception_in_the_block_stops_the_workers_and_their_zygotes(python_env):
    before = descendants()
    with pytest.raises(RuntimeError, match="a training step failed"):
        with Verifier(python_env) as verifier:
            assert all(v.passed for v in verifier.verify_all(python_pairs(python_env, 8))[::2])
            raise RuntimeError("a training step failed")
    assert_nothing_left_but(before)


@pytest.fixture()
def ctrl_c_raises():
    """Ctrl-C raising KeyboardInterrupt here, as in a terminal: a process started in the background of a
    non-interactive shell inherits SIGINT ignored, and Python then leaves it ignored."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


@needs_sandbox
def test_ctrl_c_during_a_batch_stops_the_workers_and_their_zygotes(python_env, ctrl_c_raises):
    """Ctrl-C reaches the whole process group: this process and the workers alike."""
    before = descendants()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with Verifier(python_env) as verifier:
            workers = {v.details["pid"] for v in verifier.verify_all(python_pairs(python_env, 8))}
            ctrl_c = threading.Timer(0.5, lambda: [os.kill(pid, signal.SIGINT) for pid in (os.getpid(), *workers)])
            ctrl_c.start()
            verifier.verify_all(python_pairs(python_env, 60, sleep_s=0.1))  # ~3 s on two workers
    ctrl_c.join()
    assert_nothing_left_but(before)
    assert time.monotonic() - started < 30  # the chunks not started were dropped


PARENT = """
import json, sys, time
sys.path.insert(0, {tests!r})
from test_verification import PidPythonEnv, descendants, python_pairs
from warmstart.envs.verification import Verifier

env = PidPythonEnv()
verifier = Verifier(env)  # never closed: this process is killed
verdicts = verifier.verify_all(python_pairs(env, 8))
print(json.dumps({{"workers": sorted({{v.details["pid"] for v in verdicts}}), "all": sorted(descendants())}}), flush=True)
time.sleep(600)
"""


def running(pid: int) -> bool:
    """Alive (a zombie is dead: it only waits for its parent to read its exit status)."""
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state.split()[1] not in ("Z", "X")


@needs_sandbox
def test_workers_and_their_zygotes_exit_when_the_parent_is_killed_hard():
    """SIGKILL (the OOM killer): no Verifier.close, no exit hook. Each worker reads the end of its pipe."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT.format(tests=str(Path(__file__).parent))], stdout=subprocess.PIPE, text=True
    )
    try:
        started = json.loads(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
    assert started["workers"] and set(started["workers"]) <= set(started["all"])
    deadline = time.monotonic() + 10.0
    while (left := [pid for pid in started["all"] if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running after the parent was killed: {left}"


def test_an_exception_in_a_worker_is_raised_here_and_the_verifier_goes_on():
    with Verifier(RaisesEnv()) as verifier:
        with pytest.raises(ValueError, match="a bug in verify"):
            verifier.verify_all(numbered(8))
        # The answers of that batch's other chunks, unread, are not taken for this one's.
        assert [v.reward for v in verifier.verify_all(numbered(3))] == [0, 1, 2]


def test_a_worker_killed_from_outside_is_replaced_and_the_batch_verified_again(tmp_path):
    before = descendants()
    with Verifier(KillsItsWorkerEnv(flag=tmp_path / "killed-once")) as verifier:
        verdicts = verifier.verify_all(numbered(6))
        assert [v.reward for v in verdicts] == list(range(6))
        assert [v.reward for v in verifier.verify_all(numbered(3))] == [0, 1, 2]  # and it goes on
    assert (tmp_path / "killed-once").exists()
    assert_nothing_left_but(before)


def test_a_worker_that_dies_on_every_try_is_an_error_not_a_hang():
    def verify_with_a_verifier():
        with Verifier(KillsItsWorkerEnv()) as verifier:
            return verifier.verify_all(numbered(4))

    before = descendants()
    with ThreadPoolExecutor(1) as thread:  # a hang fails the test instead of stalling the suite
        with pytest.raises(WarmstartError, match="twice on the same batch"):
            thread.submit(verify_with_a_verifier).result(timeout=120)
    assert_nothing_left_but(before)


def test_a_verification_past_the_timeout_is_an_infra_error_and_its_worker_is_replaced():
    before = descendants()
    started = time.monotonic()
    with Verifier(HangsEnv(), timeout=1.0) as verifier:
        verdicts = verifier.verify_all(numbered(8))
        assert [v.reward for v in verdicts] == [0, 1, 0, 3, 4, 5, 6, 7]  # the rest of the stuck chunk too, in order
        assert [v.infra_error for v in verdicts].count(None) == 7
        assert verdicts[2].infra_error == (
            "pid.verify did not return within 1 s (env.verify_timeout); its worker process was stopped"
        )
        assert [v.reward for v in verifier.verify_all(numbered(2))] == [0, 1]  # and it goes on
    assert time.monotonic() - started < 30
    assert_nothing_left_but(before)


def test_without_a_timeout_the_workers_wait_as_long_as_verification_takes():
    with Verifier(PidEnv(), timeout=None) as verifier:
        assert [v.reward for v in verifier.verify_all(numbered(5))] == [0, 1, 2, 3, 4]


def test_ctrl_c_during_a_verification_that_never_returns_stops_within_seconds(ctrl_c_raises):
    """A stopping stage waits STOP_GRACE_S for a busy worker, not the whole timeout (it had held Ctrl-C
    for as long as verification took: forever, before the timeout)."""
    before = descendants()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with Verifier(HangsEnv(), timeout=600.0) as verifier:
            threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            verifier.verify_all(numbered(4))
    assert time.monotonic() - started < 30
    assert_nothing_left_but(before)


def test_an_environment_a_worker_cannot_load_is_one_error_saying_why():
    """It had been "verification worker ... died (exit code 1), twice ... (killed from outside, or out of
    memory)", the worker's traceback on stderr."""
    before = descendants()
    with Verifier(FailsToLoadEnv()) as verifier:
        with pytest.raises(WarmstartError) as error:
            verifier.verify_all(numbered(4))
    assert str(error.value) == (
        "a verification worker could not load the environment: ImportError: No module named 'user_checker'"
    )
    assert_nothing_left_but(before)
