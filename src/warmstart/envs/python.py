"""`python`: write a function from its signature and docstring; hidden unit tests decide.

Tasks come from a JSONL file in the common HumanEval-style layout (`task_id`, `prompt`, `test`,
`entry_point`, optionally `canonical_solution` and `difficulty`); the default is the set written for
this project (`python_tasks.jsonl`, 48 tasks over three difficulty levels). The reply's last
```python block (or the whole reply) is the program; a reply that does not define the entry point is
taken as the body that completes the prompt.

MBPP's layout (`text`, `code`, `test_list`[, `test_setup_code`]) and stdin/stdout tasks (io_tests.py)
are read too.

Grading (python_tests.py decides the way per task as it loads): a test made of asserts over literal
calls has only the calls run in the sandbox (`sandbox/bubblewrap.py`: by default in its pre-started
zygote, a fresh set of namespaces per run; via `python_harness.py`) and every assertion evaluated here
on the returned plain data; any other test (loops, helpers, random inputs, ...) runs in a sandboxed
process of its own that calls the candidate, in another, through a proxy (python_proxy.py). Reward 1
when every assertion (every test unit) holds; the fraction is a detail. A sandbox that could not start
is an infra error, never a 0.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import random
import re
import secrets
import tempfile
import time
import weakref
import zlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ..errors import JSON_ERRORS, WarmstartError, json_problem
from ..types import Message, Provenance, Task, ToolCall, Trajectory, Verdict
from .base import final_assistant_text, hash_split
from .io_tests import grade_io, io_task_parts, is_io_record
from .python_harness import decode_claimed
from .python_tests import SAFE_BUILTIN_NAMES, humaneval_tests, is_mbpp_record, mbpp_parts, parses, proxy_spec
from .sandbox import bubblewrap as sandbox
from .sandbox.interpreter import Interpreter, interpreter

DEFAULT_TASKS = Path(__file__).with_name("python_tasks.jsonl")
HARNESS = Path(__file__).with_name("python_harness.py")
PROXY = Path(__file__).with_name("python_proxy.py")
# A fence's opening line (its info string after it) and a Python one's tag: any case, `python3`, `py`, `py3`,
# or none (a ```Python block had been taken as prose, the whole reply graded as the program: SyntaxError).
FENCE_RE = re.compile(r"[ \t]*```[ \t]*([^`\n]*)")
PYTHON_TAG_RE = re.compile(r"(?:(?:python|py)3?)?(?:[ \t].*)?", re.IGNORECASE)
# Where a reply has no block a line at a time finds (a fence after text on its line, four backticks, a
# closing fence with words after it), a block found by pattern, as before.
CODE_BLOCK_RE = re.compile(r"```(?:(?:python|py)3?\b[^\n]*)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
EVAL_BUCKETS = 8
# An io task's limit (its whole run) is an alarm inside the program's process, which the program can ignore
# (SIG_IGN, a cleared timer): its run is also stopped from outside once the limit and this much more have
# passed (the sandbox's start and the interpreter's are inside the wall clock), not only at `wall_s`.
OUTSIDE_GRACE_S = 2.0
# What a test's assertion may use beside the results (plain data) when it is evaluated here.
SAFE_BUILTINS = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}


class PythonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks_file: str | None = (
        None  # JSONL (task_id, prompt, test, entry_point[, canonical_solution]) or stdin/stdout tasks (io_tests.py); default: the built-in set
    )
    wall_s: float = Field(10.0, gt=0)  # per program, all test calls included
    per_call_s: float = Field(2.0, gt=0)
    memory_mb: int = Field(1024, ge=64)
    unsafe_no_sandbox: bool = False  # run without bubblewrap: trusted code only
    zygote: bool = True  # one pre-started sandboxed interpreter forking an isolated child per run (fast); false: a new sandbox per run
    python: str | None = (
        None  # an interpreter (e.g. a venv's bin/python) whose packages programs may import, mounted read-only; default: the system's, standard library only
    )


# The fields of the three task layouts whose type is known (a field a layout does not use is not checked).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "task_id": (str, int),
    "problem_id": (str, int),
    "prompt": (str,),
    "test": (str,),
    "entry_point": (str,),
    "canonical_solution": (str,),
    "text": (str,),
    "code": (str,),
    "test_list": (list,),
    "test_imports": (list,),
    "test_setup_code": (str, type(None)),
    "question": (str,),
    "io_tests": (list,),
    "solution": (str,),
}


def load_task_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) of each task in `path`; a line that is not a JSON object is an error naming it."""
    if not path.is_file():
        raise WarmstartError(f"env.options.tasks_file: {path} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark some editors write is not the task's
    except UnicodeDecodeError as exc:
        raise WarmstartError(f"env.options.tasks_file: {path} is not UTF-8 text (byte {exc.start})") from None
    records = []
    # "\n" only: splitlines() would also split at U+2028 / U+2029 / U+0085, which JSON strings hold as they are
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except JSON_ERRORS as exc:
            raise WarmstartError(f"{path}:{number}: not valid JSON ({json_problem(exc)})") from None
        if not isinstance(record, dict):
            raise WarmstartError(f"{path}:{number}: a task is a JSON object, not {type(record).__name__}")
        records.append((number, record))
    return records


def check_unique_ids(tasks: list[Task], lines: list[int], path: Path) -> None:
    """One task per id: two records under one id had both loaded, and which one a run used went by the seed
    and the count drawn (both drawn: an error naming neither record's line)."""
    first: dict[str, int] = {}
    for line, task in zip(lines, tasks):
        if task.id in first:
            raise WarmstartError(f"{path}:{line}: task id {task.id!r} is also line {first[task.id]}'s")
        first[task.id] = line


def check_field_types(record: dict, where: str) -> None:
    for key, types in FIELD_TYPES.items():
        value = record.get(key, ...)
        if value is not ... and (not isinstance(value, types) or isinstance(value, bool)):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise WarmstartError(f"{where}: `{key}` must be {wanted}, not {type(value).__name__}")


def check_entry_point_defined(record: dict, where: str) -> None:
    """A HumanEval-layout task whose prompt and solution never define `entry_point` would score every answer
    0 (the test calls a name nothing defines): refused where the code shows it."""
    entry_point = record["entry_point"]
    if not entry_point.isidentifier():
        raise WarmstartError(f"{where}: entry_point {entry_point!r} is not a Python name")
    source = record["prompt"] + record.get("canonical_solution", "")
    if not record.get("canonical_solution") or not parses(source):
        return  # nothing whole to check against: the sandbox's grading will say
    if not any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry_point
        for n in ast.walk(ast.parse(source))
    ):
        raise WarmstartError(
            f"{where}: entry_point {entry_point!r} is defined by neither the prompt nor canonical_solution"
        )


def last_code_block(reply: str) -> str:
    """The last fenced Python (or untagged) block of the reply; the reply itself where it has none."""
    blocks = [code for tag, code in fenced_blocks(reply) if PYTHON_TAG_RE.fullmatch(tag)]
    blocks = blocks or CODE_BLOCK_RE.findall(reply)
    return blocks[-1] if blocks else reply


def fenced_blocks(reply: str) -> list[tuple[str, str]]:
    """(info string, text) of each fenced block, read a line at a time so that a block of another language
    is skipped whole (matched by pattern alone, its closing fence had opened an untagged block). A block
    closes at a line that is a fence or ends with one (`print(x)```); one never closed is not a block."""
    blocks, tag, lines = [], None, []
    for line in reply.split("\n"):
        if tag is None:
            if opening := FENCE_RE.fullmatch(line):
                tag, lines = opening.group(1).strip(), []
        elif line.rstrip().endswith("```"):
            lines.append(line.rstrip()[:-3])
            text = "\n".join(lines)
            blocks.append((tag, text if text.endswith("\n") or not text else text + "\n"))
            tag = None
        else:
            lines.append(line)
    return blocks


def program_of(reply: str, prompt_code: str, entry_point: str) -> str:
    """The program to grade: a reply that defines the entry point, after the prompt's own code when that
    is a whole program (so the helpers the prompt defines are there, as in HumanEval's harness); any other
    reply is taken as the body that completes the prompt."""
    code = last_code_block(reply)
    try:
        defines = any(
            isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry_point
            for n in ast.parse(code).body
        )
    except SyntaxError:
        defines = False
    if not defines:
        return prompt_code + code
    return f"{prompt_code}\n\n{code}" if prompt_code and parses(prompt_code) else code


class PythonEnv:
    name = "python"
    tools: tuple[dict, ...] = ()
    verify_workers = max(1, os.cpu_count() or 1)  # each verification is a sandboxed subprocess

    def __init__(self, options: PythonOptions | None = None):
        self.options = options or PythonOptions()
        if sandbox.bwrap_path() is None and not self.options.unsafe_no_sandbox:
            raise WarmstartError(
                "env python: bubblewrap (bwrap) is not installed: install it (apt-get install bubblewrap), or set env.options.unsafe_no_sandbox = true for trusted code only"
            )
        self.zygote: sandbox.Zygote | None = None
        self.python = interpreter(self.options.python)
        if self.options.python and not self.options.unsafe_no_sandbox:
            check_starts_sandboxed(self.python, self.options.python)
        path = Path(self.options.tasks_file) if self.options.tasks_file else DEFAULT_TASKS
        records = load_task_records(path)
        self.all_tasks = [
            self._task(r, f"{path.name}:{number}: task {r.get('task_id', r.get('problem_id'))}")
            for number, r in records
        ]
        check_unique_ids(self.all_tasks, [number for number, _ in records], path)

    def _task(self, record: dict, where: str) -> Task:
        check_field_types(record, where)
        if is_io_record(record):
            return self._io_task(record, where)
        if is_mbpp_record(record):
            task_id, text, hidden = mbpp_parts(record, where)
            return self._code_task(task_id, text, hidden, record)
        missing = [k for k in ("task_id", "prompt", "test", "entry_point") if k not in record]
        if missing:
            raise WarmstartError(f"{where}: missing {', '.join(missing)}")
        check_entry_point_defined(record, where)
        hidden = {
            **humaneval_tests(record, where),
            "entry_point": record["entry_point"],
            "prompt_code": record["prompt"],
        }
        if record.get("canonical_solution"):
            hidden["solution"] = record["prompt"] + record["canonical_solution"]
        text = f"Complete this Python function. Reply with the whole function in one ```python block.\n\n```python\n{record['prompt']}```"
        return self._code_task(str(record["task_id"]), text, hidden, record)

    def _code_task(self, task_id: str, text: str, hidden: dict, record: dict) -> Task:
        return Task(
            id=f"python/{task_id}",
            env=self.name,
            prompt=[Message(role="user", content=text)],
            hidden=hidden,
            split=hash_split(task_id, EVAL_BUCKETS),
            meta={"difficulty": record.get("difficulty", "unknown")},
        )

    def _io_task(self, record: dict, where: str) -> Task:
        task_id, text, hidden, difficulty = io_task_parts(record, where)
        return Task(
            id=f"python/{task_id}",
            env=self.name,
            prompt=[Message(role="user", content=text)],
            hidden=hidden,
            split=hash_split(task_id, EVAL_BUCKETS),
            meta={"difficulty": difficulty},
        )

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        pool = [t for t in self.all_tasks if t.split == split]
        if n > len(pool):
            raise ValueError(f"python: only {len(pool)} {split} tasks in the task file, {n} asked")
        random.Random(f"python-{seed}").shuffle(pool)
        return pool[:n]

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        raise ValueError("python has no tools")

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        reply = final_assistant_text(trajectory)
        if not reply:
            return Verdict(reward=0.0, passed=False, details={"reason": "no assistant reply"})
        if "io_tests" in task.hidden:  # a stdin/stdout program, run once per test input
            return grade_io(task.hidden, last_code_block(reply), self.execute, self.options.per_call_s)
        program = program_of(reply, task.hidden["prompt_code"], task.hidden["entry_point"])
        if task.hidden.get("mode") == "proxy":
            return self.grade_proxied(task, program)
        return self.grade(task, program)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "zygote": None}  # a process pool's workers start their own

    def close(self) -> None:
        """Stop the zygote now, not when this object is collected: a verification worker calls it as it
        exits, since a worker process ends without running weakref finalizers. The next run starts a new one."""
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None

    def execute(self, spec: dict, run_limit_s: float | None = None) -> sandbox.Execution:
        """One program run: in the pre-started zygote (fresh namespaces per run), or without it in a
        new sandbox per run (`zygote = false`), or unsandboxed (`unsafe_no_sandbox`, trusted code).
        `run_limit_s`: what the whole run may take (an io task's per-test limit), enforced from outside too."""
        wall_s = min(self.options.wall_s, run_limit_s + OUTSIDE_GRACE_S) if run_limit_s else self.options.wall_s
        limits = sandbox.Limits(wall_s=wall_s, cpu_s=int(wall_s) + 1, memory_bytes=self.options.memory_mb << 20)
        if self.options.unsafe_no_sandbox:
            with tempfile.TemporaryDirectory(prefix="warmstart-py-") as tmp:
                return run_harness(spec, Path(tmp), limits, unsafe=True, python=self.python)
        files = {"python_harness.py": HARNESS.read_text(), "python_proxy.py": PROXY.read_text()}
        if self.options.zygote:
            if self.zygote is None:
                self.zygote = sandbox.Zygote(files, limits, self.python)
                weakref.finalize(self, self.zygote.close)
            return self.zygote.execute(spec, limits)
        # A new sandbox for this one run, set up by the same code as the zygote's jobs (the same caps).
        one_off = sandbox.Zygote(files, limits, self.python)
        try:
            return one_off.execute(spec, limits)
        finally:
            one_off.close()

    def grade(self, task: Task, program: str) -> Verdict:
        hidden, nonce = task.hidden, secrets.token_hex(8)
        spec = {
            "program": program,
            "entry_point": hidden["entry_point"],
            "calls": hidden["calls"],
            "nonce": nonce,
            "per_call_s": self.options.per_call_s,
        }
        # Bounded outside by wall_s alone: the program's load (its imports, a table it computes once) has the
        # whole of it, and each call is timed by the harness's own clock besides its alarm.
        execution = self.execute(spec)
        results, load_error = parse_results(execution.stdout, nonce, len(hidden["calls"]))
        if not results and load_error is None and execution.infra_error:
            return Verdict(reward=0.0, passed=False, infra_error=execution.infra_error)
        passed = sum(assertion_holds(a, results) for a in hidden["asserts"])
        total = len(hidden["asserts"])
        details = {
            "tests_passed": passed,
            "tests": total,
            "fraction": passed / total,
            "seconds": round(execution.seconds, 3),
        }
        if load_error:
            details["reason"] = f"program did not load: {load_error}"
        elif execution.timed_out or any(r.get("raised") == "CallTimeout" for r in results.values()):
            details["reason"] = "time limit"
        elif execution.truncated:
            details["reason"] = "output limit"
        ok = passed == total
        return Verdict(reward=1.0 if ok else 0.0, passed=ok, details=details)

    def grade_proxied(self, task: Task, program: str) -> Verdict:
        """A test that calls the candidate through the proxy (python_proxy.py): each unit (a whole
        `check`, or one MBPP assert) passes or fails as reported by the test's own process."""
        nonce, units = secrets.token_hex(8), task.hidden["units"]
        seed = zlib.crc32(task.id.encode())  # a test's random inputs: the same for every sample of a task
        execution = self.execute(proxy_spec(task.hidden, program, nonce, self.options.per_call_s, seed))
        report = parse_report(execution.stdout, nonce, len(units))
        if "test_error" in report:
            return Verdict(
                reward=0.0,
                passed=False,
                infra_error=f"{task.id}: the task's own test code failed: {report['test_error']}",
            )
        if not report["units"] and "load_error" not in report and execution.infra_error:
            return Verdict(reward=0.0, passed=False, infra_error=execution.infra_error)
        passed = sum(bool(u.get("passed")) for u in report["units"].values())
        details = {
            "tests_passed": passed,
            "tests": len(units),
            "fraction": passed / len(units),
            "seconds": round(execution.seconds, 3),
        }
        failed = [u for u in report["units"].values() if not u.get("passed")]
        if "load_error" in report:
            details["reason"] = f"program did not load: {report['load_error']}"
        elif execution.timed_out or any(u.get("timeout") for u in failed):
            details["reason"] = "time limit"
        elif execution.truncated:
            details["reason"] = "output limit"
        elif failed:
            details["first_failure"] = str(failed[0].get("error", ""))[:300]
        ok = passed == len(units)
        return Verdict(reward=1.0 if ok else 0.0, passed=ok, details=details)

    def reference(self, task: Task, rng) -> Trajectory:
        solution = task.hidden.get("solution")
        if solution is None:
            raise WarmstartError(f"{task.id}: no canonical_solution, so the reference teacher cannot answer it")
        return Trajectory(
            task_id=task.id,
            policy="reference",
            messages=[*task.prompt, Message(role="assistant", content=f"```python\n{solution}```")],
            provenance=Provenance(provider="reference", model="python-canonical-solutions", created=time.time()),
        )


def check_starts_sandboxed(python: Interpreter, given: str) -> None:
    with tempfile.TemporaryDirectory(prefix="warmstart-py-") as tmp:
        started = sandbox.run([*python.argv(), "-c", "pass"], Path(tmp), sandbox.Limits(wall_s=60), python=python)
    if started.returncode != 0:
        why = started.stderr.decode(errors="replace").strip().splitlines() or [f"exit {started.returncode}"]
        raise WarmstartError(
            f"env.options.python: {given} does not start inside the sandbox (it runs as `nobody`, who must be able to read it): {why[-1]}"
        )


def run_harness(
    spec: dict,
    task_dir: Path,
    limits: sandbox.Limits,
    unsafe: bool,
    work_dir: Path | None = None,
    python: Interpreter = Interpreter(),
) -> sandbox.Execution:
    """The harness on `spec` in a new sandbox: `task_dir` (empty, ours) becomes its /task. A proxied
    spec runs both of its processes there (python_proxy.py's `pair`: for trusted code, with `unsafe`)."""
    (task_dir / "input.json").write_text(json.dumps(spec))
    (task_dir / "python_harness.py").write_text(HARNESS.read_text())
    (task_dir / "python_proxy.py").write_text(PROXY.read_text())
    script = (
        ["/task/python_proxy.py", "pair", "/task/input.json"]
        if spec.get("mode") == "proxy"
        else ["/task/python_harness.py", "/task/input.json"]
    )
    argv = [*python.argv(sandboxed=sandbox.bwrap_path() is not None), *script]
    return sandbox.run(argv, task_dir, limits, unsafe=unsafe, work_dir=work_dir, python=python)


def nonce_records(stdout: bytes, nonce: str):
    """The JSON objects the harness wrote on lines that start with this execution's nonce."""
    prefix = nonce + " "
    for line in stdout.decode(errors="replace").splitlines():
        if not line.startswith(prefix):
            continue
        try:
            record = json.loads(line[len(prefix) :])
        except (ValueError, RecursionError):  # a line the program wrote itself may be nested past the limit
            continue
        if isinstance(record, dict):
            yield record


def parse_report(stdout: bytes, nonce: str, n_units: int) -> dict:
    """A proxied test's report: {"units": {index: record}} (the first record per unit), and the first
    "load_error" / "test_error" if any."""
    report: dict = {"units": {}}
    for record in nonce_records(stdout, nonce):
        for key in ("load_error", "test_error"):
            if key in record:
                report.setdefault(key, str(record[key]))
        index = record.get("unit")
        if isinstance(index, int) and 0 <= index < n_units and index not in report["units"]:
            report["units"][index] = record
    return report


def parse_results(stdout: bytes, nonce: str, n_calls: int) -> tuple[dict[int, dict], str | None]:
    """The first result per call index (later lines for an index are ignored), and any load error."""
    results: dict[int, dict] = {}
    load_error = None
    for record in nonce_records(stdout, nonce):
        if "load_error" in record and load_error is None:
            load_error = str(record["load_error"])
        index = record.get("i")
        if isinstance(index, int) and 0 <= index < n_calls and index not in results:
            results[index] = record
    return results, load_error


def assertion_holds(assertion: dict, results: dict[int, dict]) -> bool:
    values = {}
    for index in assertion["calls"]:
        record = results.get(index)
        if record is None or "value" not in record:
            return False
        try:
            values[f"__r{index}"] = decode_claimed(record["value"])
        except ValueError:
            return False
    try:
        # The results among the globals: a generator expression's or a lambda's body does not see eval's locals.
        namespace = {"__builtins__": SAFE_BUILTINS, "math": math, **values}
        return bool(eval(assertion["expr"], namespace))  # noqa: S307 - the test's own expression, on plain data
    except Exception:
        return False
