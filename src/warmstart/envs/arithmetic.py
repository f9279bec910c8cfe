"""`arithmetic`: integer +, -, * with a step-by-step reasoning chain (the reasoning-chain skill).

Answer format (what the verifier reads): the final assistant message's content must contain a line
that ends with `Answer: <integer>` (a final period is allowed); the last such line counts. Only ASCII digits are accepted, at most 64 of them,
so neither Unicode digits nor huge numbers can trip `int()`.

Train and eval splits are disjoint by construction: a problem's split is decided by a hash of the
problem itself, so no seed or size can put one problem in both.

The reference solver works column by column, like long arithmetic on paper, and writes each column
as a line of the chain, ending with the digits found so far: the last line holds the answer. With probability `teacher_error_rate` it slips once (one column's sum off by
one) and carries the slip through to a wrong final answer, as a real teacher's plausible mistake
would: that is what verification has to catch.
"""

from __future__ import annotations

import random
import re
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import WarmstartError
from ..types import Message, Provenance, Task, ToolCall, Trajectory, Verdict
from .base import field_problem, final_assistant_text, hash_split

Op = Literal["+", "-", "*"]
ANSWER_RE = re.compile(r"(?:^|[ \t])Answer:[ \t]*(-?[0-9]{1,64})[ \t]*\.?[ \t]*$", re.MULTILINE)
MAX_REPLY_CHARS = 100_000
EVAL_BUCKETS = 8  # one problem in eight belongs to eval


class ArithmeticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ops: list[Op] = Field(default_factory=lambda: ["+", "-", "*"], min_length=1)
    digits: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)  # difficulty levels
    mul_digits: int = Field(1, ge=1)  # digits of the second factor of a product
    teacher_error_rate: float = Field(0.1, ge=0.0, le=1.0)


def split_of(a: int, op: str, b: int) -> str:
    return hash_split(f"{a}{op}{b}", EVAL_BUCKETS)


def prompt_text(a: int, op: str, b: int) -> str:
    return f"What is {a}{op}{b}? End with 'Answer: <integer>'."


def operand(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _digits_low_first(n: int, width: int) -> list[int]:
    return [(n // 10**i) % 10 for i in range(width)]


def _so_far(result: int, columns: int) -> str:
    """The answer digits found so far, leading zeros kept: the last line of a chain is the answer."""
    return str(result).zfill(columns)


def chain_add(a: int, b: int, slip: int | None) -> tuple[list[str], int]:
    """Column addition; `slip` is the column whose sum is off by one (None: no mistake)."""
    width = max(len(str(a)), len(str(b)))
    lines, carry, result = [], 0, 0
    for i, (x, y) in enumerate(zip(_digits_low_first(a, width), _digits_low_first(b, width))):
        total = x + y + carry + (1 if i == slip else 0)
        result += (total % 10) * 10**i
        lines.append(f"{x}+{y}+{carry}={total} carry {total // 10}, so far {_so_far(result, i + 1)}")
        carry = total // 10
    if carry:
        result += carry * 10**width
        lines.append(f"carry {carry}, so far {result}")
    return lines, result


def chain_sub(a: int, b: int, slip: int | None) -> tuple[list[str], int]:
    if a < b:
        lines, result = chain_sub(b, a, slip)
        return [f"{a}<{b} so compute -({b}-{a})"] + lines, -result
    width = len(str(a))
    lines, borrow, result = [], 0, 0
    for i, (x, y) in enumerate(zip(_digits_low_first(a, width), _digits_low_first(b, width))):
        diff = x - y - borrow + (1 if i == slip else 0)
        next_borrow = 1 if diff < 0 else 0
        result += (diff % 10) * 10**i
        # A negative column difference is written out and then fixed with a borrow: one step at a time.
        step = f"{diff}+10={diff + 10}" if next_borrow else f"{diff}"
        lines.append(f"{x}-{y}-{borrow}={step} borrow {next_borrow}, so far {_so_far(result, i + 1)}")
        borrow = next_borrow
    return lines, result  # a >= b, so no borrow is left over


def chain_mul_digit(a: int, d: int, slip: int | None) -> tuple[list[str], int]:
    width = len(str(a))
    lines, carry, result = [], 0, 0
    for i, x in enumerate(_digits_low_first(a, width)):
        total = x * d + carry + (1 if i == slip else 0)
        result += (total % 10) * 10**i
        lines.append(f"{x}*{d}={x * d}+{carry}={total} carry {total // 10}, so far {_so_far(result, i + 1)}")
        carry = total // 10
    if carry:
        result += carry * 10**width
        lines.append(f"carry {carry}, so far {result}")
    return lines, result


def chain_mul(a: int, b: int, slip: int | None) -> tuple[list[str], int]:
    if b < 10:
        return chain_mul_digit(a, b, slip)
    lines, total = [], 0
    for j, d in enumerate(_digits_low_first(b, len(str(b)))):
        part_lines, part = chain_mul_digit(a, d, slip if j == 0 else None)
        shifted = part * 10**j
        lines += [f"{a}*{d}:"] + part_lines + [f"{a}*{d * 10**j}={shifted}"]
        if j:
            add_lines, new_total = chain_add(total, shifted, None)
            lines += [f"{total}+{shifted}:"] + add_lines
            total = new_total
        else:
            total = shifted
    return lines, total


def reference_chain(a: int, op: str, b: int, error_rate: float, rng: random.Random) -> tuple[list[str], int]:
    """The column-by-column chain, with one slip in a random column with probability `error_rate`."""
    columns = len(str(a)) if op == "*" else max(len(str(a)), len(str(b)))
    slip = rng.randrange(columns) if rng.random() < error_rate else None
    return CHAINS[op](a, b, slip)


def problem_of_integer_task(task: Task, meta: dict[str, tuple[type, ...]] | None = None) -> str | None:
    """What an arithmetic-family task lacks: an integer answer (what verification reads), and, where the
    task names its problem in `meta` (a, op, b and any further keys an environment names: what the reference
    solver works from), the whole problem, whose result the answer must be. A task without `meta` is one for
    a teacher other than the reference (`reference` refuses it)."""
    wanted = {"a": (int,), "op": (str,), "b": (int,), **(meta or {})}
    problem = field_problem(task.hidden, {"answer": (int,)}, "hidden")
    if problem or not any(key in task.meta for key in wanted):
        return problem
    problem = field_problem(task.meta, wanted, "meta")
    if problem:
        return problem
    a, op, b = task.meta["a"], task.meta["op"], task.meta["b"]
    if op not in EXACT:
        return f"meta.op must be one of {' '.join(EXACT)}, not {op!r}"
    if EXACT[op](a, b) != task.hidden["answer"]:
        return f"hidden.answer {task.hidden['answer']} is not {a}{op}{b} = {EXACT[op](a, b)}"
    return None


def require_problem(task: Task, meta: tuple[str, ...] = ("a", "op", "b")) -> None:
    """The reference solver works the problem from `meta`: a task without it (a user's, answer only) is one
    error naming it, not a KeyError."""
    missing = [key for key in meta if key not in task.meta]
    if missing:
        raise WarmstartError(
            f"task {task.id}: no meta.{missing[0]}, so the reference teacher cannot solve it (give the tasks "
            "meta a, op, b, or use another teacher)"
        )


def verify_integer_answer(task: Task, trajectory: Trajectory) -> Verdict:
    """Reward 1 when the final reply's last `Answer: <integer>` line equals `task.hidden["answer"]`."""
    text = final_assistant_text(trajectory)
    if text is None:
        return Verdict(reward=0.0, passed=False, details={"reason": "no assistant reply"})
    if len(text) > MAX_REPLY_CHARS:
        return Verdict(reward=0.0, passed=False, details={"reason": f"reply longer than {MAX_REPLY_CHARS} chars"})
    matches = ANSWER_RE.findall(text)
    if not matches:
        return Verdict(reward=0.0, passed=False, details={"reason": "no 'Answer: <integer>' line"})
    answer = int(matches[-1])
    passed = answer == task.hidden["answer"]
    details = {"answer": answer} if passed else {"answer": answer, "reason": "wrong answer"}
    return Verdict(reward=1.0 if passed else 0.0, passed=passed, details=details)


CHAINS = {"+": chain_add, "-": chain_sub, "*": chain_mul}
EXACT = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class Arithmetic:
    name = "arithmetic"
    tools: tuple[dict, ...] = ()  # single-turn: the chain is worked in the head
    verify_workers = 1  # verification is a regex: nothing to gain from a pool

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        raise ValueError("arithmetic has no tools")  # unreachable: tool calls are parsed only where tools exist

    def __init__(self, options: ArithmeticOptions | None = None):
        self.options = options or ArithmeticOptions()

    def _problem(self, rng: random.Random) -> tuple[int, str, int]:
        op = rng.choice(self.options.ops)
        digits = rng.choice(self.options.digits)
        second = min(digits, self.options.mul_digits) if op == "*" else digits
        return operand(rng, digits), op, operand(rng, second)

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        rng = random.Random(f"arithmetic-{seed}")
        seen: set[tuple[int, str, int]] = set()
        tasks: list[Task] = []
        attempts = 0
        while len(tasks) < n:
            attempts += 1
            if attempts > 200 * n + 10_000:
                raise ValueError(
                    f"arithmetic: only {len(tasks)} distinct {split} tasks exist for these options, {n} asked"
                )
            a, op, b = problem = self._problem(rng)
            if problem in seen or split_of(a, op, b) != split:
                continue
            seen.add(problem)
            tasks.append(self._task(a, op, b, split))
        return tasks

    def _task(self, a: int, op: str, b: int, split: str) -> Task:
        return Task(
            id=f"arithmetic/{a}{op}{b}",
            env=self.name,
            prompt=[Message(role="user", content=prompt_text(a, op, b))],
            hidden={"answer": EXACT[op](a, b)},
            split=split,
            meta={"a": a, "op": op, "b": b, "digits": len(str(max(a, b)))},
        )

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        return verify_integer_answer(task, trajectory)

    def task_problem(self, task: Task) -> str | None:
        """Why a task from a user's file is not one this environment can verify and solve, or None."""
        return problem_of_integer_task(task)

    def reference(self, task: Task, rng: random.Random) -> Trajectory:
        require_problem(task)
        lines, result = reference_chain(
            task.meta["a"], task.meta["op"], task.meta["b"], self.options.teacher_error_rate, rng
        )
        answer = Message(role="assistant", reasoning="\n".join(lines), content=f"Answer: {result}")
        return Trajectory(
            task_id=task.id,
            policy="reference",
            messages=[*task.prompt, answer],
            provenance=Provenance(
                provider="reference",
                model="arithmetic-column-solver",
                sampling={"teacher_error_rate": self.options.teacher_error_rate},
                created=time.time(),
            ),
        )
