"""Any `check(candidate)` test, run against a candidate that lives in another sandboxed process.

Two processes take part in one grading (standard library only; copied into the sandbox beside
python_harness.py):

- the *candidate server* (`serve`) is a fresh interpreter holding only the model's program: it reads a
  call per line (`{"i": n, "function": name, "args": ..., "kwargs": ...}` as plain data), runs it under a
  per-call timer and answers `{"i": n, "value": ...}` or `{"i": n, "raised": "ValueError", ...}`;
- the *test runner* (`run_check`) holds the task's trusted code: the prompt's helpers, the test source,
  the expected values and the report channel. Every name the test calls the candidate by is bound to a
  `Proxy` that sends the call across and decodes the answer.

Why the candidate cannot forge a pass: it shares nothing with the runner but the two pipes. It cannot
read the runner's frames, assertions or expected values (another process, in other namespaces, not
dumpable), nor write to its report channel (the fd is not in its process) — whoever starts the two
(zygote.py, or `run_pair` below for trusted code) makes sure of that. All it can send back is a claimed
value of plain types (decode() builds only None, bool, int, float, complex, str, bytes and containers of
them), so no `__eq__` that is always true; a malformed, late or missing answer fails that call.
"""

from __future__ import annotations

import builtins
import importlib
import json
import math
import os
import select
import signal
import sys

try:
    from .python_harness import CallTimeout, decode, decode_claimed, encode, on_alarm
except ImportError:  # a script inside the sandbox (-I leaves its own directory off sys.path)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from python_harness import CallTimeout, decode, decode_claimed, encode, on_alarm

MAX_REPLY_BYTES = 16 << 20  # one answer; past it the call fails
REPLY_GRACE_S = 1.0  # the runner waits per_call_s plus this for an answer


class CandidateError(Exception):
    """The candidate raised an exception that is not a built-in one (its name is the message)."""


class CandidateGone(BaseException):
    """The candidate's process ended, or answered something that is not an answer. A BaseException, as
    in a harness where the test dies with the program: `except Exception` in a test must not turn it into
    a pass; the channel is dead from then on."""


class CandidateTimeout(CandidateGone):
    """A call ran past its time (the candidate's own timer said so, or no answer came in time)."""


class Channel:
    """The runner's end of the two pipes; dead after a timeout or a broken answer (a late answer would
    otherwise be taken for the next call's)."""

    def __init__(self, to_candidate: int, from_candidate: int, per_call_s: float):
        self.out, self.inp, self.per_call_s = to_candidate, from_candidate, per_call_s
        self.buffer, self.sequence, self.dead = b"", 0, None

    def call(self, function: str, args: tuple, kwargs: dict):
        if self.dead:
            raise CandidateGone(self.dead)
        self.sequence += 1
        request = {"i": self.sequence, "function": function, "args": encode(list(args))}
        request["kwargs"] = {k: encode(v) for k, v in kwargs.items()}
        try:
            try:
                write_all(self.out, (json.dumps(request) + "\n").encode())
            except OSError:  # the reading end is gone
                raise CandidateGone("the program's process ended") from None
            reply = self.read_reply(self.sequence)
            if reply.get("timeout"):
                raise CandidateTimeout("the call ran past its time")
        except CandidateGone as exc:
            self.dead = f"an earlier call failed: {exc}"
            raise
        return answer(reply)

    def read_reply(self, sequence: int) -> dict:
        while True:
            reply = self.read_message(self.per_call_s + REPLY_GRACE_S)
            if reply.get("i") == sequence:
                return reply

    def read_message(self, wait_s: float) -> dict:
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.inp], [], [], wait_s)
            chunk = os.read(self.inp, 65536) if ready else None
            if chunk is None:
                raise CandidateTimeout("no answer in time")
            if not chunk:
                raise CandidateGone("the program's process ended")
            self.buffer += chunk
            if len(self.buffer) > MAX_REPLY_BYTES:
                raise CandidateGone("an answer too large")
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            raise CandidateGone("a malformed answer") from None
        if not isinstance(message, dict):
            raise CandidateGone("a malformed answer")
        return message


def write_all(fd: int, data) -> None:
    """All of `data` into a pipe: one write may take only part of it (a signal, a large call)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def answer(reply: dict):
    """The call's value, or the candidate's exception raised here: a built-in exception type by name
    (tests catch ValueError and the like), anything else as CandidateError."""
    if "value" in reply:
        try:
            return decode_claimed(reply["value"])
        except ValueError:
            raise CandidateError("an answer that is not plain data") from None
    name, message = str(reply.get("raised", "")), str(reply.get("message", ""))[:500]
    kind = getattr(builtins, name, None)
    # StopIteration raised inside a test's loop (`for got, want in zip(map(candidate, xs), expected)`) ends
    # the loop and the test passes: a candidate's is a RuntimeError here, as PEP 479 makes a generator's.
    if isinstance(kind, type) and issubclass(kind, (StopIteration, StopAsyncIteration)):
        raise RuntimeError(f"the candidate raised {name}: {message}")
    if isinstance(kind, type) and issubclass(kind, Exception):
        raise kind(message)
    raise CandidateError(f"{name}: {message}")


class Proxy:
    """Stands for one of the candidate's functions inside the test."""

    def __init__(self, channel: Channel, name: str):
        self.channel, self.__name__ = channel, name

    def __call__(self, *args, **kwargs):
        return self.channel.call(self.__name__, args, kwargs)


def run_check(spec: dict, channel: Channel, emit) -> None:
    """The test side. Emits {"load_error"} if the program did not load, {"test_error"} if the task's own
    code failed before any call (a broken task, not the candidate's doing), else {"unit": i, "passed"...}
    per unit (a HumanEval check, or one MBPP assert), then {"done": true}."""
    try:
        ready = channel.read_message(spec["load_s"])
    except CandidateGone as exc:
        emit({"load_error": f"the program's process gave no sign of life ({exc})"})
        return
    if "load_error" in ready:
        emit({"load_error": str(ready["load_error"])[:500]})
        return
    import random  # here, in the test's own process: imported by the zygote, every job would share its state

    random.seed(spec["seed"])  # tests that draw random inputs draw the same ones for every sample
    # `math` as a literal-call test's assertions have it where they are graded (python.py): a test sent here
    # for what it computes (python_tests.amplifying) keeps the names it could use there.
    namespace = {"__name__": "__check__", "math": math}
    try:
        for number, source in enumerate(spec["setup"]):
            exec(compile(source, f"task_setup_{number}.py", "exec"), namespace)
    except BaseException as exc:
        emit({"test_error": f"{type(exc).__name__}: {exc}"[:500]})
        return
    for name in spec["proxied"]:
        namespace[name] = Proxy(channel, name)
    for index, unit in enumerate(spec["units"]):
        emit({"unit": index, **run_unit(unit, namespace)})
    emit({"done": True})


def run_unit(source: str, namespace: dict) -> dict:
    try:
        exec(compile(source, "test.py", "exec"), namespace)
    except CandidateTimeout as exc:
        return {"passed": False, "error": f"time limit: {exc}"[:300], "timeout": True}
    except CandidateGone as exc:
        return {"passed": False, "error": str(exc)[:300]}
    except BaseException as exc:
        return {"passed": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"passed": True}


def serve(preload: list[str]) -> None:
    """The candidate side: stdin brings the program (the first line: {"program", "per_call_s"}), then the
    calls; stdout takes answers. Both move to private fds first, so the program's own prints go nowhere.
    It may start before its program is known (zygote.py keeps one waiting, `preload` imported)."""
    for module in preload:
        importlib.import_module(module)
    sys.setrecursionlimit(10_000)
    requests, replies = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)

    def send(record: dict) -> None:
        replies.write(json.dumps(record) + "\n")
        replies.flush()

    first = requests.readline()
    if not first:
        return
    job = json.loads(first)
    namespace = {"__name__": "solution"}
    try:
        exec(compile(job["program"], "solution.py", "exec"), namespace)
    except BaseException as exc:
        send({"load_error": f"{type(exc).__name__}: {exc}"[:500]})
        return
    send({"ready": True})
    signal.signal(signal.SIGALRM, on_alarm)
    for line in requests:
        send(serve_call(json.loads(line), namespace, job["per_call_s"]))


def serve_call(call: dict, namespace: dict, per_call_s: float) -> dict:
    try:
        signal.setitimer(signal.ITIMER_REAL, per_call_s)
        target = namespace[call["function"]]
        value = target(*decode(call["args"]), **{k: decode(v) for k, v in call["kwargs"].items()})
        signal.setitimer(signal.ITIMER_REAL, 0)
        return {"i": call["i"], "value": encode(value)}
    except CallTimeout:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return {"i": call["i"], "timeout": True}
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return {"i": call["i"], "raised": type(exc).__name__, "message": str(exc)[:500]}


def run_pair(spec: dict, python: list[str], here: str) -> None:
    """Both sides as plain subprocesses, for trusted code only (`unsafe_no_sandbox`); the sandbox's
    zygote does the same with each side in its own namespaces."""
    import subprocess  # only here: the candidate server starts faster without it

    server = subprocess.Popen(
        [*python, os.path.join(here, "python_proxy.py"), "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    server.stdin.write(program_line(spec))
    server.stdin.flush()
    out = os.fdopen(os.dup(1), "w")

    def emit(record: dict) -> None:
        out.write(f"{spec['nonce']} {json.dumps(record)}\n")
        out.flush()

    try:
        run_check(spec, Channel(server.stdin.fileno(), server.stdout.fileno(), spec["per_call_s"]), emit)
    finally:
        server.kill()
        server.wait()


def program_line(spec: dict) -> bytes:
    """What a waiting candidate server reads first."""
    return (json.dumps({"program": spec["program"], "per_call_s": spec["per_call_s"]}) + "\n").encode()


def main() -> None:
    if sys.argv[1] == "serve":
        serve([m for m in sys.argv[2:3] for m in m.split(",") if m])
    else:  # pair INPUT.json: trusted code only
        with open(sys.argv[2]) as f:
            spec = json.load(f)
        run_pair(
            spec,
            [sys.executable, "-I", *(["-S"] if sys.flags.no_site else [])],
            os.path.dirname(os.path.abspath(sys.argv[2])),
        )


if __name__ == "__main__":
    main()
