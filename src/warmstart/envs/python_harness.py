"""The harness that runs a candidate program inside the sandbox (standard library only).

It is copied into the sandbox with the program and the hidden tests' *call arguments* (never their
expected values), loads the program, calls the entry point once per test call and writes each
result as plain data: `<nonce> {"i": index, "value": ...}` or `{"i": index, "raised": "TypeError"}`.
The parent decodes the values and evaluates the tests' assertions itself (python.py).

Why that cannot be forged: the program shares this process and can write anything anywhere it likes,
including lines that look like results. But a result is only a claimed return value, judged outside
against expectations that never enter the sandbox; claiming the right value means computing it.
Printing PASSED, exiting with 0, exiting early, patching unittest or pytest, or returning an object
whose `__eq__` is always true gain nothing: there is no exit code or report to fake, a missing result
is a failure, and only exact plain types (None, bool, int, float, str, list, tuple, dict, set) can be
encoded at all.

The same encode / decode functions are imported by the parent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

PLAIN = (type(None), bool, int, str)


def encode(value, depth: int = 0):
    if depth > 50:
        raise TypeError("value nested too deeply")
    kind = type(value)
    if kind in PLAIN:
        return value
    if kind is float:
        return {"float": repr(value)}
    if kind is complex:
        return {"complex": [repr(value.real), repr(value.imag)]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind is tuple:
        return {"tuple": [encode(v, depth + 1) for v in value]}
    if kind in (set, frozenset):
        return {kind.__name__: [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    raise TypeError(f"cannot return a {kind.__name__}")


def decode(data):
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict):
        ((tag, inner),) = data.items()
        if tag == "float":
            return float(inner)
        if tag == "complex":
            return complex(float(inner[0]), float(inner[1]))
        if tag == "bytes":
            return bytes.fromhex(inner)
        if tag == "tuple":
            return tuple(decode(v) for v in inner)
        if tag == "set":
            return {decode(v) for v in inner}
        if tag == "frozenset":
            return frozenset(decode(v) for v in inner)
        if tag == "dict":
            return {decode(k): decode(v) for k, v in inner}
        raise ValueError(f"unknown tag {tag!r}")
    return data


def decode_claimed(data):
    """`decode` of what a program may have written on the channel itself (it shares the harness's process):
    any malformed structure ({"complex": []}, a dict of two keys, nesting past the recursion limit) is a
    ValueError, never another exception that would end the grading of a whole batch."""
    try:
        return decode(data)
    except Exception as exc:  # noqa: BLE001 - every shape of forged data is the same refusal
        raise ValueError(f"not plain data: {type(exc).__name__}") from None


class CallTimeout(BaseException):
    pass


def on_alarm(signum, frame):
    raise CallTimeout()


def main() -> None:
    # The spec's path comes as an argument: outside bubblewrap (trusted code) /task is not a mount.
    with open(sys.argv[1] if len(sys.argv) > 1 else "/task/input.json") as f:
        run_spec(json.load(f))


def run_spec(spec: dict) -> None:
    sys.setrecursionlimit(10_000)  # here, not in main: the zygote calls run_spec directly
    out = os.fdopen(os.dup(1), "w")  # our channel out; the program's own prints go nowhere
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)

    def emit(record: dict) -> None:
        out.write(f"{spec['nonce']} {json.dumps(record)}\n")
        out.flush()

    # Bound before the program runs: patching `time` or `signal` at its import does not reach these.
    limit_s, clock, set_timer, on_signal = spec["per_call_s"], time.monotonic, signal.setitimer, signal.signal
    namespace = {"__name__": "solution"}
    try:
        exec(compile(spec["program"], "solution.py", "exec"), namespace)
        function = namespace[spec["entry_point"]] if spec["entry_point"] else None  # None: each call names its function
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: nothing stops the harness
        emit({"load_error": f"{type(exc).__name__}: {exc}"[:500]})
        return
    on_signal(signal.SIGALRM, on_alarm)
    for index, call in enumerate(spec["calls"]):
        try:
            started = clock()
            set_timer(signal.ITIMER_REAL, limit_s)
            target = namespace[call["function"]] if "function" in call else function
            value = target(*decode(call["args"]), **{k: decode(v) for k, v in call["kwargs"].items()})
            set_timer(signal.ITIMER_REAL, 0)
            # The alarm is the program's to switch off (SIG_IGN, a cleared timer): a call past its limit
            # is a timeout whatever it returned.
            emit(
                {"i": index, "raised": CallTimeout.__name__}
                if clock() - started > limit_s
                else {"i": index, "value": encode(value)}
            )
        except BaseException as exc:
            set_timer(signal.ITIMER_REAL, 0)
            emit({"i": index, "raised": type(exc).__name__})


if __name__ == "__main__":
    main()
