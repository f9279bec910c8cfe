"""`python`: write a function from its signature and docstring; hidden unit tests decide.

Tasks come from a JSONL file in the common HumanEval-style layout (`task_id`, `prompt`, `test`,
`entry_point`, optionally `canonical_solution` and `difficulty`); the default is the set written for
this project (`python_tasks.jsonl`, 48 tasks over three difficulty levels). The reply's last
```python block (or the whole reply) is the program; a reply that does not define the entry point is
taken as the body that completes the prompt.

Grading: `check(candidate)` must consist of `assert` statements whose `candidate(...)` calls have
literal arguments (most HumanEval- and MBPP-style tests do; others are refused at load time, naming
the task and line). Only those calls run in the sandbox (`sandbox/bubblewrap.py`: by default in its pre-started
zygote, a fresh set of namespaces per run; via `python_harness.py`); their
results come back as plain data and every assertion is evaluated here, outside the sandbox, with the
results in place of the calls. Reward 1 when every assertion holds; the fraction is a detail. A
sandbox that could not start is an infra error, never a 0.
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
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ..errors import WarmstartError
from ..types import Message, Provenance, Task, ToolCall, Trajectory, Verdict
from .base import final_assistant_text, hash_split
from .io_tests import grade_io, io_task_parts, is_io_record
from .python_harness import decode, encode
from .sandbox import bubblewrap as sandbox

DEFAULT_TASKS = Path(__file__).with_name("python_tasks.jsonl")
HARNESS = Path(__file__).with_name("python_harness.py")
CODE_BLOCK_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
EVAL_BUCKETS = 8
# What a test's assertion may use beside the results (plain data) when it is evaluated here.
SAFE_BUILTINS = {
    name: getattr(builtins, name)
    for name in "abs all any bool dict float frozenset int isinstance len list max min round set sorted str sum tuple type".split()
}


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


def literal(node: ast.AST, where: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise WarmstartError(
            f"{where}: the arguments of candidate(...) must be literals (got {ast.unparse(node)!r})"
        ) from None


def compile_tests(test: str, entry_point: str, where: str) -> tuple[list[dict], list[dict]]:
    """(calls to run in the sandbox, assertions to evaluate outside) from a `check(candidate)` source."""
    check = next((n for n in ast.parse(test).body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None or not check.args.args:
        raise WarmstartError(f"{where}: the test has no `def check(candidate):`")
    names = {check.args.args[0].arg, entry_point}
    calls: list[dict] = []
    asserts: list[dict] = []
    for statement in check.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring
        if not isinstance(statement, ast.Assert):
            raise WarmstartError(
                f"{where}: line {statement.lineno} of the test is not an `assert` (only asserts can be graded outside the sandbox)"
            )
        used: list[int] = []

        class Replace(ast.NodeTransformer):
            def visit_Call(self, node: ast.Call):
                if isinstance(node.func, ast.Name) and node.func.id in names:
                    calls.append(
                        {
                            "args": [encode(literal(a, where)) for a in node.args],
                            "kwargs": {k.arg: encode(literal(k.value, where)) for k in node.keywords},
                        }
                    )
                    used.append(len(calls) - 1)
                    return ast.copy_location(ast.Name(id=f"__r{len(calls) - 1}", ctx=ast.Load()), node)
                return self.generic_visit(node)

        expression = Replace().visit(statement.test)
        if not used:
            raise WarmstartError(f"{where}: line {statement.lineno} of the test never calls the candidate")
        asserts.append({"expr": ast.unparse(expression), "calls": used})
    if not asserts:
        raise WarmstartError(f"{where}: the test has no assertions")
    return calls, asserts


def load_task_records(path: Path) -> list[dict]:
    if not path.is_file():
        raise WarmstartError(f"env.options.tasks_file: {path} not found")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise WarmstartError(f"{path}:{number}: not valid JSON") from None
    return records


def last_code_block(reply: str) -> str:
    blocks = CODE_BLOCK_RE.findall(reply)
    return blocks[-1] if blocks else reply


def program_of(reply: str, prompt_code: str, entry_point: str) -> str:
    code = last_code_block(reply)
    try:
        defines = any(
            isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry_point
            for n in ast.parse(code).body
        )
    except SyntaxError:
        defines = False
    return code if defines else prompt_code + code


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
        path = Path(self.options.tasks_file) if self.options.tasks_file else DEFAULT_TASKS
        self.all_tasks = [
            self._task(r, f"{path.name}: task {r.get('task_id', r.get('problem_id'))}") for r in load_task_records(path)
        ]

    def _task(self, record: dict, where: str) -> Task:
        if is_io_record(record):
            return self._io_task(record, where)
        missing = [k for k in ("task_id", "prompt", "test", "entry_point") if k not in record]
        if missing:
            raise WarmstartError(f"{where}: missing {', '.join(missing)}")
        calls, asserts = compile_tests(record["test"], record["entry_point"], where)
        hidden = {
            "calls": calls,
            "asserts": asserts,
            "entry_point": record["entry_point"],
            "prompt_code": record["prompt"],
        }
        if record.get("canonical_solution"):
            hidden["solution"] = record["prompt"] + record["canonical_solution"]
        text = f"Complete this Python function. Reply with the whole function in one ```python block.\n\n```python\n{record['prompt']}```"
        return Task(
            id=f"python/{record['task_id']}",
            env=self.name,
            prompt=[Message(role="user", content=text)],
            hidden=hidden,
            split=hash_split(record["task_id"], EVAL_BUCKETS),
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
        return self.grade(task, program)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "zygote": None}  # a process pool's workers start their own

    def close(self) -> None:
        """Stop the zygote now, not when this object is collected: a verification worker calls it as it
        exits, since a worker process ends without running weakref finalizers. The next run starts a new one."""
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None

    def execute(self, spec: dict) -> sandbox.Execution:
        """One program run: in the pre-started zygote (fresh namespaces per run), or without it in a
        new sandbox per run (`zygote = false`), or unsandboxed (`unsafe_no_sandbox`, trusted code)."""
        limits = sandbox.Limits(
            wall_s=self.options.wall_s, cpu_s=int(self.options.wall_s) + 1, memory_bytes=self.options.memory_mb << 20
        )
        if self.options.unsafe_no_sandbox:
            with tempfile.TemporaryDirectory(prefix="warmstart-py-") as tmp:
                return run_harness(spec, Path(tmp), limits, unsafe=True)
        if self.options.zygote:
            if self.zygote is None:
                self.zygote = sandbox.Zygote({"python_harness.py": HARNESS.read_text()}, limits)
                weakref.finalize(self, self.zygote.close)
            return self.zygote.execute(spec, limits)
        # A new sandbox for this one run, set up by the same code as the zygote's jobs (the same caps).
        one_off = sandbox.Zygote({"python_harness.py": HARNESS.read_text()}, limits)
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
        elif execution.timed_out:
            details["reason"] = "time limit"
        elif execution.truncated:
            details["reason"] = "output limit"
        ok = passed == total
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


def run_harness(
    spec: dict, task_dir: Path, limits: sandbox.Limits, unsafe: bool, work_dir: Path | None = None
) -> sandbox.Execution:
    """The harness on `spec` in a new sandbox: `task_dir` (empty, ours) becomes its /task."""
    (task_dir / "input.json").write_text(json.dumps(spec))
    (task_dir / "harness.py").write_text(HARNESS.read_text())
    return sandbox.run(
        [sandbox.SANDBOX_PYTHON, "-I", "-S", "/task/harness.py"], task_dir, limits, unsafe=unsafe, work_dir=work_dir
    )


def parse_results(stdout: bytes, nonce: str, n_calls: int) -> tuple[dict[int, dict], str | None]:
    """The first result per call index (later lines for an index are ignored), and any load error."""
    results: dict[int, dict] = {}
    load_error = None
    prefix = nonce + " "
    for line in stdout.decode(errors="replace").splitlines():
        if not line.startswith(prefix):
            continue
        try:
            record = json.loads(line[len(prefix) :])
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
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
            values[f"__r{index}"] = decode(record["value"])
        except (ValueError, TypeError, KeyError, RecursionError):
            return False
    try:
        return bool(eval(assertion["expr"], {"__builtins__": SAFE_BUILTINS, "math": math}, values))  # noqa: S307 - the test's own expression, on plain data
    except Exception:
        return False
