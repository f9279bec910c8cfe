"""Reading a final maths answer around math-verify, so that hedging between values never passes and common
notations do not fail (`math.py` judges with it).

On its own, math-verify rewarded hedges:
- an equation it reduces to its last side: `5 = 3` and `x = 5 = 3` were 3;
- a text its LaTeX parser rejects it reads again as plain text and keeps the last number: `5 \\to 3`,
  `5 \\lor 3` and `5 (or 3)` were 3. An answer is therefore parsed as LaTeX only;
- a final `\\text{...}` it drops as a unit: `5 \\text{ (or 3)}` was 5.

Before parsing, an answer's text is normalised (`normalised`): scientific notation, which math-verify reads
as a product with Euler's number (`1e6` was 6e), becomes `1 \\times 10^{6}`; a `\\text{...}` after a number
is dropped when it holds a unit and unwrapped when it holds a number; an alternative in parentheses,
`5 (or maybe 3)`, becomes `5 or 3`, which math-verify reads as the set {5, 3}; and unit words after a number
(`18.00 dollars`, read as a product of letters) are dropped when the gold has no variables they could be.

After parsing (`compare`), against a gold that is not itself a relation or an arrow: an answer of parts
joined by arrows (`\\to`, `\\Rightarrow`, `\\implies`, ...) and an equation or a chain of them pass only if
every side that is a value, not a name (`x`, `f(2)`), equals the gold, and an equation inside a set or a
tuple must hold between its values. A relation in one variable is compared with a set or interval gold as
the set it describes: `x < 2` is `(-\\infty, 2)`.

math-verify and sympy are imported where they are used: only an environment that verifies maths pays the
~0.6 s their import takes. Their errors and timeouts propagate: the caller makes them infra errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

SEVERAL_VALUES = "answer offers more than one value"
FALSE_RELATION = "a relation whose sides are not all the expected answer"
FALSE_ARROWS = "an arrow chain whose parts are not all the expected answer"
FALSE_APPROXIMATION = "an approximation whose sides are not all the expected answer"
CHANGED_BY_WORDS = "words after the number that change it or offer another"

# Words that read as maths, numbers or alternatives, never as a unit or a filler word (`3 pi` is not 3, nor
# `3 or five`); x, y, z and n too, which a `\text{...}` after a number may hold as a variable.
MATHS_WORDS = frozenset(
    """pi sqrt root sin cos tan sec csc cot arcsin arccos arctan sinh cosh tanh log ln lg exp lim max min gcd lcm
    mod det inf infty infinity e i x y z n or and not to plus minus times over divided zero one two three four
    five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen
    twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion trillion dozen half
    halves third thirds quarter quarters percent percentage pct hundreds thousands millions billions trillions
    dozens fourth fourths fifth fifths sixth sixths seventh sevenths eighth eighths ninth ninths tenth tenths
    hundredth hundredths thousandth thousandths millionth millionths first second factorial choose power
    powers root roots degree degrees radian radians alpha beta gamma delta epsilon zeta eta theta
    iota kappa lambda mu nu xi omicron rho sigma tau upsilon phi chi psi omega""".split()
)
# What a unit may follow: a bare number (a sign, thousands commas, decimals, `\times 10^{k}` from scientific
# notation, a `$`), never an expression (`1 + 2 phi` is not 3).
BARE_NUMBER_RE = re.compile(
    r"^\\?\$?[-\u2212]?\d[\d,]*(?:\.\d+)?(?:/\d+)?(?:\s*\\times\s*10\^\{[+-]?\d+\})?$"
    r"|^\\frac\{\d+\}\{\d+\}$"
)
# Words in a `\\text{...}` after a number that make it another value or offer a second one (`3 \\text{ dozen}`,
# `3 \\text{ or five}`): math-verify drops a final text as a unit and read these as the bare number.
VALUE_WORDS = frozenset(
    """or and not to plus minus times over divided zero one two three four five six seven eight nine ten eleven
    twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy
    eighty ninety hundred thousand million billion trillion dozen half halves third thirds quarter quarters
    hundreds thousands millions billions trillions dozens fourth fourths fifth fifths sixth sixths seventh
    sevenths eighth eighths ninth ninths tenth tenths hundredth hundredths thousandth thousandths millionth
    millionths factorial choose power powers squared cubed""".split()
)
POWER_WORDS = frozenset({"squared", "cubed"})  # a unit after a unit (`cm squared`); after a number, a power

SCIENTIFIC_RE = re.compile(r"(?<![\w.\\])(?P<mantissa>\d+(?:\.\d+)?)[eE](?P<exponent>[+-]?\d+)(?![\w.])")
LATEX_SPACE = r"(?:\s|\\[,;:! ]|~)"
TEXT_RE = re.compile(
    rf"(?:(?<=\d)(?P<gap>{LATEX_SPACE}*))?\\(?:text(?:rm|normal|bf|it)?|mbox|mathrm)\s*"
    r"\{(?P<content>[^{}]*)\}(?P<power>\^\{?\d\}?)?"
)
UNIT_TAIL = r"(?:/[A-Za-z]+)*(?:\^\{?\d\}?)?"  # km/h, cm^2
UNIT_WORDS_RE = re.compile(
    rf"(?<=[\d}}]){LATEX_SPACE}+(?P<words>[A-Za-z]{{2,}}{UNIT_TAIL}(?:\s+[A-Za-z]+{UNIT_TAIL})*)\s*$"
)
ALTERNATIVE_RE = re.compile(r"\s*(?:\\left)?\(\s*or\s+(?P<alternative>[^()]*?)\s*(?:\\right)?\)")
ARROW_NAMES = """to gets mapsto longmapsto implies impliedby iff leadsto hookrightarrow rightarrow Rightarrow
    longrightarrow Longrightarrow leftarrow Leftarrow longleftarrow Longleftarrow leftrightarrow Leftrightarrow
    longleftrightarrow Longleftrightarrow""".split()
ARROW_RE = re.compile(rf"\\(?:{'|'.join(ARROW_NAMES)})(?![A-Za-z])|->|=>|[→⇒⟶⟹↦⇔⟺←⇐]")
# Approximate equality, `\\approx` and its kin: math-verify reads `3 \\approx 5` as 3.
APPROXIMATE_RE = re.compile(
    r"\\(?:approx|approxeq|thickapprox|simeq|sim|thicksim|cong|doteq|eqsim)(?![A-Za-z])|[\u2248\u2243\u2245\u223c\u2252]"
)
DECIMAL_RE = re.compile(r"(?<![\d.])\d*\.(?P<places>\d+)")
ESCAPED_BRACE_RE = re.compile(r"\\[{}]")
EQUALS_RE = re.compile(r"(?<![\\<!>])=")  # math-verify's: not `\=`, `<=`, `!=` or `>=`
LIST_RE = re.compile(r"[,;]|(?<![A-Za-z])(?:and|or)(?![A-Za-z])")  # math-verify reads `and` and `or` as `,`


def normalised(text: str, unit_words: bool) -> str:
    """The answer's text as math-verify should read it; `unit_words`: drop plain unit words after a number."""
    text = SCIENTIFIC_RE.sub(scientific, text)
    text = TEXT_RE.sub(lambda match: rewritten_text(match, text), text)
    text = ALTERNATIVE_RE.sub(lambda match: " or " + without_leading_words(match["alternative"]), text)
    return without_unit_words(text) if unit_words else text


def rewritten_text(match: re.Match, whole: str) -> str:
    """A unit's `\\text{...}` after a number dropped; one holding a number unwrapped, so that math-verify, which
    drops a final `\\text{...}`, sees the number (`5 \\text{ (or 3)}`) unless the text is the whole answer."""
    content, after_number = match["content"], match["gap"] is not None
    if after_number and is_unit([word for word in re.split(r"[\s/.]+", content) if word]):
        return ""
    if re.search(r"\d", content) and match.group(0).strip() != whole.strip():
        return f"{match['gap'] or ''} {content} {match['power'] or ''}"
    return match.group(0)


def is_unit(words: list[str]) -> bool:
    return bool(words) and words[0].lower() not in POWER_WORDS and are_plain(words)


def are_plain(words: list[str]) -> bool:
    return all(word.isalpha() and word.lower() not in MATHS_WORDS for word in words)


def changed_by_words(text: str) -> bool:
    """Whether the answer ends in a `\\text{...}` after a number, holding no number itself, whose words make the
    number another value or offer a second one (`3 \\text{ dozen}`, `3 \\text{ or five}`): math-verify drops
    such a final text as a unit (a text between two values it reads: `3 \\text{ or } 5` is {3, 5})."""
    for match in TEXT_RE.finditer(text):
        words = {word.lower() for word in re.findall(r"[A-Za-z]+", match["content"])}
        final = not text[match.end() :].strip(" .$")
        if final and match["gap"] is not None and not re.search(r"\d", match["content"]) and words & VALUE_WORDS:
            return True
    return False


def without_unit_words(text: str) -> str:
    """`text` without the plain unit words that end it after a number (`18.00 dollars`, `25 km/h`, and
    `10^{6} dollars`, which is how `1e6 dollars` arrives)."""
    match = UNIT_WORDS_RE.search(text)
    if not match or not BARE_NUMBER_RE.match(text[: match.start()].strip()):
        return text
    return text[: match.start()] if is_unit(re.findall(r"[A-Za-z]+", match["words"])) else text


def without_leading_words(alternative: str) -> str:
    """An alternative without the words that qualify it: `maybe 3` is 3, `equivalently 0.5` is 0.5."""
    words = alternative.split(maxsplit=1)
    while len(words) == 2 and len(words[0]) > 1 and are_plain(words[:1]):
        words = words[1].split(maxsplit=1)
    return " ".join(words)


def arrow_parts(text: str, separator: re.Pattern = ARROW_RE) -> list[str]:
    """The non-blank parts of `text` between its arrows (or another `separator`) outside braces
    (`\\lim_{x \\to 3} f(x)` is one part)."""
    unescaped = ESCAPED_BRACE_RE.sub("  ", text)  # `\{` and `\}` are set braces, not grouping
    cuts = [
        m for m in separator.finditer(text) if unescaped.count("{", 0, m.start()) == unescaped.count("}", 0, m.start())
    ]
    bounds = [0, *(edge for m in cuts for edge in (m.start(), m.end())), len(text)]
    parts = [text[start:end] for start, end in zip(bounds[::2], bounds[1::2])]
    return [part for part in parts if part.strip()] or [text]


def chain_sides(text: str) -> list[str]:
    """The non-blank sides of a chain of two or more `=` in one value, else `[text]`. math-verify reads the
    last side alone of such a chain that it cannot parse whole (`3 = 5 = 3` was 3): it is read side by side.
    A list (`x = 1, y = 2`, `x = 3 or x = 5`) is not one chain, and math-verify splits none."""
    sides = [side for side in EQUALS_RE.split(text) if side.strip()]
    return sides if len(sides) > 2 and not LIST_RE.search(text) else [text]


@dataclass(frozen=True)
class Comparison:
    same: bool
    parsed: bool  # math-verify read the answer, or a part of it, as maths
    hedge: str | None = None  # the reason, where a hedge rule of this module failed the answer


@dataclass(frozen=True)
class Gold:
    """The parsed reference answer, and math-verify's time limit: what each value of an answer is held to."""

    parsed: list
    relation: bool  # an equation, inequality or arrow: math-verify alone compares the answer with it
    timeout: int | None

    @property
    def maths(self) -> list:
        return maths_in(self.parsed)

    @property
    def symbols(self) -> set:
        return {symbol for item in self.maths for symbol in item.free_symbols}

    @property
    def one_value(self) -> bool:
        from sympy import Set, Tuple

        return bool(self.maths) and not any(isinstance(item, (Set, Tuple)) for item in self.maths)

    def matches(self, answer: Any) -> bool:
        return same_maths(self.parsed, answer, self.timeout)

    def names(self, side: Any) -> bool:
        """Whether an equation's side names the quantity (`x`, `f(2)`, `a_n`, `P(A)`) rather than giving its
        value: it applies an undefined function, or has a variable the gold has not. A name is no value the
        answer offers, so `x = 3` and `f(2) = 3` are 3; against `x + 3`, `y = x + 3` is `x + 3`."""
        from sympy.core.function import AppliedUndef

        return bool(side.atoms(AppliedUndef)) or not side.free_symbols <= self.symbols

    def values(self, answer: Any) -> list:
        """The values an answer, or a part between arrows, offers: each side of an equation that is not a name."""
        from math_verify.grader import is_equation

        return [side for side in (equation_sides(answer) if is_equation(answer) else [answer]) if not self.names(side)]

    def holds_within(self, answer: Any) -> bool:
        """Whether every equation inside `answer`'s sets, tuples and equation sides is true between its values:
        math-verify reads `(4, 5 = 3)` as (4, 3)."""
        return all(self.agree(self.values(equation)) for equation in inner_equations(answer))

    def agree(self, values: list) -> bool:
        return all(same_maths(values[0], other, self.timeout) for other in values[1:])


def compare(gold: str, answer: str, timeout: int | None) -> Comparison:
    """Whether `answer` is `gold`, judged by math-verify with the hedge rules of this module's docstring."""
    from math_verify.grader import is_relation

    parsed_gold = parse_gold(gold, timeout)
    relation = any(is_relation(item) for item in maths_in(parsed_gold)) or len(arrow_parts(gold)) > 1
    reference = Gold(parsed_gold, relation, timeout)
    unit_words = not reference.symbols  # a gold with variables: a word after a number may be one of them
    if reference.relation:
        parsed = parse_answer(normalised(answer, unit_words), timeout)
        return Comparison(reference.matches(parsed), bool(maths_in(parsed)))
    if changed_by_words(answer):
        return Comparison(False, True, CHANGED_BY_WORDS)
    approximated = arrow_parts(answer, APPROXIMATE_RE)
    if len(approximated) > 1:
        return compare_approximation(reference, approximated, unit_words)
    arrow_separated = arrow_parts(answer)
    texts = [side for part in arrow_separated for side in chain_sides(part)]
    parts = [parse_answer(normalised(text, unit_words), timeout) for text in texts]
    if len(parts) == 1:
        return compare_one(reference, parts[0])
    return compare_parts(reference, parts, FALSE_ARROWS if len(arrow_separated) > 1 else FALSE_RELATION)


def compare_parts(reference: Gold, parts: list[list], reason: str) -> Comparison:
    """An answer read in parts (between arrows, or the sides of a chain of `=`): each must be read as maths,
    and every value among them must be the gold."""
    parsed = any(maths_in(part) for part in parts)
    if not all(maths_in(part) for part in parts):
        return Comparison(False, parsed, reason)
    answers = [maths_in(part)[0] for part in parts]
    if not all(reference.holds_within(answer) for answer in answers):
        return Comparison(False, True, FALSE_RELATION)
    return compare_values(reference, [value for answer in answers for value in reference.values(answer)], reason)


def compare_approximation(reference: Gold, sides: list[str], unit_words: bool) -> Comparison:
    """`a \\approx b`: passes if a value among its sides is the gold and every other value is that one, or,
    where the answer shows decimals, within half a unit of its fewest decimal places (`\\pi \\approx 3.14`
    is both pi and 3.14; `3 \\approx 5` is a hedge)."""
    parts = [parse_answer(normalised(side, unit_words), reference.timeout) for side in sides]
    if not all(maths_in(part) for part in parts):
        return Comparison(False, any(maths_in(part) for part in parts), FALSE_APPROXIMATION)
    values = [value for part in parts for value in reference.values(maths_in(part)[0])]
    places = [len(match["places"]) for side in sides for match in DECIMAL_RE.finditer(side)]
    tolerance = 0.5 * 10 ** -min(places) if places else 0.0
    for value in values:
        if reference.matches(value) and all(near(value, other, tolerance, reference.timeout) for other in values):
            return Comparison(True, True)
    return Comparison(False, True, FALSE_APPROXIMATION)


def near(value: Any, other: Any, tolerance: float, timeout: int | None) -> bool:
    """Whether two values are the same, or numbers no further apart than `tolerance` (and a rounding's slack)."""
    if same_maths(value, other, timeout):
        return True
    try:
        difference = abs(complex(value) - complex(other))
    except (TypeError, ValueError):
        return False  # not numbers (a symbol, a set): only the same maths is near
    return difference <= tolerance * (1 + 1e-9)


def compare_one(reference: Gold, parsed: list) -> Comparison:
    from math_verify.grader import is_equation

    maths = maths_in(parsed)
    if maths and not reference.holds_within(maths[0]):
        return Comparison(False, True, FALSE_RELATION)
    if maths and is_equation(maths[0]):
        return compare_values(reference, reference.values(maths[0]), FALSE_RELATION)
    same = reference.matches(parsed)
    several = not same and reference.one_value and any(offers_several(item) for item in maths)
    return Comparison(same, bool(maths), SEVERAL_VALUES if several else None)


def compare_values(reference: Gold, values: list, reason: str) -> Comparison:
    """Every value the answer offers must be the gold, and it must offer one: `x = y` gives none."""
    if values and all(reference.matches(value) for value in values):
        return Comparison(True, True)
    several = reference.one_value and any(offers_several(value) for value in values)
    return Comparison(False, True, SEVERAL_VALUES if several else reason)


def offers_several(answer: Any) -> bool:
    from sympy import FiniteSet

    return isinstance(answer, FiniteSet) and len(answer) > 1


def equation_sides(equation: Any) -> list:
    """The sides of an equation or chain of them, every one: `x = 5 = 3` has x, 5, 5 and 3."""
    from sympy import Eq

    relations = [equation] if isinstance(equation, Eq) else equation.args
    return [side for relation in relations for side in relation.args]


def inner_equations(answer: Any) -> Iterator:
    """The equations inside `answer`'s sets, tuples and equation sides, at any depth."""
    from math_verify.grader import is_equation
    from sympy import FiniteSet, Tuple

    if is_equation(answer):
        inside = equation_sides(answer)
    elif isinstance(answer, (FiniteSet, Tuple)):
        inside = list(answer.args)
    else:
        inside = []
    for item in inside:
        if is_equation(item):
            yield item
        yield from inner_equations(item)


def same_maths(gold: Any, answer: Any, timeout: int | None) -> bool:
    from math_verify import verify

    # allow_set_relation_comp: a relation in one variable is the set it describes, against a set or interval gold.
    return bool(verify(gold, answer, timeout_seconds=timeout, raise_on_error=True, allow_set_relation_comp=True))


def parse_gold(text: str, timeout: int | None) -> list:
    from math_verify import parse

    # A box around the whole answer makes math-verify parse exactly it, as LaTeX (plain 1/2 included).
    return parse(f"\\boxed{{{SCIENTIFIC_RE.sub(scientific, text)}}}", parsing_timeout=timeout, raise_on_error=True)


def parse_answer(text: str, timeout: int | None) -> list:
    from math_verify import parse
    from math_verify.parser import LatexExtractionConfig

    # LaTeX only: math-verify's plain-text reading of what LaTeX rejects keeps its last number (`5 \to 3` was 3).
    config = [LatexExtractionConfig()]
    return parse(f"\\boxed{{{text}}}", extraction_config=config, parsing_timeout=timeout, raise_on_error=True)


def scientific(match: re.Match) -> str:
    return f"{match['mantissa']} \\times 10^{{{match['exponent']}}}"


def maths_in(parsed: list) -> list:
    """What math-verify parsed as maths, without the text it keeps beside it."""
    from sympy import Basic, MatrixBase

    return [item for item in parsed if isinstance(item, (Basic, MatrixBase))]
