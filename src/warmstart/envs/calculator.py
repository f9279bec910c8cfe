"""`calculator`: integer arithmetic with a calculator tool, where *when* to call it is the skill.

Small problems (operands of at most `small_digits` digits; a product's second factor has one) are
worked in the head, column by column, with the arithmetic environment's reasoning chain; large ones
(operands of `large_digits` digits) call the `calculator` tool and copy its result. The reference
teacher does exactly that, so the student learns the decision from its data: its SFT data is
multi-turn (call, tool result, answer), and so are its GRPO rollouts. The teacher slips in the head
with probability `teacher_error_rate` (one column off by one); the tool never slips. Verification is
the arithmetic environment's (the final reply's `Answer: <integer>` line), with the number of tool
calls reported beside it.

Small problems are chains rather than bare answers so that held-out ones can be solved: the eval
split holds problems never trained on, and a one-digit fact never seen cannot be inferred, while
column steps recur across problems.

The tool evaluates integer expressions with + - * and parentheses, parsed as a Python AST and nothing
else (no names, calls, powers or floats), at most 200 characters, with results capped in size.
"""

from __future__ import annotations

import ast
import json
import operator
import random
import time
import warnings

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..lm.toolcalls import call_arguments
from ..types import Message, Provenance, Task, ToolCall, ToolFunction, Trajectory, Verdict
from .arithmetic import (
    EXACT,
    Op,
    operand,
    problem_of_integer_task,
    reference_chain,
    require_problem,
    split_of,
    verify_integer_answer,
)

MAX_EXPRESSION_CHARS = 200
MAX_RESULT = 10**100
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
CALCULATOR_TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an integer expression with + - * and parentheses.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. 4821*937"}},
            "required": ["expression"],
        },
    },
}


class CalculatorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ops: list[Op] = Field(default_factory=lambda: ["+", "-", "*"], min_length=1)
    small_digits: int = Field(2, ge=1)  # up to this many digits: worked in the head
    large_digits: list[int] = Field(default_factory=lambda: [3, 4], min_length=1)  # the tool's job
    large_fraction: float = Field(0.5, ge=0.0, le=1.0)  # share of large problems among the tasks
    teacher_error_rate: float = Field(0.1, ge=0.0, le=1.0)  # slips in the head

    @model_validator(mode="after")
    def _large_is_larger(self):
        if min(self.large_digits) <= self.small_digits:
            raise ValueError("every large_digits entry must exceed small_digits")
        return self


def evaluate_expression(expression: str) -> int:
    """The value of an integer + - * expression; ValueError says what is wrong with it."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        with warnings.catch_warnings():  # e.g. "invalid decimal literal" for `12a`: the error says enough
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError("not an arithmetic expression") from None
    return _value(tree.body)


def _value(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _value(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        result = BINARY[type(node.op)](_value(node.left), _value(node.right))
        if abs(result) > MAX_RESULT:
            raise ValueError("result too large")
        return result
    raise ValueError("only integers, + - * and parentheses are allowed")


class Calculator:
    name = "calculator"
    tools: tuple[dict, ...] = (CALCULATOR_TOOL,)
    verify_workers = 1

    def __init__(self, options: CalculatorOptions | None = None):
        self.options = options or CalculatorOptions()

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        """`n` distinct tasks of `split`, a `large_fraction` share of them large."""
        rng = random.Random(f"calculator-{seed}")
        n_large = round(n * self.options.large_fraction)
        problems = self._draw("small", split, n - n_large, rng) + self._draw("large", split, n_large, rng)
        rng.shuffle(problems)
        return [self._task(a, op, b, split) for a, op, b in problems]

    def _problem(self, size: str, rng: random.Random) -> tuple[int, str, int]:
        op = rng.choice(self.options.ops)
        if size == "large":
            digits = rng.choice(self.options.large_digits)
            return operand(rng, digits), op, operand(rng, digits)
        digits = rng.randint(1, self.options.small_digits)
        return operand(rng, digits), op, operand(rng, 1 if op == "*" else digits)

    def _draw(self, size: str, split: str, n: int, rng: random.Random) -> list[tuple[int, str, int]]:
        found: dict[tuple[int, str, int], None] = {}  # a dict keeps the order problems were drawn in
        for _ in range(200 * n + 10_000):
            if len(found) == n:
                break
            problem = self._problem(size, rng)
            if split_of(*problem) == split:
                found[problem] = None
        if len(found) < n:
            raise ValueError(
                f"calculator: only {len(found)} distinct {size} {split} problems exist for these options, {n} asked"
            )
        return list(found)

    def _task(self, a: int, op: str, b: int, split: str) -> Task:
        size = "small" if max(a, b) < 10**self.options.small_digits else "large"
        return Task(
            id=f"calculator/{a}{op}{b}",
            env=self.name,
            prompt=[
                Message(
                    role="user",
                    content=f"What is {a}{op}{b}? A calculator tool is available. End with 'Answer: <integer>'.",
                )
            ],
            hidden={"answer": EXACT[op](a, b)},
            split=split,
            meta={"a": a, "op": op, "b": b, "size": size},
        )

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        expression = (call_arguments(call) or {}).get("expression")
        if not isinstance(expression, str):
            return 'error: calculator needs {"expression": "<integer expression>"}'
        try:
            return str(evaluate_expression(expression))
        except ValueError as exc:
            return f"error: {exc}"

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        verdict = verify_integer_answer(task, trajectory)
        verdict.details["tool_calls"] = sum(
            len(m.tool_calls or []) for m in trajectory.messages if m.role == "assistant"
        )
        return verdict

    def task_problem(self, task: Task) -> str | None:
        """Why a task from a user's file is not one this environment can verify and solve, or None."""
        return problem_of_integer_task(task, {"size": (str,)})

    def reference(self, task: Task, rng: random.Random) -> Trajectory:
        require_problem(task, ("a", "op", "b", "size"))
        a, op, b = task.meta["a"], task.meta["op"], task.meta["b"]
        if task.meta["size"] == "large":
            call = ToolCall(
                id="call-0-0",
                function=ToolFunction(name="calculator", arguments=json.dumps({"expression": f"{a}{op}{b}"})),
            )
            result = self.step(task, call, task.prompt)
            turns = [
                Message(role="assistant", content="", tool_calls=[call]),
                Message(role="tool", tool_call_id=call.id, content=result),
                Message(role="assistant", content=f"Answer: {result}"),
            ]
        else:
            lines, result = reference_chain(a, op, b, self.options.teacher_error_rate, rng)
            turns = [Message(role="assistant", reasoning="\n".join(lines), content=f"Answer: {result}")]
        return Trajectory(
            task_id=task.id,
            policy="reference",
            messages=[*task.prompt, *turns],
            provenance=Provenance(
                provider="reference",
                model="calculator-tool-user",
                sampling={"teacher_error_rate": self.options.teacher_error_rate},
                created=time.time(),
            ),
        )
