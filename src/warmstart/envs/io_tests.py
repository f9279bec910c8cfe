"""stdin/stdout tests (APPS / CodeContests / LiveCodeBench style) for the `python` environment.

A task's `hidden` holds `io_tests` (`[{"input": str, "output": str}, ...]`) and `float_tolerance`
(None: every token exact). The model's program runs once per test input, each run its own sandbox
execution (in the zygote by default: fresh namespaces per run) under the environment's limits, stdin
fed the input, stdout captured up to `OUTPUT_CAP` bytes. Outputs are compared token by token (split on
any whitespace, so trailing spaces, blank lines and line breaks do not matter, as Codeforces' default
checker); two numeric tokens are equal within `float_tolerance`, absolute or relative, when it is set.
Reward 1 only when every test passes; the fraction, the first failing test and why it failed are details.

Why a result cannot be forged: expected outputs never enter the sandbox; what comes back is only the
program's stdout, judged here. The program runs inside `python_harness.py` through `RUNNER` below, whose
one function the harness calls with the program's source and the test's input.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
from collections.abc import Callable

from ..errors import WarmstartError
from ..types import Verdict
from .python_harness import decode_claimed
from .sandbox.bubblewrap import Execution

OUTPUT_CAP = 512 << 10  # stdout bytes per run: base64 of it fits the sandbox's 1 MiB output channel
NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
PROMPT = (
    "Write a Python program that reads the input from standard input and prints the answer to standard "
    "output. Reply with the whole program in one ```python block.\n\n"
)
# Runs inside the sandbox (standard library only), loaded by python_harness.py as the "program"; the
# harness calls run_stdio once, and a per-call alarm (its CallTimeout) is the per-test time limit.
RUNNER = r"""
import atexit, base64, builtins, gc, os, resource, signal, sys, threading


def run_stdio(source, stdin_text, output_cap):
    # Real file descriptors, not StringIO: programs read fd 0 directly (open(0), os.read(0, os.fstat(0).st_size))
    # and write fd 1 (os.write). memfd: no path, nothing on the host in unsafe mode, freed with the process.
    stdin_fd = os.memfd_create("stdin")
    data = stdin_text.encode()
    while data:
        data = data[os.write(stdin_fd, data):]
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    flush_quietly(sys.__stdout__)  # anything of the harness's left in it goes to fd 1 as it is now: /dev/null
    os.dup2(stdin_fd, 0)
    stdout_fd = os.memfd_create("stdout")
    os.dup2(stdout_fd, 1)
    # Past the cap a write fails (EFBIG) rather than kill the process, so we still report what happened.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (output_cap + 1, output_cap + 1))
    sys.stdin = open(0, "r", encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    atexit._clear()  # the harness's handlers, if any, are not the program's to run
    real_exit = os._exit
    # `os._exit(0)` after printing is a common contest idiom; it must end the program, not the harness.
    # (The zygote itself calls os._exit after the harness, hence the restore.)
    os._exit = lambda code=0: (_ for _ in ()).throw(SystemExit(code))
    namespace = {"__name__": "__main__", "__builtins__": builtins, "exit": sys.exit, "quit": sys.exit}
    try:
        error = run_program(source, namespace)
        error = end_like_the_interpreter(namespace) or error
    finally:
        os._exit = real_exit
    size = os.fstat(stdout_fd).st_size
    out = os.pread(stdout_fd, min(size, output_cap), 0)
    return {"stdout": base64.b64encode(out).decode(), "bytes": size, "error": error.splitlines()[-1][:500] if error else ""}


def run_program(source, namespace):
    try:
        exec(compile(source, "solution.py", "exec"), namespace)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return f"SystemExit: {exc.code}"
    except BaseException as exc:
        if type(exc).__name__ == "CallTimeout":
            raise
        return f"{type(exc).__name__}: {exc}"
    return ""


def end_like_the_interpreter(namespace):
    # What a Python process does as its program ends, which this one (the harness goes on, then os._exit)
    # would not: wait for non-daemon threads (`threading.Thread(target=main).start()` with a big stack is a
    # contest idiom for deep recursion; the per-test alarm bounds the wait), run atexit handlers (fast-output
    # templates print their buffer there), flush stdout and sys.__stdout__ unless closed, then free the
    # program's objects, so a file it opened on fd 1 is flushed as it is closed. Returns a flush's error.
    main = threading.main_thread()
    while any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        for thread in threading.enumerate():
            if thread is not main and not thread.daemon:
                thread.join()
    try:
        atexit._run_exitfuncs()  # a handler's exception is printed to stderr and ignored, as at exit
    except BaseException as exc:
        if type(exc).__name__ == "CallTimeout":
            raise
    error = ""
    for stream in (sys.stdout, sys.__stdout__):
        try:
            flush_quietly(stream, raise_errors=True)
        except BaseException as exc:
            if type(exc).__name__ == "CallTimeout":
                raise
            error = error or f"{type(exc).__name__}: {exc}"
    namespace.clear()
    gc.collect()
    return error


def flush_quietly(stream, raise_errors=False):
    try:
        if stream is not None and not stream.closed:
            stream.flush()
    except (OSError, ValueError):
        if raise_errors:
            raise
"""


# --- comparison -------------------------------------------------------------------------------------


def tokens_match(actual: str, expected: str, float_tolerance: float | None) -> bool:
    if actual == expected:
        return True
    if float_tolerance is None or not (NUMBER_RE.fullmatch(actual) and NUMBER_RE.fullmatch(expected)):
        return False
    a, b = float(actual), float(expected)
    # Two different huge integers both overflow to inf: never equal by tolerance.
    return (
        math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=float_tolerance, abs_tol=float_tolerance)
    )


def outputs_match(actual: str, expected: str, float_tolerance: float | None = None) -> bool:
    got, want = actual.split(), expected.split()
    return len(got) == len(want) and all(tokens_match(g, w, float_tolerance) for g, w in zip(got, want))


# --- task files -------------------------------------------------------------------------------------


def is_io_record(record: dict) -> bool:
    return "io_tests" in record or "input_output" in record


def io_task_parts(record: dict, where: str) -> tuple[str, str, dict, str]:
    """(task id, prompt text, hidden, difficulty) from a record in our layout (`task_id`, `prompt`,
    `io_tests`, [`float_tolerance`, `solution`]) or APPS' (`problem_id`, `question`, `input_output`:
    JSON of `inputs` / `outputs`, [`solutions`: JSON list])."""
    task_id = record.get("task_id", record.get("problem_id"))
    statement = record.get("prompt", record.get("question"))
    if task_id is None or not isinstance(statement, str):
        raise WarmstartError(f"{where}: an io task needs `task_id` (or `problem_id`) and `prompt` (or `question`)")
    tests = record["io_tests"] if "io_tests" in record else apps_tests(record["input_output"], where)
    hidden = {"io_tests": checked_tests(tests, where), "float_tolerance": checked_tolerance(record, where)}
    solution = record.get("solution") or first_apps_solution(record.get("solutions"))
    if solution:
        hidden["solution"] = solution
    return str(task_id), PROMPT + statement, hidden, str(record.get("difficulty", "unknown"))


def apps_tests(input_output, where: str) -> list[dict]:
    try:
        spec = json.loads(input_output) if isinstance(input_output, str) else input_output
    except ValueError:
        raise WarmstartError(f"{where}: input_output is not valid JSON") from None
    if not isinstance(spec, dict) or spec.get("fn_name"):
        raise WarmstartError(
            f"{where}: input_output must hold stdin `inputs` / `outputs` (call-based fn_name is not supported)"
        )
    inputs, outputs = spec.get("inputs") or [], spec.get("outputs") or []
    if len(inputs) != len(outputs):
        raise WarmstartError(f"{where}: input_output has {len(inputs)} inputs but {len(outputs)} outputs")
    # APPS sometimes stores a test's text as a list of lines.
    as_text = lambda value: "\n".join(map(str, value)) if isinstance(value, list) else value  # noqa: E731
    return [{"input": as_text(i), "output": as_text(o)} for i, o in zip(inputs, outputs)]


def checked_tests(tests, where: str) -> list[dict]:
    if not isinstance(tests, list) or not tests:
        raise WarmstartError(f"{where}: no io tests")
    for number, test in enumerate(tests):
        if not (isinstance(test, dict) and isinstance(test.get("input"), str) and isinstance(test.get("output"), str)):
            raise WarmstartError(f"{where}: io test {number} needs string `input` and `output`")
    return [{"input": t["input"], "output": t["output"]} for t in tests]


def checked_tolerance(record: dict, where: str) -> float | None:
    tolerance = record.get("float_tolerance")
    if tolerance is not None and (not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1):
        raise WarmstartError(f"{where}: float_tolerance must be a number in [0, 1) or null")
    return None if tolerance is None else float(tolerance)


def first_apps_solution(solutions) -> str | None:
    if isinstance(solutions, str):
        try:
            solutions = json.loads(solutions)
        except ValueError:
            return None
    return solutions[0] if isinstance(solutions, list) and solutions and isinstance(solutions[0], str) else None


# --- running ----------------------------------------------------------------------------------------


def run_one(execute: Callable[[dict, float], Execution], program: str, stdin_text: str, per_test_s: float) -> dict:
    """One sandboxed run: {"stdout": str} or {"failure": kind[, "stderr": last line]} or {"infra_error": why}."""
    nonce = secrets.token_hex(8)
    spec = {
        "program": RUNNER,
        "entry_point": "run_stdio",
        "calls": [{"args": [program, stdin_text, OUTPUT_CAP], "kwargs": {}}],
        "nonce": nonce,
        "per_call_s": per_test_s,
    }
    execution = execute(spec, per_test_s)  # the alarm inside, and the same limit (with a grace) outside
    record = harness_record(execution.stdout, nonce)
    if record is None or "load_error" in record:
        return outcome_without_result(execution, record)
    if "raised" in record:  # the harness's alarm (CallTimeout), or it could not encode our result
        return (
            {"failure": "timeout"}
            if record["raised"] == "CallTimeout"
            else {"failure": "runtime_error", "stderr": record["raised"]}
        )
    result = runner_result(record.get("value"))
    if result is None:
        return {"failure": "runtime_error", "stderr": "malformed result"}  # a program writing on our channel
    if result["bytes"] > OUTPUT_CAP:
        return {"failure": "output_limit"}
    if result["error"]:
        kind = "memory" if result["error"].startswith("MemoryError") else "runtime_error"
        return {"failure": kind, "stderr": result["error"]}
    return {"stdout": result["stdout"].decode(errors="replace")}


def runner_result(value) -> dict | None:
    """RUNNER's result, {"stdout": bytes, "bytes": int, "error": str}, or None where it is not of that shape:
    the program shares RUNNER's process and may have written it (a string for a count had raised here)."""
    try:
        result = decode_claimed(value)
        if not (
            isinstance(result, dict)
            and type(result.get("bytes")) is int
            and isinstance(result.get("error"), str)
            and isinstance(result.get("stdout"), str)
        ):
            return None
        return {**result, "stdout": base64.b64decode(result["stdout"], validate=True)}
    except ValueError:  # binascii.Error is one
        return None


def harness_record(stdout: bytes, nonce: str) -> dict | None:
    """The harness's first line for our one call (or its load error)."""
    prefix = nonce + " "
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith(prefix):
            try:
                record = json.loads(line[len(prefix) :])
            except (ValueError, RecursionError):  # a line the program wrote itself may be nested past the limit
                continue
            if isinstance(record, dict) and (record.get("i") == 0 or "load_error" in record):
                return record
    return None


def outcome_without_result(execution: Execution, record: dict | None) -> dict:
    if execution.infra_error:
        return {"infra_error": execution.infra_error}
    if record is not None:
        # RUNNER is fixed code that loads before the program runs, beside it in one process: a load error on
        # the channel is one the program wrote itself, which as an infra error would have been masked from
        # training and left out of eval's tally (a wrong answer's 0 dodged).
        return {"failure": "runtime_error", "stderr": "the program wrote on the grader's channel"}
    if execution.timed_out:
        return {"failure": "timeout"}
    if execution.truncated:
        return {"failure": "output_limit"}
    # Killed before answering: the CPU limit (SIGXCPU/SIGKILL) or a crash of the interpreter.
    return {"failure": "runtime_error", "stderr": f"exit code {execution.returncode}"}


def grade_io(hidden: dict, program: str, execute: Callable[[dict, float], Execution], per_test_s: float) -> Verdict:
    tests, tolerance = hidden["io_tests"], hidden.get("float_tolerance")
    passed, first_failure, not_run = 0, None, 0
    for index, test in enumerate(tests):
        outcome = run_one(execute, program, test["input"], per_test_s)
        if "infra_error" in outcome:
            return Verdict(reward=0.0, passed=False, infra_error=outcome["infra_error"])
        if "stdout" in outcome and not outputs_match(outcome["stdout"], test["output"], tolerance):
            outcome = {"failure": "wrong_answer"}
        if "failure" not in outcome:
            passed += 1
            continue
        first_failure = first_failure or {"failed_test": index, **outcome}
        if outcome["failure"] == "timeout":
            # A program that runs out of time once almost always does on the rest, each at full cost.
            not_run = len(tests) - index - 1
            break
    return io_verdict(passed, len(tests), first_failure, not_run)


def io_verdict(passed: int, total: int, first_failure: dict | None, not_run: int) -> Verdict:
    details = {"passed_tests": passed, "total_tests": total, "fraction": passed / total}
    if first_failure is not None:
        failure = first_failure.pop("failure")
        details.update(first_failure, failure=failure, reason=f"test {first_failure['failed_test']}: {failure}")
    if not_run:
        details["not_run"] = not_run  # counted as failed
    ok = passed == total
    return Verdict(reward=1.0 if ok else 0.0, passed=ok, details=details)
