"""The real-suite grader on a tiny generated package: the fix scores 1, the broken tree and bad edits 0."""

from __future__ import annotations

import os

import pytest
from swe_fixture import BROKEN, CORE, FAIL_TO_PASS, FILES, PASS_TO_PASS

from warmstart.envs.sandbox import bubblewrap as sandbox
from warmstart.envs.swe.grader import grade
from warmstart.envs.swe.junit import junit_key, read_outcomes
from warmstart.envs.swe.paths import applicable
from warmstart.envs.swe.suite import read_report

LIMITS = sandbox.Limits(wall_s=60, cpu_s=60, memory_bytes=2 << 30, open_files=256)


def graded(python, changes, fail_to_pass=FAIL_TO_PASS, pass_to_pass=PASS_TO_PASS):
    return grade(FILES, BROKEN, changes, fail_to_pass, pass_to_pass, python, LIMITS)


def test_the_fix_scores_one(sandbox_python):
    verdict = graded(sandbox_python, {"calc/core.py": CORE})
    assert verdict.reward == 1.0 and verdict.passed, verdict.details
    assert verdict.details["changed_files"] == ["calc/core.py"]


def test_no_change_scores_zero(sandbox_python):
    verdict = graded(sandbox_python, {})
    assert verdict.reward == 0.0
    assert verdict.details["fail_to_pass"] == 0 and verdict.details["pass_to_pass"] == len(PASS_TO_PASS)


def test_a_fix_that_breaks_another_test_scores_zero(sandbox_python):
    verdict = graded(sandbox_python, {"calc/core.py": CORE.replace("bool(a and b)", "bool(a or b)")})
    assert verdict.reward == 0.0 and verdict.details["fail_to_pass"] == 1


def test_a_missing_or_unknown_test_id_fails(sandbox_python):
    verdict = graded(sandbox_python, {"calc/core.py": CORE}, pass_to_pass=["tests/test_core.py::test_nothing"])
    assert verdict.reward == 0.0


def test_a_new_module_in_a_package_is_applied(sandbox_python):
    fixed = CORE.replace('"""Small numeric helpers."""', "from .limits import upper").replace(
        "        return high\n    return value", "        return upper(high)\n    return value"
    )
    broken_core = BROKEN["calc/core.py"]
    assert fixed != broken_core
    changes = {"calc/limits.py": "def upper(high):\n    return high\n", "calc/core.py": fixed}
    assert graded(sandbox_python, changes).reward == 1.0


@pytest.mark.parametrize(
    "path, applied",
    [
        ("calc/core.py", True),
        ("calc/new.py", True),
        ("README.md", False),
        ("calc/data.json", False),
        ("newtop.py", False),
        ("calc/sub/new.py", False),
        ("tests/test_core.py", False),
        ("calc/test_x.py", False),
        ("calc/x_test.py", False),
        ("conftest.py", False),
        ("calc/conftest.py", False),
        ("pyproject.toml", False),
        ("calc/pytest.ini", False),
        ("setup.cfg", False),
        ("tox.ini", False),
        ("calc/sitecustomize.py", False),
        ("calc/evil.pth", False),
        ("calc/pytest.py", False),
        (".git/config", False),
        ("calc/.hidden.py", False),
    ],
)
def test_which_paths_the_grader_applies(path, applied):
    assert applicable(path, {**FILES, **BROKEN}) is applied


@pytest.mark.parametrize(
    "path, applied",
    [
        ("calc/core.py", True),
        ("calc/new.py", True),
        ("unit_tests/helpers.py", False),
        ("unit_tests/deep/more.py", False),
        ("calc/test_listed.py", False),
        ("calc/check_core.py", False),  # a test file only `python_files` names: listed by mining
    ],
)
def test_the_task_sets_test_paths_are_never_applied(path, applied):
    helpers = (
        "unit_tests/__init__.py",
        "unit_tests/helpers.py",
        "unit_tests/deep/__init__.py",
        "unit_tests/deep/more.py",
    )
    original = {**FILES, **BROKEN, "calc/check_core.py": "", **dict.fromkeys(helpers, "")}
    assert applicable(path, original, ["calc/check_core.py", "unit_tests/"]) is applied


def test_junit_keys_match_what_pytest_writes():
    assert junit_key("tests/test_a.py::TestX::test_y[1-a::b]") == ("tests.test_a.TestX", "test_y[1-a::b]")
    assert junit_key("test_top.py::test_z") == ("test_top", "test_z")
    xml = (
        '<testsuites><testsuite><testcase classname="t" name="a"/>'
        '<testcase classname="t" name="b"><skipped type="pytest.xfail" message="x"/></testcase>'
        '<testcase classname="t" name="c"/><testcase classname="t" name="c"><error message="teardown"/></testcase>'
        "</testsuite></testsuites>"
    )
    outcomes = read_outcomes(xml)
    assert outcomes[("t", "a")].passed and not outcomes[("t", "b")].passed and not outcomes[("t", "c")].passed
    assert read_outcomes("PASSED 10 passed") is None


# What ordinary suites do, which the runner's defences must let through: a test decorated by a library
# (mock.patch), test methods inherited from a helper module, a relative write in the working directory,
# and a temporary directory removed through dir_fds (shutil.rmtree).
ORDINARY_TESTS = {
    "tests/helpers.py": "from calc import clamp\n\n\nclass HighTests:\n    def test_high(self):\n        assert clamp(15, 0, 10) == 10\n",
    "tests/test_ordinary.py": """import os
import tempfile
from unittest import mock

from calc import clamp
from helpers import HighTests


class TestInherited(HighTests):
    pass


@mock.patch("os.getcwd", return_value="/nowhere")
def test_patched(getcwd):
    assert os.getcwd() == "/nowhere" and clamp(15, 0, 10) == 10


def test_files():
    with open("relative.txt", "w") as f:
        f.write("x")
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "a", "b"))
        open(os.path.join(tmp, "a", "b", "c"), "w").close()
    assert clamp(15, 0, 10) == 10
""",
}
ORDINARY_IDS = [
    "tests/test_ordinary.py::TestInherited::test_high",
    "tests/test_ordinary.py::test_patched",
    "tests/test_ordinary.py::test_files",
]


def test_ordinary_suites_pass_the_runner_checks(sandbox_python):
    original = {**FILES, **ORDINARY_TESTS}
    fixed = grade(original, BROKEN, {"calc/core.py": CORE}, ORDINARY_IDS, PASS_TO_PASS, sandbox_python, LIMITS)
    assert fixed.reward == 1.0, fixed.details
    broken = grade(original, BROKEN, {}, ORDINARY_IDS, PASS_TO_PASS, sandbox_python, LIMITS)
    assert broken.details["fail_to_pass"] == 0 and broken.details["pass_to_pass"] == len(PASS_TO_PASS)


def test_a_report_is_read_only_as_a_regular_file(tmp_path):
    (tmp_path / "real.xml").write_text("<testsuites/>")
    (tmp_path / "link.xml").symlink_to(tmp_path / "real.xml")
    os.mkfifo(tmp_path / "fifo.xml")
    (tmp_path / "dir.xml").mkdir()
    assert read_report(tmp_path, "real.xml") == "<testsuites/>"
    assert [read_report(tmp_path, n) for n in ("link.xml", "fifo.xml", "dir.xml", "absent.xml")] == [None] * 4
    (tmp_path.parent / "results-link").symlink_to(tmp_path)
    assert read_report(tmp_path.parent / "results-link", "real.xml") is None


@pytest.mark.parametrize(
    "changes",
    [
        {"calc/a\u0000.py": "x = 1\n"},
        {"calc/" + "a" * 300 + ".py": "x = 1\n"},
        {"calc/core.py": CORE.replace("Small", "\ud800")},  # the fix, with a lone surrogate
    ],
    ids=["nul", "long-name", "surrogate"],
)
def test_a_change_no_tree_can_hold_is_refused_with_a_reason(changes):
    # (A directory or a path under a file is never applied: no new file outside a module is.)
    verdict = grade(FILES, BROKEN, changes, FAIL_TO_PASS, PASS_TO_PASS, None, LIMITS)  # refused before any run
    assert verdict.reward == 0.0 and not verdict.passed and verdict.infra_error is None
    assert verdict.details["reason"].startswith("a change cannot be written: calc")
