"""Original HumanEval- and MBPP-shaped tasks that exercise every style of test the two formats allow.

HumanEval and MBPP cannot be downloaded here (and must not be copied), so this module writes its own small
problems, built at call time, in the two datasets' layouts:

* `humaneval_style_tasks()`: 160 tasks (40 base problems x 4 test styles) with `task_id`, `prompt`,
  `canonical_solution`, `test` (defines `check(candidate)`), `entry_point`, plus `wrong_solutions` (two bodies
  that must fail) and `styles` (tags naming what kind of test the task carries).
* `mbpp_style_tasks()`: 24 tasks with `task_id`, `text`, `code`, `test_list`, `test_setup_code`,
  `challenge_test_list`, plus `wrong_code` (a whole program that must fail) and `styles`.

The four test styles of a base problem: literal asserts with METADATA and `assert True` lines; a loop over a
table of cases; a reference helper in the test compared on computed arguments; random inputs compared to a
reference helper. Problem-level tags add float tolerance, expected exceptions, helpers defined in the prompt,
and keyword/default arguments or tuple/dict/set/None results.

The bottom test grades every task like the official harnesses do, in plain Python without a sandbox.
"""

import json
import textwrap
from dataclasses import dataclass, field

N_HUMANEVAL = 160
N_MBPP = 24
MIN_PER_STYLE = 15
HUMANEVAL_STYLES = (
    "loop",
    "helper",
    "computed",
    "metadata_assert_true",
    "random",
    "prompt_helper",
    "float",
    "exception",
    "kwargs_or_container",
    "literal",
)


class Src(str):
    """An argument written as source (e.g. a call to a helper the prompt defines): its repr is the source."""

    def __repr__(self) -> str:
        return str(self)


def case(*args, want, **kwargs):
    return (args, kwargs, want)


def _code(text: str) -> str:
    return textwrap.dedent(text).strip("\n") + "\n"


def _indent(text: str) -> str:
    return textwrap.indent(_code(text), "    ")


@dataclass(frozen=True)
class Problem:
    name: str
    params: str
    ret: str  # " -> int", or "" for no annotation
    doc: str
    body: str  # unindented canonical body
    wrong: str  # unindented plausible-but-wrong body
    cases: tuple  # (args, kwargs, want) triples; at least one must expose the wrong body
    computed: tuple  # argument lists written as source, e.g. "list(range(10)), 3"
    gen: str  # expression over `rng` giving an args tuple
    floats: bool = False
    raises: tuple = ()  # (args, exception name) pairs
    helpers: str = ""  # prompt source before the entry point, used by the tests
    header: str = ""  # imports at the top of the prompt
    uses_helper: bool = False  # whether the canonical solution calls a prompt helper
    tags: tuple = field(default=())


def _problem(name, params, ret, doc, body, wrong, cases, computed, gen, **kw) -> Problem:
    helpers = _code(kw.pop("helpers")) + "\n\n" if "helpers" in kw else ""
    header = _code(kw.pop("header")) + "\n\n" if "header" in kw else ""
    cases = tuple(cases)
    return Problem(
        name,
        params,
        ret,
        doc,
        _code(body),
        _code(wrong),
        cases,
        tuple(computed),
        gen,
        helpers=helpers,
        header=header,
        tags=_problem_tags(params, ret, cases, helpers, kw),
        **kw,
    )


def _problem_tags(params, ret, cases, helpers, kw) -> tuple:
    tags = []
    if kw.get("floats"):
        tags.append("float")
    if kw.get("raises"):
        tags.append("exception")
    if helpers:
        tags.append("prompt_helper")
    containers = (tuple, dict, set, frozenset, type(None))
    if "=" in params or any(kwargs or isinstance(want, containers) for _, kwargs, want in cases):
        tags.append("kwargs_or_container")
    return tuple(tags)


# ---------------------------------------------------------------------------------------------- base problems


def _base_problems() -> list[Problem]:
    return _list_and_string_problems() + _math_problems() + _prompt_helper_problems() + _parsing_problems()


def _list_and_string_problems() -> list[Problem]:
    return [
        _problem(
            "count_vowels",
            "s: str",
            " -> int",
            "Count the vowels (a, e, i, o, u, either case) in s.",
            "return sum(ch in 'aeiouAEIOU' for ch in s)",
            "return sum(ch in 'aeiou' for ch in s)",
            [case("Hello", want=2), case("AEIOU xyz", want=5), case("", want=0)],
            ["'banana' * 2", "'Ab' + 'E'"],
            "(''.join(rng.choice('abcdeIOUxyz ') for _ in range(rng.randint(0, 15))),)",
        ),
        _problem(
            "is_palindrome",
            "s: str, ignore_case: bool = True",
            " -> bool",
            "Whether s reads the same backwards; letter case is ignored unless ignore_case is False.",
            """
            t = s.lower() if ignore_case else s
            return t == t[::-1]
            """,
            "return s == s[::-1]",
            [
                case("Abba", want=True),
                case("Abba", ignore_case=False, want=False),
                case("abc", want=False),
                case("", want=True),
            ],
            ["'ab' + 'ba'", "'Xy' * 2, ignore_case=False"],
            "(''.join(rng.choice('aAbB') for _ in range(rng.randint(0, 6))), rng.choice([True, False]))",
        ),
        _problem(
            "running_max",
            "nums: List[int]",
            " -> List[int]",
            "Return the list whose i-th item is the largest of nums[0..i].",
            """
            out = []
            best = None
            for x in nums:
                best = x if best is None else max(best, x)
                out.append(best)
            return out
            """,
            """
            out = []
            best = 0
            for x in nums:
                best = max(best, x)
                out.append(best)
            return out
            """,
            [case([1, 3, 2, 5], want=[1, 3, 3, 5]), case([-3, -5, -1], want=[-3, -3, -1]), case([], want=[])],
            ["list(range(5, 0, -1))", "[2, -1] * 3"],
            "([rng.randint(-50, 50) for _ in range(rng.randint(0, 10))],)",
            header="from typing import List",
        ),
        _problem(
            "chunk",
            "items: list, size: int = 2",
            " -> list",
            "Split items into consecutive chunks of length size (the last may be shorter).\n"
            "    Raise ValueError if size is not positive.",
            """
            if size <= 0:
                raise ValueError('size must be positive')
            return [items[i:i + size] for i in range(0, len(items), size)]
            """,
            "return [items[i:i + size] for i in range(0, len(items) - 1, size)]",
            [
                case([1, 2, 3, 4, 5], want=[[1, 2], [3, 4], [5]]),
                case([1, 2, 3], size=3, want=[[1, 2, 3]]),
                case([], want=[]),
            ],
            ["list(range(7)), 3", "list('abcdef'), size=4"],
            "([rng.randint(0, 9) for _ in range(rng.randint(0, 12))], rng.randint(1, 4))",
            raises=((([1], 0), "ValueError"), (([1, 2], -1), "ValueError")),
        ),
        _problem(
            "common_elements",
            "a: list, b: list",
            " -> set",
            "Return the set of values found in both a and b.",
            "return set(a) & set(b)",
            "return set(a) | set(b)",
            [case([1, 2, 3], [2, 3, 4], want={2, 3}), case([], [1], want=set()), case(["x"], ["x", "y"], want={"x"})],
            ["list(range(5)), list(range(3, 8))", "list('abc'), list('bcd')"],
            "([rng.randint(0, 9) for _ in range(5)], [rng.randint(0, 9) for _ in range(5)])",
        ),
        _problem(
            "min_max",
            "nums: list[int]",
            " -> tuple[int, int] | None",
            "Return (smallest, largest) of nums, or None when nums is empty.",
            "return (min(nums), max(nums)) if nums else None",
            "return (min(nums), max(nums)) if nums else (0, 0)",
            [case([3, 1, 2], want=(1, 3)), case([], want=None), case([7], want=(7, 7))],
            ["list(range(-3, 4))", "[4] * 3"],
            "([rng.randint(-99, 99) for _ in range(rng.randint(0, 6))],)",
        ),
        _problem(
            "flatten",
            "nested: list",
            " -> list",
            "Flatten arbitrarily nested lists into one flat list, in order.",
            """
            out = []
            stack = [iter(nested)]
            while stack:
                for item in stack[-1]:
                    if isinstance(item, list):
                        stack.append(iter(item))
                        break
                    out.append(item)
                else:
                    stack.pop()
            return out
            """,
            "return [x for item in nested for x in (item if isinstance(item, list) else [item])]",
            [case([1, [2, [3, [4]]]], want=[1, 2, 3, 4]), case([], want=[]), case([[], [[]]], want=[])],
            ["[[i] for i in range(3)]", "[[1, [2]]] * 2"],
            "([[rng.randint(0, 9), [rng.randint(0, 9), [rng.randint(0, 9)]]] for _ in range(rng.randint(0, 4))],)",
        ),
        _problem(
            "second_largest",
            "nums: list[int]",
            " -> int | None",
            "Return the second largest distinct value of nums, or None if there is none.",
            """
            distinct = sorted(set(nums), reverse=True)
            return distinct[1] if len(distinct) > 1 else None
            """,
            """
            ordered = sorted(nums, reverse=True)
            return ordered[1] if len(ordered) > 1 else None
            """,
            [case([3, 1, 2], want=2), case([5, 5, 4], want=4), case([7], want=None), case([2, 2], want=None)],
            ["list(range(10))", "[4, 4] * 3 + [1]"],
            "([rng.randint(0, 6) for _ in range(rng.randint(0, 6))],)",
        ),
        _problem(
            "sort_by_length",
            "words: list[str], reverse: bool = False",
            " -> list[str]",
            "Sort words by length, ties alphabetically; reverse=True gives the opposite order.",
            "return sorted(words, key=lambda w: (len(w), w), reverse=reverse)",
            "return sorted(words, key=len, reverse=reverse)",
            [
                case(["ccc", "a", "bb"], want=["a", "bb", "ccc"]),
                case(["bb", "aa", "c"], want=["c", "aa", "bb"]),
                case(["x", "yy"], reverse=True, want=["yy", "x"]),
            ],
            ["['ab', 'a'] * 2", "list('cab'), reverse=True"],
            "([rng.choice(['a', 'bb', 'ab', 'ccc', 'ba']) for _ in range(rng.randint(0, 7))],)",
        ),
        _problem(
            "rotate",
            "items: list, k: int",
            " -> list",
            "Rotate items k places to the right (k may be negative or larger than the list).",
            """
            if not items:
                return []
            k %= len(items)
            return items[-k:] + items[:-k] if k else list(items)
            """,
            """
            if not items:
                return []
            return items[-k:] + items[:-k]
            """,
            [
                case([1, 2, 3, 4], 1, want=[4, 1, 2, 3]),
                case([1, 2, 3], 5, want=[2, 3, 1]),
                case([], 3, want=[]),
                case([1, 2], -1, want=[2, 1]),
            ],
            ["list(range(5)), 2 * 3", "['a', 'b'] * 2, len('xyz')"],
            "([rng.randint(0, 9) for _ in range(rng.randint(0, 6))], rng.randint(-10, 10))",
        ),
        _problem(
            "transpose",
            "m: list[list[int]]",
            " -> list[list[int]]",
            "Return the transpose of the matrix m.",
            "return [list(row) for row in zip(*m)]",
            "return [[m[i][j] for i in range(len(m[0]))] for j in range(len(m))]",
            [case([[1, 2, 3], [4, 5, 6]], want=[[1, 4], [2, 5], [3, 6]]), case([], want=[]), case([[7]], want=[[7]])],
            ["[[1, 2]] * 3", "[list(range(3)) for _ in range(2)]"],
            "((lambda r, c: [[rng.randint(0, 9) for _ in range(c)] for _ in range(r)])"
            "(rng.randint(1, 4), rng.randint(1, 4)),)",
        ),
        _problem(
            "merge_intervals",
            "intervals: list[tuple[int, int]]",
            " -> list[tuple[int, int]]",
            "Merge overlapping (start, end) intervals; return them sorted by start.",
            """
            merged = []
            for start, end in sorted(intervals):
                if merged and start <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((start, end))
            return merged
            """,
            """
            merged = []
            for start, end in intervals:
                if merged and start <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((start, end))
            return merged
            """,
            [
                case([(1, 3), (2, 6), (8, 10)], want=[(1, 6), (8, 10)]),
                case([(5, 6), (1, 2)], want=[(1, 2), (5, 6)]),
                case([], want=[]),
                case([(1, 4), (4, 5)], want=[(1, 5)]),
            ],
            ["[(i, i + 1) for i in range(0, 6, 2)]", "[(3, 4)] * 2 + [(0, 1)]"],
            "([tuple(sorted((rng.randint(0, 30), rng.randint(0, 30)))) for _ in range(rng.randint(0, 6))],)",
        ),
        _problem(
            "group_by_first_letter",
            "words: list[str]",
            " -> dict[str, list[str]]",
            "Group the non-empty words by their lower-cased first letter, keeping their order.",
            """
            groups = {}
            for word in words:
                if word:
                    groups.setdefault(word[0].lower(), []).append(word)
            return groups
            """,
            """
            groups = {}
            for word in words:
                if word:
                    groups.setdefault(word[0], []).append(word)
            return groups
            """,
            [
                case(["apple", "Avocado", "bean"], want={"a": ["apple", "Avocado"], "b": ["bean"]}),
                case([], want={}),
                case(["", "x"], want={"x": ["x"]}),
            ],
            ["['kiwi'] * 2", "'one two three'.split()"],
            "([rng.choice(['ant', 'Ape', 'bee', 'Cat', 'cow', '']) for _ in range(rng.randint(0, 8))],)",
        ),
        _problem(
            "char_set",
            "s: str, ignore_spaces: bool = True",
            " -> frozenset",
            "Return the frozenset of characters in s, leaving out whitespace unless ignore_spaces is False.",
            "return frozenset(ch for ch in s if not (ignore_spaces and ch.isspace()))",
            "return frozenset(s.replace(' ', ''))",
            [
                case("a b a", want=frozenset({"a", "b"})),
                case("a b", ignore_spaces=False, want=frozenset("a b")),
                case("", want=frozenset()),
            ],
            ["'xy' * 3", "'p q', ignore_spaces=False"],
            "(''.join(rng.choice('ab c') for _ in range(rng.randint(0, 8))), rng.random() < 0.5)",
        ),
        _problem(
            "coalesce",
            "*values, default=None",
            "",
            "Return the first of values that is not None, or default when there is none.",
            """
            for value in values:
                if value is not None:
                    return value
            return default
            """,
            """
            for value in values:
                if value:
                    return value
            return default
            """,
            [
                case(None, 0, 5, want=0),
                case(want=None),
                case(None, None, default="x", want="x"),
                case(None, [], 1, want=[]),
            ],
            ["*[None] * 3, 7", "None, '' + 'a'"],
            "tuple(rng.choice([None, None, 0, 1, '', 'z']) for _ in range(rng.randint(0, 5)))",
        ),
        _problem(
            "conjugate_all",
            "zs: list[complex]",
            " -> list[complex]",
            "Return the complex conjugate of every number.",
            "return [z.conjugate() for z in zs]",
            "return [-z for z in zs]",
            [case([1 + 2j, 3j], want=[1 - 2j, -3j]), case([], want=[]), case([5], want=[5])],
            ["[complex(i, i) for i in range(3)]", "[1j] * 2"],
            "([complex(rng.randint(-5, 5), rng.randint(-5, 5)) for _ in range(rng.randint(0, 5))],)",
        ),
    ]


def _math_problems() -> list[Problem]:
    return [
        _problem(
            "mean",
            "xs: list[float]",
            " -> float",
            "Return the arithmetic mean of xs; raise ValueError for an empty list.",
            """
            if not xs:
                raise ValueError('mean of an empty list')
            return sum(xs) / len(xs)
            """,
            """
            if not xs:
                raise ValueError('mean of an empty list')
            return sum(xs) // len(xs)
            """,
            [case([1.0, 2.0], want=1.5), case([0.1, 0.2, 0.3], want=0.2), case([-4], want=-4.0)],
            ["[0.5] * 4", "list(range(1, 11))"],
            "([rng.uniform(-10, 10) for _ in range(rng.randint(1, 8))],)",
            floats=True,
            raises=((([],), "ValueError"),),
        ),
        _problem(
            "hypotenuse",
            "a: float, b: float",
            " -> float",
            "Return the hypotenuse of a right triangle with legs a and b; raise ValueError for a negative leg.",
            """
            if a < 0 or b < 0:
                raise ValueError('legs must not be negative')
            return math.sqrt(a * a + b * b)
            """,
            """
            if a < 0 or b < 0:
                raise ValueError('legs must not be negative')
            return math.sqrt(a * a + b)
            """,
            [case(3, 4, want=5.0), case(1, 1, want=1.4142135623730951), case(0, 2.5, want=2.5)],
            ["3 * 2, 4 * 2", "0.5 + 0.5, 1.0"],
            "(rng.uniform(0, 100), rng.uniform(0, 100))",
            floats=True,
            raises=(((-1, 2), "ValueError"),),
            header="import math",
        ),
        _problem(
            "celsius_to_fahrenheit",
            "c: float",
            " -> float",
            "Convert a temperature from Celsius to Fahrenheit.",
            "return c * 9 / 5 + 32",
            "return c * 5 / 9 + 32",
            [case(0, want=32.0), case(100, want=212.0), case(-40, want=-40.0), case(36.6, want=97.88)],
            ["37 - 0.5", "sum([10, 20])"],
            "(rng.uniform(-100, 100),)",
            floats=True,
        ),
        _problem(
            "clamp",
            "x: float, lo: float = 0.0, hi: float = 1.0",
            " -> float",
            "Limit x to the range [lo, hi]; raise ValueError if lo > hi.",
            """
            if lo > hi:
                raise ValueError('lo must not exceed hi')
            return max(lo, min(x, hi))
            """,
            "return max(lo, x)",
            [case(1.5, want=1.0), case(-0.2, want=0.0), case(0.25, want=0.25), case(5, lo=2, hi=4, want=4.0)],
            ["0.1 + 0.2", "7 * 0.5, hi=3.0"],
            "(rng.uniform(-2, 2), rng.uniform(-1, 0), rng.uniform(0, 1))",
            floats=True,
            raises=(((1, 5, 2), "ValueError"),),
        ),
        _problem(
            "compound_interest",
            "principal: float, rate: float, years: int = 1",
            " -> float",
            "Return principal grown at rate per year, compounded yearly for years years.",
            "return principal * (1 + rate) ** years",
            "return principal * (1 + rate * years)",
            [
                case(100, 0.1, want=110.0),
                case(100, 0.1, 2, want=121.0),
                case(1000, 0.05, years=3, want=1157.625),
                case(50, 0.0, 10, want=50.0),
            ],
            ["10 ** 3, 1 / 20, 2", "sum([50, 50]), 0.5, years=2"],
            "(rng.uniform(0, 1000), rng.uniform(0, 0.2), rng.randint(2, 10))",
            floats=True,
        ),
        _problem(
            "dot_product",
            "u: tuple, v: tuple",
            " -> int",
            "Return the dot product of two equally long tuples; raise ValueError if their lengths differ.",
            """
            if len(u) != len(v):
                raise ValueError('lengths differ')
            return sum(a * b for a, b in zip(u, v))
            """,
            "return sum(a * b for a, b in zip(u, v))",
            [case((1, 2, 3), (4, 5, 6), want=32), case((), (), want=0), case((-1,), (7,), want=-7)],
            ["tuple(range(4)), (1,) * 4", "(2, 3) + (4,), (1, 1, 1)"],
            "(lambda n: (tuple(rng.randint(-9, 9) for _ in range(n)), tuple(rng.randint(-9, 9) for _ in range(n))))"
            "(rng.randint(0, 6))",
            raises=((((1, 2), (1,)), "ValueError"),),
        ),
        _problem(
            "fizzbuzz",
            "n: int",
            " -> list[str]",
            "Return the FizzBuzz words for 1..n: 'Fizz' for multiples of 3, 'Buzz' of 5, 'FizzBuzz' of both.",
            """
            out = []
            for i in range(1, n + 1):
                if i % 15 == 0:
                    out.append('FizzBuzz')
                elif i % 3 == 0:
                    out.append('Fizz')
                elif i % 5 == 0:
                    out.append('Buzz')
                else:
                    out.append(str(i))
            return out
            """,
            """
            out = []
            for i in range(1, n):
                if i % 15 == 0:
                    out.append('FizzBuzz')
                elif i % 3 == 0:
                    out.append('Fizz')
                elif i % 5 == 0:
                    out.append('Buzz')
                else:
                    out.append(str(i))
            return out
            """,
            [case(5, want=["1", "2", "Fizz", "4", "Buzz"]), case(0, want=[]), case(3, want=["1", "2", "Fizz"])],
            ["3 * 5", "len('abcdefg')"],
            "(rng.randint(0, 40),)",
        ),
        _problem(
            "is_prime",
            "n: int",
            " -> bool",
            "Whether n is a prime number.",
            """
            if n < 2:
                return False
            i = 2
            while i * i <= n:
                if n % i == 0:
                    return False
                i += 1
            return True
            """,
            """
            if n < 2:
                return False
            i = 2
            while i * i < n:
                if n % i == 0:
                    return False
                i += 1
            return True
            """,
            [case(2, want=True), case(9, want=False), case(1, want=False), case(97, want=True)],
            ["3 * 19", "2 ** 7 - 1"],
            "(rng.randint(-5, 500),)",
        ),
        _problem(
            "gcd",
            "a: int, b: int",
            " -> int",
            "Return the greatest common divisor of a and b (never negative).",
            """
            a, b = abs(a), abs(b)
            while b:
                a, b = b, a % b
            return a
            """,
            """
            while b:
                a, b = b, a % b
            return a
            """,
            [case(12, 18, want=6), case(4, -6, want=2), case(0, 5, want=5), case(0, 0, want=0)],
            ["3 * 19, 19 * 4", "2 ** 10, 6 ** 3"],
            "(rng.randint(-1000, 1000), rng.randint(-1000, 1000))",
        ),
        _problem(
            "collatz_steps",
            "n: int",
            " -> int",
            "Count the Collatz steps from n down to 1; raise ValueError unless n >= 1.",
            """
            if n < 1:
                raise ValueError('n must be positive')
            steps = 0
            while n != 1:
                n = n // 2 if n % 2 == 0 else 3 * n + 1
                steps += 1
            return steps
            """,
            """
            if n < 1:
                raise ValueError('n must be positive')
            steps = 1
            while n != 1:
                n = n // 2 if n % 2 == 0 else 3 * n + 1
                steps += 1
            return steps
            """,
            [case(1, want=0), case(6, want=8), case(27, want=111)],
            ["2 ** 5", "3 * 3"],
            "(rng.randint(1, 1000),)",
            raises=(((0,), "ValueError"), ((-3,), "ValueError")),
        ),
        _problem(
            "pascal_row",
            "n: int",
            " -> list[int]",
            "Return row n (counting from 0) of Pascal's triangle.",
            """
            row = [1]
            for _ in range(n):
                row = [a + b for a, b in zip([0] + row, row + [0])]
            return row
            """,
            """
            row = [1]
            for _ in range(n - 1):
                row = [a + b for a, b in zip([0] + row, row + [0])]
            return row
            """,
            [case(0, want=[1]), case(1, want=[1, 1]), case(4, want=[1, 4, 6, 4, 1])],
            ["2 + 3", "len([None] * 6)"],
            "(rng.randint(0, 25),)",
        ),
    ]


def _prompt_helper_problems() -> list[Problem]:
    return [
        _problem(
            "decode_shift",
            "s: str, k: int = 3",
            " -> str",
            "Undo encode_shift(s, k): shift every lowercase letter k places back.",
            "return ''.join(shift_char(ch, -k) for ch in s)",
            "return ''.join(shift_char(ch, k) for ch in s)",
            [
                case(Src("encode_shift('hello')"), want="hello"),
                case(Src("encode_shift('abc xyz', 5)"), 5, want="abc xyz"),
                case(Src("encode_shift('zz', k=1)"), k=1, want="zz"),
            ],
            ["encode_shift('ab' * 3)", "encode_shift('q' + 'r', 7), k=7"],
            "(encode_shift(''.join(rng.choice('abcxyz .') for _ in range(rng.randint(1, 12))), 3),)",
            helpers='''
            def shift_char(ch: str, k: int) -> str:
                """Shift a lowercase letter k places along the alphabet; leave other characters alone."""
                if 'a' <= ch <= 'z':
                    return chr((ord(ch) - ord('a') + k) % 26 + ord('a'))
                return ch


            def encode_shift(s: str, k: int = 3) -> str:
                """Encode s by shifting every lowercase letter k places."""
                return ''.join(shift_char(ch, k) for ch in s)
            ''',
            uses_helper=True,
        ),
        _problem(
            "decode_rle",
            "pairs: list",
            " -> str",
            "Undo encode_rle: expand (character, count) pairs into a string.",
            "return ''.join(ch * n for ch, n in pairs)",
            "return ''.join(ch for ch, n in pairs)",
            [
                case(Src("encode_rle('aaabcc')"), want="aaabcc"),
                case(Src("encode_rle('')"), want=""),
                case([("x", 2), ("y", 1)], want="xxy"),
            ],
            ["encode_rle('ab' * 2 + 'bb')", "[('z', 3)] + encode_rle('q')"],
            "(encode_rle(''.join(rng.choice('aab') for _ in range(rng.randint(0, 10)))),)",
            helpers='''
            def encode_rle(s: str) -> list:
                """Run-length encode s as a list of (character, count) pairs."""
                pairs = []
                for ch in s:
                    if pairs and pairs[-1][0] == ch:
                        pairs[-1] = (ch, pairs[-1][1] + 1)
                    else:
                        pairs.append((ch, 1))
                return pairs
            ''',
        ),
        _problem(
            "from_binary",
            "s: str",
            " -> int",
            "Parse the binary numeral s (as written by to_binary); raise ValueError for other characters.",
            """
            value = 0
            for ch in s:
                if ch not in '01':
                    raise ValueError(f'not a binary digit: {ch!r}')
                value = value * 2 + int(ch)
            return value
            """,
            "return int(s[::-1], 2)",
            [case(Src("to_binary(6)"), want=6), case(Src("to_binary(0)"), want=0), case("1011", want=11)],
            ["to_binary(2 ** 10)", "'1' * 4"],
            "(to_binary(rng.randint(0, 10 ** 6)),)",
            raises=((("12",), "ValueError"),),
            helpers='''
            def to_binary(n: int) -> str:
                """Write n >= 0 in base 2, without a prefix."""
                return bin(n)[2:]
            ''',
        ),
        _problem(
            "split_interleaved",
            "s: str",
            " -> tuple[str, str]",
            "Undo interleave(a, b): return the pair (a, b).",
            "return s[0::2], s[1::2]",
            "return s[1::2], s[0::2]",
            [
                case(Src("interleave('abc', 'xyz')"), want=("abc", "xyz")),
                case("", want=("", "")),
                case(Src("interleave('q', 'r')"), want=("q", "r")),
            ],
            ["interleave('ab' * 2, 'cd' * 2)", "'pq' + interleave('s', 't')"],
            "((lambda n: interleave(''.join(rng.choice('abc') for _ in range(n)), "
            "''.join(rng.choice('xyz') for _ in range(n))))(rng.randint(0, 8)),)",
            helpers='''
            def interleave(a: str, b: str) -> str:
                """Alternate the characters of two strings of equal length: interleave('ab', 'xy') == 'axby'."""
                return ''.join(x + y for x, y in zip(a, b))
            ''',
        ),
        _problem(
            "decrypt_xor",
            "data: bytes, key: int",
            " -> str",
            "Undo xor_bytes(text.encode('utf-8'), key) and return the text.",
            "return xor_bytes(data, key).decode('utf-8')",
            "return data.decode('utf-8', errors='replace')",
            [
                case(Src("xor_bytes(b'hello', 7)"), 7, want="hello"),
                case(b"", 42, want=""),
                case(Src("xor_bytes('hi there'.encode(), 1)"), key=1, want="hi there"),
            ],
            ["xor_bytes(b'ab' * 2, 9), 9", "xor_bytes(bytes(range(65, 70)), 3), key=3"],
            "(lambda k: (xor_bytes(''.join(rng.choice('abc xyz') for _ in range(rng.randint(0, 10))).encode(), k), k))"
            "(rng.randint(1, 255))",
            helpers='''
            def xor_bytes(data: bytes, key: int) -> bytes:
                """XOR every byte of data with key (0 <= key < 256)."""
                return bytes(b ^ key for b in data)
            ''',
            uses_helper=True,
        ),
    ]


def _parsing_problems() -> list[Problem]:
    return [
        _problem(
            "word_frequencies",
            "text: str",
            " -> dict[str, int]",
            "Count how often each lower-cased whitespace-separated word occurs in text.",
            """
            counts = {}
            for word in text.lower().split():
                counts[word] = counts.get(word, 0) + 1
            return counts
            """,
            """
            counts = {}
            for word in text.split():
                counts[word] = counts.get(word, 0) + 1
            return counts
            """,
            [case("a b a", want={"a": 2, "b": 1}), case("The the", want={"the": 2}), case("", want={})],
            ["'x ' * 3", "' '.join(['Hi', 'hi', 'yo'])"],
            "(' '.join(rng.choice(['a', 'B', 'b', 'cc']) for _ in range(rng.randint(0, 8))),)",
        ),
        _problem(
            "invert_dict",
            "d: dict",
            " -> dict",
            "Swap keys and values; raise ValueError if two keys share a value.",
            """
            out = {}
            for key, value in d.items():
                if value in out:
                    raise ValueError(f'duplicate value {value!r}')
                out[value] = key
            return out
            """,
            "return {v: k for k, v in d.items()}",
            [case({"a": 1, "b": 2}, want={1: "a", 2: "b"}), case({}, want={})],
            ["dict(zip('abc', range(3)))", "{str(i): i * i for i in range(4)}"],
            "({f'k{i}': v for i, v in enumerate(rng.sample(range(100), rng.randint(0, 8)))},)",
            raises=((({"a": 1, "b": 1},), "ValueError"),),
        ),
        _problem(
            "unique_sorted",
            "nums: list[int], descending: bool = False",
            " -> list[int]",
            "Return the distinct values of nums in ascending order, or descending if asked.",
            "return sorted(set(nums), reverse=descending)",
            "return sorted(set(nums))",
            [
                case([3, 1, 3, 2], want=[1, 2, 3]),
                case([3, 1, 3, 2], descending=True, want=[3, 2, 1]),
                case([], want=[]),
            ],
            ["[5, 5, 1] * 2", "list(range(6, 0, -2)), descending=True"],
            "([rng.randint(0, 9) for _ in range(rng.randint(0, 12))], rng.random() < 0.5)",
        ),
        _problem(
            "roman_to_int",
            "s: str",
            " -> int",
            "Convert a Roman numeral to an integer; raise ValueError for a character that is not a numeral.",
            """
            values = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}
            total = 0
            for i, ch in enumerate(s):
                if ch not in values:
                    raise ValueError(f'not a roman numeral: {ch!r}')
                v = values[ch]
                if i + 1 < len(s) and values.get(s[i + 1], 0) > v:
                    total -= v
                else:
                    total += v
            return total
            """,
            """
            values = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}
            return sum(values[ch] for ch in s)
            """,
            [case("XIV", want=14), case("MCMXCIV", want=1994), case("", want=0)],
            ["'X' * 3 + 'IX'", "'M' + 'CM'"],
            "(''.join(rng.choice('IVXLC') for _ in range(rng.randint(0, 6))),)",
            raises=((("XIZ",), "ValueError"),),
        ),
        _problem(
            "parse_key_values",
            "text: str, sep: str = ';'",
            " -> dict[str, str]",
            "Parse 'key=value' items separated by sep, stripping spaces and skipping empty items.\n"
            "    Raise ValueError for an item without '='.",
            """
            out = {}
            for part in text.split(sep):
                part = part.strip()
                if not part:
                    continue
                if '=' not in part:
                    raise ValueError(f'missing "=" in {part!r}')
                key, value = part.split('=', 1)
                out[key.strip()] = value.strip()
            return out
            """,
            """
            out = {}
            for part in text.split(sep):
                part = part.strip()
                if not part:
                    continue
                if '=' not in part:
                    raise ValueError(f'missing "=" in {part!r}')
                key, value = part.split('=', 1)
                out[key] = value
            return out
            """,
            [
                case("a=1;b=2", want={"a": "1", "b": "2"}),
                case(" x = 5 ; ", want={"x": "5"}),
                case("k=v,w=z", sep=",", want={"k": "v", "w": "z"}),
                case("", want={}),
            ],
            ["';'.join(['a=1'] * 2)", "'p=q' + ',' + 'r=s', sep=','"],
            "(';'.join(rng.choice('abc') + ' = ' + str(rng.randint(0, 9)) for _ in range(rng.randint(0, 5))),)",
            raises=((("novalue",), "ValueError"),),
        ),
        _problem(
            "parse_csv_ints",
            "line: str",
            " -> list[int]",
            "Parse a comma-separated line of integers, skipping empty fields.",
            "return [int(x) for x in line.split(',') if x.strip()]",
            "return [int(x) for x in line.split(',')]",
            [case("1, 2,3", want=[1, 2, 3]), case("", want=[]), case("-4,,5", want=[-4, 5])],
            ["','.join(map(str, range(5)))", "'7,' * 3"],
            "(','.join(str(rng.randint(-50, 50)) for _ in range(rng.randint(0, 6))),)",
        ),
        _problem(
            "digit_histogram",
            "s: str",
            " -> dict[str, int]",
            "Count each decimal digit that occurs in s.",
            """
            counts: Dict[str, int] = {}
            for ch in s:
                if ch.isdigit():
                    counts[ch] = counts.get(ch, 0) + 1
            return counts
            """,
            """
            counts: Dict[str, int] = {}
            for ch in s:
                if ch.isalnum():
                    counts[ch] = counts.get(ch, 0) + 1
            return counts
            """,
            [case("a1b22", want={"1": 1, "2": 2}), case("", want={}), case("x9", want={"9": 1})],
            ["str(12321)", "'7' * 3 + 'z'"],
            "(''.join(rng.choice('ab0123') for _ in range(rng.randint(0, 10))),)",
            header="from typing import Dict, List",
        ),
        _problem(
            "longest_common_prefix",
            "words: List[str]",
            " -> str",
            "Return the longest string that starts every word ('' for no words).",
            """
            if not words:
                return ''
            prefix = words[0]
            for word in words[1:]:
                while not word.startswith(prefix):
                    prefix = prefix[:-1]
            return prefix
            """,
            """
            if not words:
                return ''
            return min(words)
            """,
            [case(["flower", "flow", "flight"], want="fl"), case([], want=""), case(["abc", "abd"], want="ab")],
            ["['pre' + s for s in ('fix', 'view')]", "['same'] * 3"],
            "([rng.choice(['ab', 'abc', 'abd', 'b', '']) for _ in range(rng.randint(1, 4))],)",
            header="from typing import List",
        ),
    ]


# ------------------------------------------------------------------------------------------------ test styles


def _call(args, kwargs) -> str:
    return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


def _table(p: Problem) -> list[str]:
    rows = [
        f"        (({_call(args, {})}{',' if len(args) == 1 else ''}), {kwargs!r}, {want!r}),"
        for args, kwargs, want in p.cases
    ]
    return ["    cases = ["] + rows + ["    ]"]


def _raises_loop(p: Problem) -> list[str]:
    lines = []
    for args, exc in p.raises:
        lines += [
            "    try:",
            f"        candidate({_call(args, {})})",
            f"    except {exc}:",
            "        pass",
            "    else:",
            f"        raise AssertionError('expected {exc}')",
        ]
    return lines


def _same_helper(p: Problem) -> list[str]:
    if p.floats:
        return ["def _same(got, want):", "    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)"]
    return ["def _same(got, want):", "    return got == want"]


def _reference(p: Problem) -> list[str]:
    return [f"def _reference({p.params}){p.ret}:", _indent(p.body).rstrip("\n")]


def _literal_test(p: Problem) -> str:
    lines = ["METADATA = {", "    'author': 'warmstart',", "    'dataset': 'humaneval-style',", "}", "", ""]
    lines += ["def check(candidate):", f'    """Literal examples of {p.name}."""', "    assert True"]
    for args, kwargs, want in p.cases:
        got = f"candidate({_call(args, kwargs)})"
        if p.floats:
            lines.append(f"    assert abs({got} - {want!r}) < 1e-6")
        elif want is None:
            lines.append(f"    assert {got} is None")
        else:
            lines.append(f"    assert {got} == {want!r}")
    for args, exc in p.raises:
        lines += [
            "    try:",
            f"        candidate({_call(args, {})})",
            f'        assert False, "should raise {exc}"',
            f"    except {exc}:",
            "        pass",
        ]
    lines.append('    assert True, "This prints if this assert fails (good for debugging!)"')
    return "\n".join(lines) + "\n"


def _loop_test(p: Problem) -> str:
    lines = (["import math", "", ""] if p.floats else []) + ["def check(candidate):"] + _table(p)
    lines += ["    for args, kwargs, want in cases:", "        got = candidate(*args, **kwargs)"]
    if p.floats:
        lines.append("        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (args, got, want)")
    else:
        lines.append("        assert got == want, (args, kwargs, got, want)")
    if p.raises:
        bad = ", ".join(f"({_call(args, {})}{',' if len(args) == 1 else ''})" for args, _ in p.raises)
        exc = p.raises[0][1]
        lines += [
            f"    for bad in [{bad}]:",
            "        try:",
            "            candidate(*bad)",
            f"        except {exc}:",
            "            continue",
            "        raise AssertionError(f'no error for {bad!r}')",
        ]
    return "\n".join(lines) + "\n"


def _helper_test(p: Problem) -> str:
    lines = (
        (["import math", "", ""] if p.floats else [])
        + _reference(p)
        + ["", ""]
        + _same_helper(p)
        + ["", "", "def check(candidate):"]
    )
    for src in p.computed:
        lines += [
            f"    got = candidate({src})",
            f"    want = _reference({src})",
            "    assert _same(got, want), (got, want)",
        ]
    for args, kwargs, want in p.cases:
        lines.append(f"    assert _same(candidate({_call(args, kwargs)}), {want!r})")
    return "\n".join(lines + _raises_loop(p)) + "\n"


def _random_test(p: Problem, seed: int) -> str:
    if seed % 3 == 0:
        seeding = ["    rng = random.Random()  # unseeded: the fixed cases above catch the usual bugs"]
    elif seed % 3 == 1:
        seeding = [f"    random.seed({seed})", "    rng = random"]
    else:
        seeding = [f"    rng = random.Random({seed})"]
    same = (
        _same_helper(p)
        if not p.floats
        else ["def _same(got, want):", "    return abs(got - want) <= 1e-6 * max(1.0, abs(want))"]
    )
    lines = (
        _reference(p) + ["", ""] + same + ["", "", "def check(candidate):", "    import copy", "    import random", ""]
    )
    lines += (
        _table(p)
        + ["    for args, kwargs, want in cases:", "        assert _same(candidate(*args, **kwargs), want), args"]
        + seeding
    )
    lines += [
        "    for _ in range(60):",
        f"        args = {p.gen}",
        "        want = _reference(*copy.deepcopy(args))",
        "        got = candidate(*args)",
        "        assert _same(got, want), (args, got, want)",
    ]
    return "\n".join(lines + _raises_loop(p)) + "\n"


def _prompt(p: Problem) -> str:
    args, kwargs, want = p.cases[0]
    doc = f"{p.doc}\n    >>> {p.name}({_call(args, kwargs)})\n    {want!r}\n"
    return f'{p.header}{p.helpers}def {p.name}({p.params}){p.ret}:\n    """{doc}    """\n'


STYLE_BUILDERS = (
    (("literal", "metadata_assert_true"), lambda p, i: _literal_test(p)),
    (("loop",), lambda p, i: _loop_test(p)),
    (("helper", "computed"), lambda p, i: _helper_test(p)),
    (("random", "helper", "loop"), lambda p, i: _random_test(p, seed=i)),
)


def humaneval_style_tasks() -> list[dict]:
    """160 tasks in HumanEval's JSONL layout, plus `wrong_solutions` (2 failing bodies) and `styles` tags."""
    tasks = []
    for style_tags, build in STYLE_BUILDERS:
        for p in _base_problems():
            i = len(tasks)
            tags = list(style_tags) + list(p.tags)
            if p.header:
                tags.append("typing_import" if "typing" in p.header else "prompt_import")
            if p.uses_helper:
                tags.append("canonical_uses_prompt_helper")
            tasks.append(
                {
                    "task_id": f"HumanEvalStyle/{i}",
                    "prompt": _prompt(p),
                    "canonical_solution": _indent(p.body),
                    "test": build(p, i),
                    "entry_point": p.name,
                    "wrong_solutions": ["    return None\n", _indent(p.wrong)],
                    "styles": tags,
                }
            )
    return tasks


# ------------------------------------------------------------------------------------------------------ MBPP


def _mbpp(i, text, code, tests, wrong, setup="", styles=()) -> dict:
    return {
        "task_id": 9001 + i,
        "text": text,
        "code": _code(code),
        "test_list": list(tests),
        "test_setup_code": _code(setup) if setup else "",
        "challenge_test_list": [],
        "wrong_code": _code(wrong),
        "styles": list(styles) + (["setup"] if setup else []),
    }


def mbpp_style_tasks() -> list[dict]:
    """24 tasks in MBPP's layout, plus `wrong_code` (a whole program that fails) and `styles` tags."""
    specs = _mbpp_specs_a() + _mbpp_specs_b()
    return [_mbpp(i, *spec[:4], **spec[4]) for i, spec in enumerate(specs)]


def _mbpp_specs_a() -> list[tuple]:
    return [
        (
            "Write a function that returns the values found in both of two tuples, in ascending order.",
            "def both_tuples(a, b):\n    return tuple(sorted(set(a) & set(b)))",
            [
                "assert both_tuples((3, 4, 5, 6), (5, 7, 4, 10)) == (4, 5)",
                "assert both_tuples((1,), (2,)) == ()",
                "assert both_tuples(tuple(range(5)), (4, 3) * 2) == (3, 4)",
            ],
            "def both_tuples(a, b):\n    return tuple(sorted(set(a) | set(b)))",
            {},
        ),
        (
            "Write a python function to count the 1 bits in the binary form of a non-negative integer.",
            "def ones_count(n):\n    return bin(n).count('1')",
            ["assert ones_count(0) == 0", "assert ones_count(7) == 3", "assert ones_count(2 ** 10 + 1) == 2"],
            "def ones_count(n):\n    return n.bit_length()",
            {},
        ),
        (
            "Write a function to compute the area of a circle of radius r.",
            "import math\n\n\ndef circle_area(r):\n    return math.pi * r * r",
            [
                "assert math.isclose(circle_area(2), 4 * math.pi)",
                "assert circle_area(0) == 0",
                "assert math.isclose(circle_area(0.5), math.pi / 4)",
            ],
            "import math\n\n\ndef circle_area(r):\n    return 2 * math.pi * r",
            {"setup": "import math"},
        ),
        (
            "Write functions to convert between camelCase and snake_case names.",
            """
         import re


         def to_snake(name):
             return re.sub(r'([A-Z])', lambda m: '_' + m.group(1).lower(), name)


         def to_camel(name):
             head, *rest = name.split('_')
             return head + ''.join(part.capitalize() for part in rest)
         """,
            [
                "assert to_snake('helloWorld') == 'hello_world'",
                "assert to_camel('hello_world') == 'helloWorld'",
                "assert to_camel(to_snake('fooBarBaz')) == 'fooBarBaz'",
            ],
            """
         import re


         def to_snake(name):
             return re.sub(r'([A-Z])', r'_\\1', name)


         def to_camel(name):
             head, *rest = name.split('_')
             return head + ''.join(part.capitalize() for part in rest)
         """,
            {"styles": ["two_functions"]},
        ),
        (
            "Write a function that keeps the palindromes of a list of words.",
            "def palindromes(words):\n    return [w for w in words if w == w[::-1]]",
            [
                "assert palindromes(WORDS) == ['bob', 'kayak']",
                "assert palindromes([]) == []",
                "assert palindromes(WORDS[:1]) == []",
            ],
            "def palindromes(words):\n    return [w for w in words if len(w) > 3]",
            {"setup": "WORDS = ['apple', 'bob', 'kayak', 'tree']"},
        ),
        (
            "Write a function to find the largest sum of a non-empty run of consecutive list items.",
            """
         def best_run(nums):
             best = current = nums[0]
             for x in nums[1:]:
                 current = max(x, current + x)
                 best = max(best, current)
             return best
         """,
            [
                "assert best_run([1, -2, 3, 4, -1]) == 7",
                "assert best_run([-3, -1, -2]) == -1",
                "assert best_run([5] * 3) == 15",
            ],
            "def best_run(nums):\n    return sum(x for x in nums if x > 0)",
            {},
        ),
        (
            "Write a function to sum the main diagonal of a square grid.",
            "def diagonal_sum(grid):\n    return sum(grid[i][i] for i in range(len(grid)))",
            [
                "assert diagonal_sum(make_grid(3)) == 12",
                "assert diagonal_sum(make_grid(1)) == 0",
                "assert diagonal_sum([[1, 2], [3, 4]]) == 5",
            ],
            "def diagonal_sum(grid):\n    return sum(grid[0])",
            {"setup": "def make_grid(n):\n    return [[i * n + j for j in range(n)] for i in range(n)]"},
        ),
        (
            "Write a function to compute the n-th harmonic number 1 + 1/2 + ... + 1/n.",
            "def harmonic(n):\n    return sum(1 / k for k in range(1, n + 1))",
            [
                "assert math.isclose(harmonic(1), 1.0)",
                "assert math.isclose(harmonic(4), 25 / 12)",
                "assert harmonic(0) == 0",
            ],
            "def harmonic(n):\n    return sum(1 / k for k in range(1, n))",
            {"setup": "import math"},
        ),
        (
            "Write functions to convert Celsius to Fahrenheit and back.",
            "def c_to_f(c):\n    return c * 9 / 5 + 32\n\n\ndef f_to_c(f):\n    return (f - 32) * 5 / 9",
            ["assert c_to_f(100) == 212", "assert f_to_c(32) == 0", "assert round(f_to_c(c_to_f(37)), 6) == 37"],
            "def c_to_f(c):\n    return c * 9 / 5 + 32\n\n\ndef f_to_c(f):\n    return (f - 32) * 9 / 5",
            {"styles": ["two_functions"]},
        ),
        (
            "Write a function to drop repeated items from a list, keeping first occurrences in order.",
            "def first_occurrences(xs):\n    return list(dict.fromkeys(xs))",
            [
                "assert first_occurrences([3, 1, 3, 2, 1]) == [3, 1, 2]",
                "assert first_occurrences([]) == []",
                "assert first_occurrences(list('abca') * 2) == ['a', 'b', 'c']",
            ],
            "def first_occurrences(xs):\n    return sorted(set(xs))",
            {},
        ),
        (
            "Write a function to map each word of a sentence to its length.",
            "def word_lengths(sentence):\n    return {w: len(w) for w in sentence.split()}",
            [
                "assert word_lengths(' '.join(['a', 'bb'])) == {'a': 1, 'bb': 2}",
                "assert word_lengths('') == {}",
                "assert word_lengths('xyz xyz') == {'xyz': 3}",
            ],
            "def word_lengths(sentence):\n    return {len(w): w for w in sentence.split()}",
            {},
        ),
        (
            "Write a function to count the letters of a string, ignoring case and non-letters.",
            """
         def letter_histogram(s):
             counts = {}
             for ch in s.lower():
                 if ch.isalpha():
                     counts[ch] = counts.get(ch, 0) + 1
             return counts
         """,
            [
                "assert Counter(letter_histogram('abca')) == Counter({'a': 2, 'b': 1, 'c': 1})",
                "assert letter_histogram('A a!') == {'a': 2}",
                "assert letter_histogram('') == {}",
            ],
            """
         def letter_histogram(s):
             counts = {}
             for ch in s:
                 if ch.isalpha():
                     counts[ch] = counts.get(ch, 0) + 1
             return counts
         """,
            {"setup": "from collections import Counter"},
        ),
    ]


def _mbpp_specs_b() -> list[tuple]:
    return [
        (
            "Write a function to find the n-th Fibonacci number, with fib(0) = 0 and fib(1) = 1.",
            "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
            ["assert fib(0) == 0", "assert fib(1) == 1", "assert fib(2 * 5) == 55"],
            "def fib(n):\n    a, b = 1, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
            {},
        ),
        (
            "Write functions to write a non-negative integer in a given base and to read it back.",
            """
         DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'


         def to_base(n, base):
             out = ''
             while True:
                 n, r = divmod(n, base)
                 out = DIGITS[r] + out
                 if n == 0:
                     return out


         def from_base(s, base):
             return int(s, base)
         """,
            [
                "assert to_base(10, 2) == '1010'",
                "assert from_base('ff', 16) == 255",
                "assert from_base(to_base(12345, 7), 7) == 12345",
            ],
            """
         DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'


         def to_base(n, base):
             out = ''
             while True:
                 n, r = divmod(n, base)
                 out = out + DIGITS[r]
                 if n == 0:
                     return out


         def from_base(s, base):
             return int(s, base)
         """,
            {"styles": ["two_functions"]},
        ),
        (
            "Write a function to check whether a non-negative integer is a perfect square.",
            "import math\n\n\ndef is_square(n):\n    return math.isqrt(n) ** 2 == n",
            [
                "assert is_square(16) is True and is_square(15) is False",
                "assert all(is_square(k * k) for k in range(50))",
                "assert is_square(math.factorial(4) + 1)",
            ],
            "import math\n\n\ndef is_square(n):\n    return n > 1 and math.sqrt(n) == int(math.sqrt(n))",
            {"setup": "import math"},
        ),
        (
            "Write a function to find the median of a list of numbers.",
            """
         def median(nums):
             s = sorted(nums)
             mid = len(s) // 2
             return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
         """,
            ["assert median([3, 1, 2]) == 2", "assert median([4, 1, 3, 2]) == 2.5", "assert median([7]) == 7"],
            """
         def median(nums):
             mid = len(nums) // 2
             return nums[mid] if len(nums) % 2 else (nums[mid - 1] + nums[mid]) / 2
         """,
            {},
        ),
        (
            "Write a function to price an order given a dictionary of unit prices.",
            "def total_cost(order, prices):\n    return sum(qty * prices[item] for item, qty in order.items())",
            [
                "assert total_cost({'apple': 2, 'fig': 1}, PRICES) == 8",
                "assert total_cost({}, PRICES) == 0",
                "assert total_cost({'pear': 3}, PRICES) == 15",
            ],
            "def total_cost(order, prices):\n    return sum(prices[item] for item in order)",
            {"setup": "PRICES = {'apple': 3, 'pear': 5, 'fig': 2}"},
        ),
        (
            "Write a function to flatten nested tuples into a list.",
            """
         def flatten_tuple(t):
             out = []
             for item in t:
                 if isinstance(item, tuple):
                     out.extend(flatten_tuple(item))
                 else:
                     out.append(item)
             return out
         """,
            [
                "assert flatten_tuple((1, (2, (3, 4)), 5)) == [1, 2, 3, 4, 5]",
                "assert flatten_tuple(()) == []",
                "assert flatten_tuple(((),) * 3) == []",
            ],
            """
         def flatten_tuple(t):
             out = []
             for item in t:
                 out.extend(item if isinstance(item, tuple) else [item])
             return out
         """,
            {},
        ),
        (
            "Write functions to tell leap years and the number of days in a month.",
            """
         def is_leap(year):
             return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


         def days_in_month(year, month):
             if month == 2:
                 return 29 if is_leap(year) else 28
             return 30 if month in (4, 6, 9, 11) else 31
         """,
            [
                "assert is_leap(2000) and not is_leap(1900)",
                "assert days_in_month(2024, 2) == 29",
                "assert [days_in_month(2023, m) for m in (2, 4, 12)] == [28, 30, 31]",
            ],
            """
         def is_leap(year):
             return year % 4 == 0


         def days_in_month(year, month):
             if month == 2:
                 return 29 if is_leap(year) else 28
             return 30 if month in (4, 6, 9, 11) else 31
         """,
            {"styles": ["two_functions"]},
        ),
        (
            "Write a function to check whether a sentence uses every letter of the alphabet.",
            "import string\n\n\ndef pangram(s):\n    return set(string.ascii_lowercase) <= set(s.lower())",
            [
                "assert pangram(string.ascii_uppercase)",
                "assert pangram('hello') is False",
                "assert pangram('Pack my box with five dozen liquor jugs')",
            ],
            "import string\n\n\ndef pangram(s):\n    return set(string.ascii_lowercase) <= set(s)",
            {"setup": "import string"},
        ),
        (
            "Write a function to count the occurrences of a substring, overlapping ones included.",
            """
         def count_overlapping(s, sub):
             return sum(s.startswith(sub, i) for i in range(len(s) - len(sub) + 1))
         """,
            [
                "assert count_overlapping('aaaa', 'aa') == 3",
                "assert count_overlapping('abc', 'd') == 0",
                "assert count_overlapping('ab' * 3, 'bab') == 2",
            ],
            "def count_overlapping(s, sub):\n    return s.count(sub)",
            {},
        ),
        (
            "Write a function to add two fractions given as (numerator, denominator) and reduce the result.",
            """
         import math


         def add_fractions(a, b):
             num = a[0] * b[1] + b[0] * a[1]
             den = a[1] * b[1]
             g = math.gcd(num, den)
             return (num // g, den // g)
         """,
            [
                "assert add_fractions((1, 2), (1, 3)) == (5, 6)",
                "assert Fraction(*add_fractions((1, 4), (1, 4))) == Fraction(1, 2)",
                "assert add_fractions((2, 4), (0, 1)) == (1, 2)",
            ],
            "def add_fractions(a, b):\n    return (a[0] * b[1] + b[0] * a[1], a[1] * b[1])",
            {"setup": "from fractions import Fraction"},
        ),
        (
            "Write functions for the mean and the population variance of a list of numbers.",
            """
         def mean_of(nums):
             return sum(nums) / len(nums)


         def variance_of(nums):
             m = mean_of(nums)
             return sum((x - m) ** 2 for x in nums) / len(nums)
         """,
            [
                "assert mean_of([1, 2, 3]) == 2",
                "assert variance_of([1, 2, 3, 4]) == 1.25",
                "assert variance_of([5] * 2) == 0",
            ],
            """
         def mean_of(nums):
             return sum(nums) / len(nums)


         def variance_of(nums):
             m = mean_of(nums)
             return sum((x - m) ** 2 for x in nums) / (len(nums) - 1)
         """,
            {"styles": ["two_functions"]},
        ),
        (
            "Write a function to check that the brackets (), [] and {} in a string are balanced.",
            """
         def balanced(s):
             pairs = {')': '(', ']': '[', '}': '{'}
             stack = []
             for ch in s:
                 if ch in '([{':
                     stack.append(ch)
                 elif ch in pairs:
                     if not stack or stack.pop() != pairs[ch]:
                         return False
             return not stack
         """,
            ["assert balanced('([]{})')", "assert not balanced('(]')", "assert not balanced('((' + ')')"],
            """
         def balanced(s):
             return sum(ch in '([{' for ch in s) == sum(ch in ')]}' for ch in s)
         """,
            {},
        ),
    ]


# ------------------------------------------------------------------------------------------------------ test


def _run_humaneval(task: dict, completion: str) -> None:
    program = task["prompt"] + completion + "\n" + task["test"] + f"\ncheck({task['entry_point']})"
    exec(compile(program, task["task_id"], "exec"), {"__name__": "__main__"})


def _run_mbpp(task: dict, code: str) -> None:
    namespace: dict = {"__name__": "__main__"}
    exec(task["test_setup_code"], namespace)
    exec(code, namespace)
    for test in task["test_list"]:
        exec(test, namespace)


def _fails(run, *args) -> bool:
    try:
        run(*args)
    except Exception:
        return True
    return False


def test_the_generated_tasks_grade_as_intended_in_plain_python():
    he, mbpp = humaneval_style_tasks(), mbpp_style_tasks()
    assert (len(he), len(mbpp)) == (N_HUMANEVAL, N_MBPP)
    assert len({t["task_id"] for t in he}) == N_HUMANEVAL and len({t["task_id"] for t in mbpp}) == N_MBPP
    for task in he:
        _run_humaneval(task, task["canonical_solution"])
        for wrong in task["wrong_solutions"]:
            assert _fails(_run_humaneval, task, wrong), (task["task_id"], wrong)
    for task in mbpp:
        _run_mbpp(task, task["code"])
        assert _fails(_run_mbpp, task, task["wrong_code"]), task["task_id"]
        assert len(task["test_list"]) == 3 and task["challenge_test_list"] == []
    counts = {style: sum(style in t["styles"] for t in he) for style in HUMANEVAL_STYLES}
    assert all(n >= MIN_PER_STYLE for n in counts.values()), counts
    assert sum("typing_import" in t["styles"] for t in he) >= 3
    assert sum("canonical_uses_prompt_helper" in t["styles"] for t in he) >= 3
    assert sum(bool(t["test_setup_code"]) for t in mbpp) >= 8
    assert sum("two_functions" in t["styles"] for t in mbpp) >= 3
    assert json.loads(json.dumps(he + mbpp)) == he + mbpp  # JSONL-ready: every field is a string, int or list
