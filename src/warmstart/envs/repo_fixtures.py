"""Small repositories with one bug each, written for this project: the `repo` environment's tasks.

Each fixture: the files of the buggy repository (a package and its visible unittest tests), an issue
text, the fix (the files the reference teacher writes), and hidden probes — calls with expected
results, `fail_to_pass` (fail on the buggy code, pass once fixed) and `pass_to_pass` (must keep
passing). Probes never enter the agent's copy.
"""

from __future__ import annotations

STATS = '''"""Small statistics helpers."""


def mean(values):
    return sum(values) / len(values)


def median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
'''

STATS_FIXED = STATS.replace(
    "    ordered = sorted(values)\n    return ordered[len(ordered) // 2]\n",
    "    ordered = sorted(values)\n    middle = len(ordered) // 2\n    if len(ordered) % 2:\n        return ordered[middle]\n"
    "    return (ordered[middle - 1] + ordered[middle]) / 2\n",
)

SLUG = '''"""Turning titles into URL slugs."""


def slugify(title):
    return title.lower().replace(" ", "-")
'''

SLUG_FIXED = '''"""Turning titles into URL slugs."""

import re


def slugify(title):
    words = re.findall(r"[a-z0-9]+", title.lower())
    return "-".join(words)
'''

VERSIONS = '''"""Comparing dotted version strings."""


def parse_version(text):
    return tuple(text.strip().split("."))


def newer(a, b):
    return parse_version(a) > parse_version(b)
'''

VERSIONS_FIXED = VERSIONS.replace(
    '    return tuple(text.strip().split("."))\n', '    return tuple(int(part) for part in text.strip().split("."))\n'
)

FIXTURES = [
    {
        "id": "median-even",
        "issue": "`median([1, 2, 3, 4])` returns 3, but the median of an even number of values is the mean of the two middle ones (2.5).",
        "files": {
            "pystats/__init__.py": "",
            "pystats/stats.py": STATS,
            "tests/__init__.py": "",
            "tests/test_stats.py": "import unittest\n\nfrom pystats.stats import mean, median\n\n\nclass StatsTest(unittest.TestCase):\n"
            "    def test_mean(self):\n        self.assertEqual(mean([1, 2, 3]), 2)\n\n"
            "    def test_median_odd(self):\n        self.assertEqual(median([3, 1, 2]), 2)\n",
        },
        "fix": {"pystats/stats.py": STATS_FIXED},
        "probes": [
            {
                "name": "median_even",
                "kind": "fail_to_pass",
                "module": "pystats.stats",
                "function": "median",
                "args": [[1, 2, 3, 4]],
                "expected": 2.5,
            },
            {
                "name": "median_even_unsorted",
                "kind": "fail_to_pass",
                "module": "pystats.stats",
                "function": "median",
                "args": [[10, 2, 8, 4]],
                "expected": 6.0,
            },
            {
                "name": "median_odd",
                "kind": "pass_to_pass",
                "module": "pystats.stats",
                "function": "median",
                "args": [[5, 1, 3]],
                "expected": 3,
            },
            {
                "name": "mean",
                "kind": "pass_to_pass",
                "module": "pystats.stats",
                "function": "mean",
                "args": [[1, 2, 3, 6]],
                "expected": 3.0,
            },
        ],
    },
    {
        "id": "slug-punctuation",
        "issue": "`slugify('Hello, World!')` gives 'hello,-world!'. Slugs must keep only lowercase letters and digits, words joined by single dashes: 'hello-world'.",
        "files": {
            "textkit/__init__.py": "",
            "textkit/slug.py": SLUG,
            "tests/__init__.py": "",
            "tests/test_slug.py": "import unittest\n\nfrom textkit.slug import slugify\n\n\nclass SlugTest(unittest.TestCase):\n"
            "    def test_simple(self):\n        self.assertEqual(slugify('Hello World'), 'hello-world')\n",
        },
        "fix": {"textkit/slug.py": SLUG_FIXED},
        "probes": [
            {
                "name": "punctuation",
                "kind": "fail_to_pass",
                "module": "textkit.slug",
                "function": "slugify",
                "args": ["Hello, World!"],
                "expected": "hello-world",
            },
            {
                "name": "extra_spaces",
                "kind": "fail_to_pass",
                "module": "textkit.slug",
                "function": "slugify",
                "args": ["  Many   spaces here "],
                "expected": "many-spaces-here",
            },
            {
                "name": "simple",
                "kind": "pass_to_pass",
                "module": "textkit.slug",
                "function": "slugify",
                "args": ["Hello World"],
                "expected": "hello-world",
            },
            {
                "name": "digits",
                "kind": "pass_to_pass",
                "module": "textkit.slug",
                "function": "slugify",
                "args": ["release 2"],
                "expected": "release-2",
            },
        ],
    },
    {
        "id": "version-compare",
        "issue": "`newer('1.10.0', '1.9.0')` is False: version parts are compared as text. Compare them as numbers.",
        "files": {
            "vercmp/__init__.py": "",
            "vercmp/versions.py": VERSIONS,
            "tests/__init__.py": "",
            "tests/test_versions.py": "import unittest\n\nfrom vercmp.versions import newer\n\n\nclass VersionsTest(unittest.TestCase):\n"
            "    def test_patch(self):\n        self.assertTrue(newer('1.0.1', '1.0.0'))\n",
        },
        "fix": {"vercmp/versions.py": VERSIONS_FIXED},
        "probes": [
            {
                "name": "two_digit_minor",
                "kind": "fail_to_pass",
                "module": "vercmp.versions",
                "function": "newer",
                "args": ["1.10.0", "1.9.0"],
                "expected": True,
            },
            {
                "name": "parse",
                "kind": "fail_to_pass",
                "module": "vercmp.versions",
                "function": "parse_version",
                "args": [" 2.0.11 "],
                "expected": (2, 0, 11),
            },
            {
                "name": "patch",
                "kind": "pass_to_pass",
                "module": "vercmp.versions",
                "function": "newer",
                "args": ["1.0.1", "1.0.0"],
                "expected": True,
            },
            {
                "name": "older",
                "kind": "pass_to_pass",
                "module": "vercmp.versions",
                "function": "newer",
                "args": ["0.9", "1.0"],
                "expected": False,
            },
        ],
    },
]
