"""`math`: word problems and competition maths, graded on the final answer by Hugging Face's math-verify.

Tasks come from `math_sample.jsonl` (60 problems written for this project, half GSM8K-style word
problems, half MATH-style, each with a worked solution, its final answer, and for the tests the answer's
equivalent forms and near misses) or from `options.data` (any JSONL / parquet / datasets source,
`task_data.py`). A data answer may be a bare answer, a solution ending in `\\boxed{...}` (MATH) or one
ending in `#### N` (GSM8K): the final answer is taken from it the same way.

Verification: the final answer is extracted from the last assistant message — the last `\\boxed{...}`,
else the last `Answer:` line, else the last number (`last_number_fallback`) — and math-verify decides
whether it equals the reference (fractions, decimals, LaTeX, intervals, sets; units, `$` and `%` signs
stripped), read as `math_answers.py` says: a hedge (`5 = 3`, `5 \\to 3`, `5 (or 3)`) never passes, and
scientific notation, unit words and an inequality against an interval are read as meant. Reward is 1 for
an equivalent answer, plus `format_weight` for one given in a box or on an `Answer:` line. math-verify
bounds its work with SIGALRM, which exists only in the main thread: there it is used, elsewhere the check
runs in a helper thread that is waited for as long. A timeout or any error of math-verify is an infra
error (masked and counted), never a 0.
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import WarmstartError
from ..types import Message, Provenance, Task, ToolCall, Trajectory, Verdict
from .base import field_problem, final_assistant_text
from .math_answers import compare
from .task_data import DataSource, TaskRow, load_rows, prompt_messages

SAMPLE = Path(__file__).with_name("math_sample.jsonl")
MAX_REPLY_CHARS = 100_000
MAX_ANSWER_CHARS = 1_000  # an extracted answer longer than this is not a final answer: no sympy on it
BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
ANSWER_LINE_RE = re.compile(r"answer\**\s*(?:is)?\s*:\**[ \t]*(?P<answer>[^\n]*?)[ \t]*$", re.IGNORECASE | re.MULTILINE)
# The sign may be U+2212 (the typeset minus many models write): without it a right "−5" was read as 5.
NUMBER_RE = re.compile(r"[-\u2212]?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
GSM8K_FINAL_RE = re.compile(r"####\s*(?P<answer>[^\n]+?)\s*$")
MATH_DELIMITERS = (("\\(", "\\)"), ("\\[", "\\]"))
UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")  # a math delimiter; `\$` is a dollar sign


class MathOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataSource | None = None  # None: the bundled sample
    instruction: str = "Put your final answer in \\boxed{}."  # appended to each problem; "" for none
    format_weight: float = Field(0.0, ge=0.0)  # added to the reward for an answer in a box or an Answer: line
    last_number_fallback: bool = True  # no box and no Answer: line: the reply's last number is its answer
    timeout_s: int = Field(5, ge=1)  # math-verify's limit for parsing, and for comparing, one answer


def sample_source() -> DataSource:
    return DataSource(path=str(SAMPLE), id_field="id", solution_field="solution")


@dataclass(frozen=True)
class Extracted:
    text: str
    source: str  # "boxed" | "answer line" | "last number"

    @property
    def well_formed(self) -> bool:
        return self.source != "last number"


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}`, braces balanced; an unclosed box is left out."""
    found = []
    for match in BOX_RE.finditer(text):
        depth, start = 1, match.end()
        for index in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                found.append(text[start:index])
                break
    return found


def extract_answer(text: str, last_number_fallback: bool) -> Extracted | None:
    """The reply's final answer and where it was found, or None."""
    boxes = boxed_contents(text)
    if boxes:
        return Extracted(strip_math(boxes[-1]), "boxed")
    lines = [m.group("answer") for m in ANSWER_LINE_RE.finditer(text) if m.group("answer").strip("*. ")]
    if lines:
        return Extracted(strip_math(lines[-1]), "answer line")
    numbers = NUMBER_RE.findall(text) if last_number_fallback else []
    return Extracted(numbers[-1].replace("\u2212", "-"), "last number") if numbers else None


def strip_math(answer: str) -> str:
    """The answer without markdown emphasis, a final period or math delimiters (`$5$ cm` is `5 cm`)."""
    answer = UNESCAPED_DOLLAR_RE.sub("", answer).strip().strip("*").strip().removesuffix(".").strip()
    for opening, closing in MATH_DELIMITERS:
        if answer.startswith(opening) and answer.endswith(closing) and len(answer) >= len(opening + closing):
            return answer[len(opening) : len(answer) - len(closing)].strip()
    return answer


def gold_answer(text: str) -> str:
    """The final answer of a data answer field: the last box of a MATH solution, what follows `####` in
    a GSM8K one, else the text itself."""
    boxes = boxed_contents(text)
    if boxes:
        return strip_math(boxes[-1])
    gsm8k = GSM8K_FINAL_RE.search(text)
    return strip_math(gsm8k.group("answer") if gsm8k else text)


class MathVerifyFailed(Exception):
    """math-verify timed out or raised: the answer could not be judged."""


class MathVerifyTimedOut(MathVerifyFailed):
    """math-verify ran past its time limit (the reply's answer may be what made it slow)."""


def call_bounded(check: Callable[[int | None], Any], timeout_s: int) -> Any:
    """`check(timeout)` bounded to about `timeout_s` per math-verify call. In the main thread math-verify's
    own SIGALRM timeout does it. Elsewhere signals cannot be used (math-verify raises), so the check runs
    with its timeouts off in a daemon thread that is waited for; one past its time is abandoned, not
    stopped (Python cannot stop a thread), and its verdict is an infra error."""
    if threading.current_thread() is threading.main_thread():
        return guarded(check, timeout_s)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = guarded(check, None)
        except MathVerifyFailed as exc:
            outcome["error"] = exc

    helper = threading.Thread(target=run, name="math-verify", daemon=True)
    helper.start()
    helper.join(3 * timeout_s)  # a parse of each side and a comparison, each allowed timeout_s
    if helper.is_alive():
        raise MathVerifyTimedOut(f"math-verify took more than {3 * timeout_s} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def guarded(check: Callable[[int | None], Any], timeout: int | None) -> Any:
    try:
        return check(timeout)
    except BaseException as exc:  # math-verify's TimeoutException is a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        failure = MathVerifyTimedOut if type(exc).__name__ == "TimeoutException" else MathVerifyFailed
        raise failure(f"math-verify failed: {type(exc).__name__}: {str(exc)[:200]}") from None


def equivalent(gold: str, answer: str, timeout: int | None) -> tuple[bool, bool]:
    """(whether `answer` equals `gold`, whether math-verify could parse `answer` as maths at all)."""
    comparison = compare(gold, answer, timeout)
    return comparison.same, comparison.parsed


class MathEnv:
    name = "math"
    tools: tuple[dict, ...] = ()  # single-turn: the solution is written, then its final answer
    verify_workers = 1  # a comparison takes milliseconds: a pool's start would cost more than it saves

    def __init__(self, options: MathOptions | None = None):
        self.options = options or MathOptions()

    @property
    def source(self) -> DataSource:
        return self.options.data or sample_source()

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        pool = [self._task(row) for row in load_rows(self.source, "env.options.data") if row.split == split]
        if n > len(pool):
            raise ValueError(f"math: only {len(pool)} {split} problems in {self.source.path}, {n} asked")
        random.Random(f"math-{seed}").shuffle(pool)
        return pool[:n]

    def _task(self, row: TaskRow) -> Task:
        text = f"{row.prompt}\n\n{self.options.instruction}" if self.options.instruction else row.prompt
        hidden = {"answer": gold_answer(row.answer)}
        if not hidden["answer"].strip():  # `\boxed{}`, `$$`, `#### `: no reply could pass, every sample would score 0
            raise WarmstartError(
                f"env.options.data: {self.source.path}: row {row.id!r}: field {self.source.answer_field!r} holds "
                f"no final answer ({row.answer[-60:]!r} leaves nothing once its box, `####` or `$` are read)"
            )
        if row.solution is not None:
            hidden["solution"] = row.solution
        return Task(
            id=f"math/{row.id}",
            env=self.name,
            prompt=prompt_messages(self.source, text),
            hidden=hidden,
            split=row.split,
        )

    def task_problem(self, task: Task) -> str | None:
        """Why a task from a user's file (tasks.train_file / eval_file) cannot be verified, or None."""
        problem = field_problem(task.hidden, {"answer": (str,)}, "hidden")
        if problem is None and not strip_math(task.hidden["answer"]).strip():
            return "hidden.answer is blank: no reply could pass"
        return problem

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        raise ValueError("math has no tools")  # unreachable: tool calls are parsed only where tools exist

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        text = final_assistant_text(trajectory)
        if not text:
            return failed("no assistant reply")
        if len(text) > MAX_REPLY_CHARS:
            return failed(f"reply longer than {MAX_REPLY_CHARS} chars")
        found = extract_answer(text, self.options.last_number_fallback)
        if found is None:
            what = "no \\boxed{}, no 'Answer:' line" + (", no number" if self.options.last_number_fallback else "")
            return failed(f"no final answer ({what})")
        return self.judge(task.hidden["answer"], found)

    def judge(self, gold: str, found: Extracted) -> Verdict:
        details: dict[str, Any] = {"extracted": found.text, "source": found.source, "expected": gold}
        if len(found.text) > MAX_ANSWER_CHARS:
            return failed(f"final answer longer than {MAX_ANSWER_CHARS} chars", details)
        bonus = self.options.format_weight if found.well_formed else 0.0
        try:
            comparison = call_bounded(lambda t: compare(gold, found.text, t), self.options.timeout_s)
        except MathVerifyTimedOut as exc:
            if self.gold_is_slow(gold):
                return Verdict(reward=0.0, passed=False, details=details, infra_error=str(exc))
            # The answer made it slow (`9^{9^{9^{9}}}`): masked, a policy unsure of an answer could write one
            # such and drop out of eval's pass@1 instead of scoring 0.
            reason = f"math-verify could not compare it within timeout_s = {self.options.timeout_s} s"
            return Verdict(reward=bonus, passed=False, details={**details, "reason": reason})
        except MathVerifyFailed as exc:
            return Verdict(reward=0.0, passed=False, details=details, infra_error=str(exc))
        if comparison.same:
            return Verdict(reward=1.0 + bonus, passed=True, details=details)
        reason = comparison.hedge or (
            "not equivalent to the expected answer"
            if comparison.parsed
            else "not parsable as maths, and not the same text"
        )
        return Verdict(reward=bonus, passed=False, details={**details, "reason": reason})

    def gold_is_slow(self, gold: str) -> bool:
        """Whether the expected answer runs math-verify out of time against a plain number (then no reply could
        be judged: the task's fault, not the reply's)."""
        try:
            call_bounded(lambda t: compare(gold, "0", t), self.options.timeout_s)
        except MathVerifyFailed:
            return True
        return False

    def reference(self, task: Task, rng: random.Random) -> Trajectory:
        solution = task.hidden.get("solution")
        if solution is None:
            raise WarmstartError(
                f"math: task {task.id} has no worked solution for the reference teacher: "
                "set env.options.data.solution_field, or use another teacher"
            )
        answer = Message(
            role="assistant", reasoning=solution, content=f"The final answer is $\\boxed{{{task.hidden['answer']}}}$."
        )
        return Trajectory(
            task_id=task.id,
            policy="reference",
            messages=[*task.prompt, answer],
            provenance=Provenance(provider="reference", model="math-worked-solutions", created=time.time()),
        )


def failed(reason: str, details: dict | None = None) -> Verdict:
    return Verdict(reward=0.0, passed=False, details={**(details or {}), "reason": reason})
