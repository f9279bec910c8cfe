"""The arithmetic environment: seeded disjoint splits, an honest prompt, a correct solver, a verifier that holds."""

from __future__ import annotations

import random
import re
import time

import pytest

from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions
from warmstart.types import Message, Provenance, Task, Trajectory

OPTION_SETS = [
    {},
    {"ops": ["+"], "digits": [1]},
    {"ops": ["-", "*"], "digits": [2, 3], "mul_digits": 2},
    {"ops": ["+", "-", "*"], "digits": [1, 2, 3], "mul_digits": 1},
]
# The prompt as documented, written out here rather than imported, so a change to it fails a test.
PROMPT_RE = re.compile(r"What is (\d+)([-+*])(\d+)\? End with 'Answer: <integer>'\.")


def sizes(options: dict) -> tuple[int, int]:
    """(train, eval) sizes that exist for the options: "+" on one digit has only 100 problems."""
    return (60, 8) if options.get("digits") == [1] and options.get("ops") == ["+"] else (800, 100)


def env_with(**options) -> Arithmetic:
    return Arithmetic(ArithmeticOptions(**options))


def task_with_answer(answer: int) -> Task:
    return Task(
        id="t", env="arithmetic", prompt=[Message(role="user", content="q")], hidden={"answer": answer}, split="eval"
    )


def reply(task: Task, *contents: str | None) -> Trajectory:
    messages = [*task.prompt, *(Message(role="assistant", content=c) for c in contents)]
    return Trajectory(
        task_id=task.id,
        policy="test",
        messages=messages,
        provenance=Provenance(provider="test", model="m", created=0.0),
    )


# --- tasks ----------------------------------------------------------------------------------------


def test_tasks_are_reproducible_per_seed():
    env = env_with()
    assert env.tasks("train", 300, seed=1) == env_with().tasks("train", 300, seed=1)
    assert env.tasks("eval", 50, seed=1) == env.tasks("eval", 50, seed=1)
    assert env.tasks("train", 300, seed=1) != env.tasks("train", 300, seed=2)


@pytest.mark.parametrize("options", OPTION_SETS)
def test_train_and_eval_are_disjoint_and_distinct(options):
    env = env_with(**options)
    n_train, n_eval = sizes(options)
    for seed in range(4):
        train, eval_ = env.tasks("train", n_train, seed), env.tasks("eval", n_eval, seed)
        assert len(train) == n_train and len(eval_) == n_eval
        assert {t.split for t in train} == {"train"} and {t.split for t in eval_} == {"eval"}
        for split in (train, eval_):
            assert len({t.id for t in split}) == len(split)  # no task twice
        assert not {t.id for t in train} & {t.id for t in eval_}
        assert not {t.prompt[0].content for t in train} & {t.prompt[0].content for t in eval_}


def test_split_does_not_depend_on_seed():
    # A problem is eval under one seed and train under another would leak eval into training.
    env = env_with(ops=["+"], digits=[2])
    eval_ids = {t.id for seed in range(5) for t in env.tasks("eval", 100, seed)}
    train_ids = {t.id for seed in range(5) for t in env.tasks("train", 600, seed)}
    assert not eval_ids & train_ids


def test_asking_for_more_tasks_than_exist_is_an_error():
    with pytest.raises(ValueError, match="distinct train tasks"):
        env_with(ops=["+"], digits=[1]).tasks("train", 200, seed=0)


@pytest.mark.parametrize("options", OPTION_SETS)
def test_prompt_is_exactly_the_documented_text(options):
    for task in env_with(**options).tasks("train", sizes(options)[0], seed=5):
        assert len(task.prompt) == 1 and task.prompt[0].role == "user"
        match = PROMPT_RE.fullmatch(task.prompt[0].content)
        assert match, task.prompt[0].content  # nothing from `hidden` or `meta` rendered into it
        a, op, b = int(match[1]), match[2], int(match[3])
        assert task.hidden == {"answer": {"+": a + b, "-": a - b, "*": a * b}[op]}
        assert op in options.get("ops", "+-*")
        assert max(len(str(a)), len(str(b))) in options.get("digits", [1, 2])


# --- the reference solver ------------------------------------------------------------------------


def reference_failures(env: Arithmetic, tasks: list[Task]) -> int:
    failures = 0
    for i, task in enumerate(tasks):
        trajectory = env.reference(task, random.Random(i))
        assert trajectory.messages[-1].reasoning  # the column-by-column chain is there
        failures += not env.verify(task, trajectory).passed
    return failures


@pytest.mark.parametrize("mul_digits", [1, 2])
def test_reference_without_slips_always_passes(mul_digits):
    env = env_with(digits=[1, 2, 3], mul_digits=mul_digits, teacher_error_rate=0.0)
    tasks = env.tasks("train", 1200, seed=0)
    assert {t.meta["op"] for t in tasks} == {"+", "-", "*"}
    assert {t.meta["digits"] for t in tasks} == {1, 2, 3}
    assert any(t.meta["op"] == "*" and t.meta["b"] >= 10 for t in tasks) == (mul_digits == 2)
    assert any(t.meta["op"] == "-" and t.meta["a"] < t.meta["b"] for t in tasks)  # negative results too
    assert reference_failures(env, tasks) == 0


@pytest.mark.parametrize("mul_digits", [1, 2])
def test_reference_with_certain_slip_always_fails(mul_digits):
    # A slip must carry through to a wrong answer, or verification would keep a corrupt chain.
    env = env_with(digits=[1, 2, 3], mul_digits=mul_digits, teacher_error_rate=1.0)
    tasks = env.tasks("train", 1000, seed=1)
    assert reference_failures(env, tasks) == len(tasks)


def test_reference_slip_rate_is_about_the_configured_rate():
    env = env_with(digits=[1, 2, 3], mul_digits=2, teacher_error_rate=0.1)
    tasks = env.tasks("train", 2000, seed=2)
    assert 0.06 < reference_failures(env, tasks) / len(tasks) < 0.14  # +-3 sd of Binomial(2000, 0.1)


# --- the verifier --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, content",
    [
        (12, "Answer: 12"),
        (12, "Let me add the columns.\n2+0=2\nAnswer: 12\nThat is all."),
        (-7, "Answer: -7"),
        (13, "Answer: 12\nWait, I slipped.\nAnswer: 13"),  # the last Answer line counts
    ],
)
def test_verifier_passes_correct_answers(answer, content):
    verdict = Arithmetic().verify(task_with_answer(answer), reply(task_with_answer(answer), content))
    assert verdict.passed and verdict.reward == 1.0 and verdict.infra_error is None


@pytest.mark.parametrize(
    "answer, contents",
    [
        (12, [None]),
        (12, [""]),
        (12, ["The answer is 12."]),  # no Answer line
        (1, ["Answer: 1e5"]),  # 100000, not 1
        (100000, ["Answer: 1e5"]),
        (1, ["Answer: 1.5"]),
        (3, ["Answer: \u0663"]),  # ARABIC-INDIC DIGIT THREE
        (12, ["Answer: \uff11\uff12"]),  # fullwidth 12
        (12, ["Answer: 12\nAnswer: 13"]),  # the last one counts, and it is wrong
        (12, ["Answer: 12", "Answer: 13"]),  # only the final assistant message counts
        (int("9" * 64), ["Answer: " + "9" * 10_000]),
        (12, ["Answer: 12\n" + "x" * 1_000_000]),
        (12, []),  # no assistant message at all
    ],
    ids=lambda v: repr(v)[:30],
)
def test_verifier_fails_malformed_or_wrong_replies_with_a_reason(answer, contents):
    task = task_with_answer(answer)
    started = time.monotonic()
    verdict = Arithmetic().verify(task, reply(task, *contents))
    assert time.monotonic() - started < 1.0  # no pathological regex or int() on huge input
    assert not verdict.passed and verdict.reward == 0.0
    assert verdict.details.get("reason")  # says why
    assert verdict.infra_error is None  # a bad answer is the policy's failure, not the verifier's


def test_verifier_never_raises_on_fuzzed_replies():
    rng = random.Random(1234)
    pieces = [
        "Answer:",
        "Answer: ",
        "-",
        "12",
        "0",
        "9" * 70,
        "\n",
        " ",
        "\t",
        "\u0663",
        "e5",
        ".",
        "<think>",
        "\x00",
        "é",
        "💥",
    ]
    task = task_with_answer(12)
    for _ in range(3000):
        content = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        verdict = Arithmetic().verify(task, reply(task, content))
        assert verdict.passed == (verdict.reward == 1.0)
        assert verdict.passed or verdict.details.get("reason"), content
