"""Each test's outcome from the JUnit XML file pytest wrote: the one thing the swe grader believes.

A node id (`tests/test_a.py::TestX::test_y[1]`) appears in the XML as a `testcase` with a `classname`
(`tests.test_a.TestX`) and a `name` (`test_y[1]`); `junit_key` makes the same pair from the id. A test
passes only when every testcase with its key has no `failure`, `error` or `skipped` child (xfail is
written as skipped, a strict xpass as a failure) and there is at least one: a missing test fails.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

NOT_PASSED = ("failure", "error", "skipped")
MAX_MESSAGE = 400


@dataclass(frozen=True)
class Outcome:
    passed: bool
    kind: str  # "passed", "failure", "error", "skipped"
    message: str = ""


def junit_key(node_id: str) -> tuple[str, str]:
    """The (classname, name) pytest's JUnit writer gives a node id (with no junit_prefix)."""
    path, bracket, params = node_id.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def read_outcomes(xml_text: str) -> dict[tuple[str, str], Outcome] | None:
    """Every testcase's outcome by key; None when the file is not JUnit XML pytest could have written."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return None
    outcomes: dict[tuple[str, str], Outcome] = {}
    for case in root.iter("testcase"):
        key = (case.get("classname", ""), case.get("name", ""))
        outcome = case_outcome(case)
        earlier = outcomes.get(key)
        if earlier is None or earlier.passed:  # a second testcase (teardown error) can only make it worse
            outcomes[key] = outcome
    return outcomes


def case_outcome(case: ET.Element) -> Outcome:
    for child in case:
        if child.tag in NOT_PASSED:
            message = child.get("message") or (child.text or "")
            return Outcome(False, child.tag, message.strip()[:MAX_MESSAGE])
    return Outcome(True, "passed")


def outcome_of(node_id: str, outcomes: dict[tuple[str, str], Outcome]) -> Outcome:
    return outcomes.get(junit_key(node_id), Outcome(False, "missing"))
