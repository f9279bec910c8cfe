"""`warmstart tasks mine-bugs` on the tiny package: tasks whose tests really fail, bad input refused."""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from swe_fixture import BROKEN, FILES

from warmstart.envs.sandbox import bubblewrap as sandbox
from warmstart.envs.swe.env import SweEnv, SweOptions
from warmstart.envs.swe.grader import grade
from warmstart.envs.swe.mining import MineSettings, mine_to_directory, stable_order
from warmstart.envs.swe.mutations import mutations
from warmstart.envs.swe.paths import find_test_paths
from warmstart.envs.swe.suite import write_tree
from warmstart.envs.swe.taskset import read_task_set

SETTINGS = MineSettings(max_failing=3, max_tasks=4, max_mutations=10, wall_s=60)


def package(root: Path, files: dict[str, str]) -> Path:
    write_tree(root, files)
    return root


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "warmstart.cli", *args], capture_output=True, text=True, timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_mined_tasks_fail_their_tests_and_the_original_file_fixes_them(tmp_path, sandbox_python):
    source = package(tmp_path / "calc", FILES)
    out = tmp_path / "tasks" / "calc"
    result = mine_to_directory(source, out, "calc", sandbox_python.host, SETTINGS, force=False)
    task_set = read_task_set(out)
    assert task_set.snapshot == FILES
    assert 1 <= len(task_set.tasks) == len(result.tasks) <= SETTINGS.max_tasks
    manifest = task_set.manifest
    assert manifest["tests"] == 6 and manifest["tasks"] == len(task_set.tasks)
    assert manifest["mutations_tried"] >= manifest["tasks"] and manifest["python"] == sandbox_python.host
    limits = sandbox.Limits(wall_s=60, cpu_s=60, memory_bytes=2 << 30, open_files=256)
    for task in task_set.tasks:
        assert 1 <= len(task["fail_to_pass"]) <= SETTINGS.max_failing
        assert len(task["fail_to_pass"]) + len(task["pass_to_pass"]) == 6
        assert all(test_id.split("::")[-1] in task["problem"] for test_id in task["fail_to_pass"])
        assert task["file"] not in task["problem"]  # the statement names the failing tests, not the change
        broken = {task["file"]: task["broken"]}
        f2p, p2p = task["fail_to_pass"], task["pass_to_pass"]
        assert grade(FILES, broken, {}, f2p, p2p, sandbox_python, limits).reward == 0.0
        fix = {task["file"]: FILES[task["file"]]}
        assert grade(FILES, broken, fix, f2p, p2p, sandbox_python, limits).reward == 1.0


def test_mutations_are_small_text_edits():
    found = mutations("calc/core.py", FILES["calc/core.py"])
    kinds = {m.kind for m in found}
    assert {"flipped comparison", "off by one", "removed if branch", "and/or swapped", "+/- swapped"} <= kinds
    assert {"wrong default", "range bound off by one"} <= kinds
    original = FILES["calc/core.py"].splitlines()
    for m in found:
        codes = difflib.SequenceMatcher(None, original, m.source.splitlines()).get_opcodes()
        changed = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in codes if tag != "equal")
        assert 1 <= changed <= 3, m


def test_not_a_python_package(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no code here\n")
    line = one_error_line(cli("tasks", "mine-bugs", str(tmp_path / "empty"), "--out", str(tmp_path / "out")))
    assert "not a Python package" in line and str(tmp_path / "empty") in line
    assert not (tmp_path / "out").exists()


def test_a_suite_failing_before_any_mutation(tmp_path, sandbox_python):
    source = package(tmp_path / "calc", {**FILES, **BROKEN})
    out = tmp_path / "out"
    args = ("tasks", "mine-bugs", str(source), "--out", str(out), "--python", sandbox_python.host)
    line = one_error_line(cli(*args))
    assert "fails before any mutation" in line and "test_clamp_high" in line
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize(
    "bad_test, needle",
    [("from calc import nothing_here\n", "test_broken.py"), ("def test_x(:\n    pass\n", "test_broken.py")],
)
def test_tests_that_cannot_be_collected(tmp_path, sandbox_python, bad_test, needle):
    source = package(tmp_path / "calc", {**FILES, "tests/test_broken.py": bad_test})
    out = tmp_path / "out"
    line = one_error_line(cli("tasks", "mine-bugs", str(source), "--out", str(out), "--python", sandbox_python.host))
    assert "cannot be collected" in line and needle in line
    assert not out.exists()


def test_an_interpreter_without_pytest(tmp_path):
    source = package(tmp_path / "calc", FILES)
    line = one_error_line(
        cli("tasks", "mine-bugs", str(source), "--out", str(tmp_path / "o"), "--python", "/usr/bin/python3")
    )
    assert "pytest" in line and "/usr/bin/python3" in line


def test_an_existing_task_set_is_kept_without_force(tmp_path):
    source = package(tmp_path / "calc", FILES)
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"keep": True}))
    line = one_error_line(cli("tasks", "mine-bugs", str(source), "--out", str(out)))
    assert "--force" in line and json.loads((out / "manifest.json").read_text()) == {"keep": True}


def test_a_package_that_patches_pytest_itself(tmp_path, sandbox_python):
    patching = {
        **FILES,
        "calc/__init__.py": "import unittest\nunittest.TestCase.assertTrue = print\n" + FILES["calc/__init__.py"],
    }
    source = package(tmp_path / "calc", patching)
    line = one_error_line(
        cli("tasks", "mine-bugs", str(source), "--out", str(tmp_path / "o"), "--python", sandbox_python.host)
    )
    assert "changed pytest's machinery" in line and str(source) in line


# A suite whose second test reads what the first registered: it passes only in collection order.
ORDERED = {
    **FILES,
    "calc/registry.py": "_items = {}\n\n\ndef add(name, value):\n    _items[name] = value\n\n\ndef get(name):\n    return _items.get(name)\n",
    "tests/test_registry.py": (
        "from calc import registry\n\n\n"
        "def test_register():\n    registry.add('x', 1)\n    assert registry.get('x') == 1\n\n\n"
        "def test_lookup_after_register():\n    assert registry.get('x') == 1\n"
    ),
}


def test_tests_are_stored_and_graded_in_collection_order(tmp_path, sandbox_python):
    out = tmp_path / "tasks" / "calc"
    mine_to_directory(package(tmp_path / "calc", ORDERED), out, "calc", sandbox_python.host, SETTINGS, force=False)
    env = SweEnv(SweOptions(tasks_dir=str(out)))
    for task in env.all_tasks:  # sorted, test_lookup_after_register ran first: every reference scored 0
        assert env.verify(task, env.reference(task, None)).reward == 1.0, task.id
    task_set = read_task_set(out)
    order = task_set.manifest["ids"]
    assert order.index("tests/test_registry.py::test_register") < order.index(
        "tests/test_registry.py::test_lookup_after_register"
    )
    for task in task_set.tasks:
        assert [i for i in order if i in task["pass_to_pass"]] == task["pass_to_pass"]


def test_only_the_variants_of_one_parametrized_test_are_sorted():
    collected = ["b.py::test_z", "b.py::test_p[y]", "b.py::test_p[x]", "a.py::test_a", "b.py::C::test_q[2]"]
    assert stable_order(collected) == [
        "b.py::test_z",
        "b.py::test_p[x]",
        "b.py::test_p[y]",
        "a.py::test_a",
        "b.py::C::test_q[2]",
    ]


# Tests beside the code, in the package's own folder (no tests/ directory), as some packages keep them.
BESIDE = {
    **{path: text for path, text in FILES.items() if not path.startswith("tests/")},
    "calc/test_core.py": FILES["tests/test_core.py"],
    "pyproject.toml": '[project]\nname = "calc"\nversion = "0.1"\n',
}


def test_a_package_whose_tests_sit_beside_its_code_mines_and_grades(tmp_path, sandbox_python):
    """calc/ holds a test file, but its __init__.py imports calc/core.py: a folder of code, not of tests,
    so its modules are still mined and the agent's fix to them graded."""
    out = tmp_path / "tasks" / "calc"
    mine_to_directory(package(tmp_path / "calc", BESIDE), out, "calc", sandbox_python.host, SETTINGS, force=False)
    task_set = read_task_set(out)
    assert task_set.manifest["test_paths"] == ["calc/test_core.py"]
    assert task_set.tasks and all(task["file"] == "calc/core.py" for task in task_set.tasks)
    env = SweEnv(SweOptions(tasks_dir=str(out)))
    for task in env.all_tasks:
        assert env.verify(task, env.reference(task, None)).reward == 1.0, task.id


def test_test_paths_by_layout():
    base = {path: text for path, text in FILES.items() if not path.startswith("tests/")}
    helpers = {"unit_tests/__init__.py": "", "unit_tests/helpers.py": "from unit_tests.fixtures import x\n"}
    support = {**base, **helpers, "unit_tests/fixtures.py": "x = 1\n", "unit_tests/test_core.py": ""}
    assert find_test_paths(support, ["unit_tests/test_core.py"]) == ["unit_tests/"]  # helpers importing helpers
    assert find_test_paths({**base, "calc/test_core.py": ""}, ["calc/test_core.py"]) == ["calc/test_core.py"]
    assert find_test_paths({**base, "test_calc.py": ""}, ["test_calc.py"]) == ["test_calc.py"]  # the root: inflection
    assert find_test_paths({**FILES}, ["tests/test_core.py"]) == ["tests/"]
    src = {"src/calc/__init__.py": "from . import core\n", "src/calc/core.py": "", "src/calc/test_core.py": ""}
    assert find_test_paths(src, ["src/calc/test_core.py"]) == ["src/calc/test_core.py"]
    # pkg/sub is code because pkg (code: its __init__ imports pkg/core.py) imports it; pkg/t only holds tests.
    nested = {
        "pkg/__init__.py": "from .core import f\nfrom .sub import impl\n",
        "pkg/core.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/impl.py": "",
        "pkg/sub/test_impl.py": "",
        "pkg/t/__init__.py": "",
        "pkg/t/test_core.py": "",
        "pkg/t/helpers.py": "",
    }
    assert find_test_paths(nested, ["pkg/sub/test_impl.py", "pkg/t/test_core.py"]) == ["pkg/sub/test_impl.py", "pkg/t/"]


def test_the_snapshot_leaves_out_a_venv_and_a_task_set_mined_into_the_tree(tmp_path):
    """A venv's modules are not the package's (mining would mutate them); a task set mined into the tree
    earlier holds the unmutated code and every mutation (an agent could read every fix)."""
    from warmstart.envs.swe.snapshot import read_snapshot

    (tmp_path / "calc").mkdir()
    (tmp_path / "calc" / "__init__.py").write_text("X = 1\n")
    (tmp_path / "venv" / "lib").mkdir(parents=True)
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "venv" / "lib" / "six.py").write_text("Y = 2\n")
    earlier = tmp_path / "swe-tasks" / "calc"
    earlier.mkdir(parents=True)
    for name in ("manifest.json", "tasks.jsonl", "snapshot.json"):
        (earlier / name).write_text("{}\n")
    assert sorted(read_snapshot(tmp_path).files) == ["calc/__init__.py"]


# Files the snapshot leaves out (not UTF-8, over 2 MB) that the suite needs: mining had failed with a
# "No such file: /work/repo/..." for a file that is there in the tree (or an import error), naming nothing
# of why; the error names them now.
LATIN1_TEST = (
    "from pathlib import Path\n\n\ndef test_names():\n"
    "    assert (Path(__file__).parent / 'names.txt').read_text(encoding='latin-1') == 'Jos\\xe9\\n'\n"
)
BIG_TEST = "from pathlib import Path\n\n\ndef test_big():\n    assert len((Path(__file__).parent / 'big.txt').read_text()) > 2_000_000\n"
LEGACY_TEST = "from calc.legacy import NAME\n\n\ndef test_legacy():\n    assert NAME == 'Jos\\xe9'\n"
DROPPED = [
    (
        {"tests/test_names.py": LATIN1_TEST},
        {"tests/names.txt": "José\n".encode("latin-1")},
        "tests/names.txt (not UTF-8",
    ),
    ({"tests/test_big.py": BIG_TEST}, {"tests/big.txt": b"x" * 2_100_000}, "tests/big.txt (over 2 MB"),
    (
        {"tests/test_legacy.py": LEGACY_TEST},
        {"calc/legacy.py": "# -*- coding: latin-1 -*-\nNAME = 'José'\n".encode("latin-1")},
        "calc/legacy.py (not UTF-8",
    ),
]


@pytest.mark.parametrize("tests, data, named", DROPPED, ids=["latin-1 data", "over 2 MB", "latin-1 module"])
def test_files_the_snapshot_drops_are_named_when_the_suite_fails_without_them(
    tmp_path, sandbox_python, tests, data, named
):
    source = package(tmp_path / "calc", {**FILES, **tests})
    for path, content in data.items():
        (source / path).write_bytes(content)
    out = tmp_path / "out"
    line = one_error_line(cli("tasks", "mine-bugs", str(source), "--out", str(out), "--python", sandbox_python.host))
    assert "mining's snapshot of the tree left out 1 file" in line, line
    assert named in line and not out.exists()
