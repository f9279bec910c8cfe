"""The `math` verifier against hedging and notation: an answer that offers more than one value (`5 = 3`,
`5 \\to 3`, `5 (or 3)`) fails with a reason that says so, where math-verify alone passed it as its last
value; scientific notation, unit words and an inequality against an interval pass, where math-verify alone
failed them; what was right stays right (names like `x = 3`, true equations, sets, units, maths words);
and a timeout in a hedged answer is still an infra error, on the main thread and off it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from warmstart.envs.math import Extracted, MathEnv, MathOptions, equivalent
from warmstart.types import Message, Provenance, Task, Trajectory

SEVERAL = "answer offers more than one value"
RELATION = "a relation whose sides are not all the expected answer"
ARROWS = "an arrow chain whose parts are not all the expected answer"
UNPARSED = "not parsable as maths, and not the same text"
APPROXIMATION = "an approximation whose sides are not all the expected answer"
CHANGED = "words after the number that change it or offer another"

# (gold, answer, reason): math-verify alone passed every one of these as the gold.
HEDGES = [
    ("3", "5 = 3", RELATION),  # Eq(5, 3): it compared the right side
    ("3", "x=5=3", RELATION),
    ("3", "3 = 5 = 3", RELATION),
    ("(4, 3)", "(4, 5 = 3)", RELATION),  # an equation inside a tuple, read as its right side
    ("3", r"5 \equiv 3", RELATION),
    ("3", r"5 \to 3", ARROWS),  # what is left of an arrow was dropped
    ("3", r"5 \rightarrow 3", ARROWS),
    ("3", r"5 \Rightarrow 3", ARROWS),
    ("3", r"5 \implies 3", ARROWS),
    ("3", r"5 \longrightarrow 3", ARROWS),
    ("3", r"5 \mapsto 3", ARROWS),
    ("3", r"5 \iff 3", ARROWS),
    ("3", r"5 \Leftarrow 3", ARROWS),
    ("3", r"5 \to 3 \to 3", ARROWS),
    ("3", r"x = 5 \Rightarrow x = 3", ARROWS),
    ("3", "5 (or 3)", SEVERAL),  # read as `5 (, 3)`, then as its last number
    ("3", "5 (or maybe 3)", SEVERAL),
    ("3", r"5 \left(or 3\right)", SEVERAL),
    ("5", r"5 \text{ (or 3)}", SEVERAL),  # a final \text{...} was dropped as a unit
    ("7", r"7 \text{ goats (or 8)}", SEVERAL),
    ("3", r"3 \approx 5", APPROXIMATION),  # read as its first side
    ("3", "3 \u2248 5", APPROXIMATION),
    ("3", r"3 \simeq 5", APPROXIMATION),
    ("3", r"3 \approx 3.4", APPROXIMATION),  # 3.4 shows one decimal: 3 is not within 0.05 of it
    (r"\pi", r"\pi \approx 3.2", APPROXIMATION),
    ("3", r"3 \text{ five}", CHANGED),  # a final \text{...} was dropped as a unit
    ("3", r"3 \text{ or five}", CHANGED),
    ("3", r"3 \text{ (approximately five)}", CHANGED),
    ("3", r"3 \text{ dozen}", CHANGED),  # 36
    ("100", r"100 \text{ thousand}", CHANGED),
    ("5", r"5 \text{ factorial}", CHANGED),
    ("3", r"5 \lor 3", UNPARSED),  # LaTeX it cannot read was read again as plain text: its last number
    ("3", "5 | 3", UNPARSED),
    ("3", r"5 \star 3", UNPARSED),
]

# (gold, answer): math-verify alone failed every one of these.
NOTATIONS = [
    ("1000000", "1e6"),  # read as 1·e·6
    ("1500", "1.5e3"),
    ("-300", "-3e2"),
    ("0.000025", "2.5e-05"),
    ("2.5e-05", "0.000025"),  # a data answer read from a JSON number
    ("1000000", "x = 1e6"),
    ("1000000", "1e6 dollars"),
    ("18", "18.00 dollars"),  # read as a product of letters
    ("25", "25 km per hour"),
    ("5", "5 cm squared"),
    (r"(-\infty, 2)", "x<2"),
    (r"(-\infty, 2]", r"x \le 2"),
    (r"(-1, \infty)", "x > -1"),
    ("(-1, 2)", "-1 < x < 2"),
    (r"(2, \infty)", "2 < x"),
    (r"(-\infty, 2) \cup (2, \infty)", r"x \ne 2"),
    (r"\{3,5\}", "5 (or 3)"),  # the alternatives' set, as `5 or 3`
    (r"\{3,5\}", "5 (or maybe 3)"),
    ("3", "3 = x"),  # x names the value 3
    (r"\pi", r"\pi \approx 3.14"),  # a value and its rounding: either is the answer
    ("3.14", r"\pi \approx 3.14"),
    (r"\sqrt{2}", r"\sqrt{2} \approx 1.414"),
    (r"\frac{1}{3}", r"\frac{1}{3} \approx 0.33"),
    ("3", r"x = 3 \approx 3.0"),
]

# (gold, answer, passes): the same verdict as math-verify alone.
KEPT = [
    ("3", "x = 3", True),
    ("5", "2+3=5", True),  # a true equation whose values are all the gold
    ("x=3", "3", True),
    ("3", "f(2) = 3", True),
    ("5", r"\lim_{x \to 3} f(x) = 5", True),  # an arrow inside braces is no arrow chain
    ("3", r"x \to 3", True),
    ("3", r"3 \Rightarrow x = 3", True),
    ("x + 3", "y = x + 3", True),
    (r"\frac{3x - 1}{2}", r"f^{-1}(x) = \frac{3x - 1}{2}", True),
    ("3", "3 or 5", False),
    (r"\{3,5\}", "3, 5", True),
    (r"\{3,5\}", "3 or 5", True),
    (r"\{3,5\}", "x = 3 or x = 5", True),
    (r"\{3,5\}", "3, 5 = 3", False),
    ("3", r"5 \approx 3", False),
    ("3", r"5 \neq 3", False),
    ("3", "5 > 3", False),
    (r"3 \pi", r"3\pi", True),
    ("3", "3 pi", False),  # maths words are no units
    (r"3 \pi", "3 pi", False),
    ("3", "3 sqrt", False),
    ("3", "3 sin", False),
    ("3", "3 log", False),
    ("5", "5 x", False),  # nor is a single letter: 5x
    ("5", "5 squared", False),
    ("3", "3 thousand", False),
    ("3", "3 or five", False),
    ("0.002", "2E-3", True),
    ("5", "5 cm", True),
    ("12", "12 apples", True),
    ("18", r"18 \text{ dollars}", True),
    ("18", r"18 \mbox{ dollars}", True),
    ("152", r"152\text{ cm}^2", True),
    ("25", r"25 \, \text{km/h}", True),
    ("3", r"3^{\circ}\text{C}", True),
    ("1500", "1.5E+3", True),
    (r"\frac{1}{2}", r"\frac{1}{2} (or 0.5)", True),  # two forms of one value
    # Not units (review 79: each had passed once unit words were dropped): fraction and ordinal words,
    # plural multipliers, factorial, Greek letters, and a word after an expression rather than a number.
    ("3", "3 fifths", False),
    ("1", "1 sixth", False),
    ("5", "5 factorial", False),
    ("2", "2 thousands", False),
    ("3", "3 millions", False),
    ("3", "1 + 2 phi", False),
    ("1250", "1,250 people", True),
    ("3", r"\$3 dollars", True),
    ("0.5", r"\frac{1}{2} cup", True),
    ("3", r"x \approx 3", True),
    ("90", r"90 \text{ degrees}", True),  # a final text without value words is still a unit
    (r"\{3,5\}", r"3 \text{ or } 5", True),  # a text between values is read: {3, 5}
]


def judge(gold: str, answer: str, env: MathEnv | None = None):
    return (env or MathEnv()).judge(gold, Extracted(answer, "boxed"))


@pytest.mark.parametrize("gold, answer, reason", HEDGES)
def test_a_hedge_is_not_equivalent(gold, answer, reason):
    assert equivalent(gold, answer, 5)[0] is False


@pytest.mark.parametrize("gold, answer, reason", HEDGES)
def test_a_hedge_fails_and_says_why(gold, answer, reason):
    verdict = judge(gold, answer)
    assert (verdict.passed, verdict.reward, verdict.infra_error) == (False, 0.0, None)
    assert verdict.details == {"extracted": answer, "source": "boxed", "expected": gold, "reason": reason}


@pytest.mark.parametrize("gold, answer", NOTATIONS)
def test_a_common_notation_passes(gold, answer):
    assert equivalent(gold, answer, 5) == (True, True)
    verdict = judge(gold, answer)
    assert verdict.passed and verdict.reward == 1.0, verdict


@pytest.mark.parametrize("gold, answer, passes", KEPT)
def test_what_was_right_or_wrong_stays_so(gold, answer, passes):
    assert equivalent(gold, answer, 5)[0] is passes
    assert judge(gold, answer).passed is passes


def test_several_values_against_a_set_pass_and_against_one_value_say_so():
    assert judge(r"\{3, 5\}", "3 or 5").passed
    assert judge("3", "3 or 5").details["reason"] == SEVERAL
    assert judge("3", r"x = 5 \text{ or } 3").details["reason"] == SEVERAL


def task(gold: str) -> Task:
    return Task(
        id="math/h", env="math", prompt=[Message(role="user", content="q")], hidden={"answer": gold}, split="train"
    )


def reply(text: str) -> Trajectory:
    return Trajectory(
        task_id="math/h",
        policy="test",
        messages=[Message(role="user", content="q"), Message(role="assistant", content=text)],
        provenance=Provenance(provider="test", model="m", created=0.0),
    )


@pytest.mark.parametrize(
    "text, passed",
    [
        ("Either way, $\\boxed{5 \\to 3}$.", False),
        ("Answer: 5 (or 3)", False),
        ("So $\\boxed{x = 5 = 3}$.", False),
        ("So $\\boxed{x = 3}$.", True),
        ("Answer: 3 apples", True),
    ],
)
def test_a_reply_is_verified_with_the_hedge_rules(text, passed):
    env = MathEnv(MathOptions(format_weight=0.5))
    verdict = env.verify(task("3"), reply(text))
    assert (verdict.passed, verdict.reward) == (passed, 1.5 if passed else 0.5), verdict


def test_a_timeout_inside_a_hedge_is_a_wrong_answer():
    env = MathEnv(MathOptions(timeout_s=1))
    for answer in (r"42 \to 10^{10^{10}}", r"x = 42 = 10^{10^{10}}", r"x = 10^{10^{10}}"):
        verdict = judge("42", answer, env)
        assert (verdict.passed, verdict.infra_error) == (False, None), answer
        assert verdict.details["reason"] == "math-verify could not compare it within timeout_s = 1 s", answer


def test_hedges_are_judged_the_same_off_the_main_thread():
    cases = [(gold, answer) for gold, answer, _ in HEDGES[::3]] + NOTATIONS[::3]
    here = [judge(gold, answer) for gold, answer in cases]
    with ThreadPoolExecutor(4) as pool:
        there = list(pool.map(lambda case: judge(*case), cases))
    assert there == here and all(v.infra_error is None for v in there)
