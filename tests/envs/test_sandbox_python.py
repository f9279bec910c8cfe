"""`env.options.python`: programs import the packages of an interpreter the user names (mounted read-only),
in both sandbox modes and through both grading paths; the default stays the standard library only; a
bad interpreter is one error line, nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import small_recipe, write_recipe_file
from warmstart.envs.python import PythonEnv, PythonOptions
from warmstart.envs.sandbox import bubblewrap
from warmstart.envs.sandbox.interpreter import interpreter
from warmstart.errors import WarmstartError
from warmstart.types import Trajectory

pytestmark = pytest.mark.skipif(bubblewrap.bwrap_path() is None, reason="bubblewrap is not installed")

PACKAGE = "def triple(x):\n    return 3 * x\n"
# A literal-call test and one that needs the proxy (a loop); both import the venv's package.
TASKS = [
    {
        "task_id": "pkg/literal",
        "prompt": 'import sandboxpkg\n\n\ndef f(x: int) -> int:\n    """Triple x with sandboxpkg."""\n',
        "canonical_solution": "    return sandboxpkg.triple(x)\n",
        "test": "def check(candidate):\n    assert candidate(2) == 6\n",
        "entry_point": "f",
    },
    {
        "task_id": "pkg/proxied",
        "prompt": 'import sandboxpkg\n\n\ndef f(x: int) -> int:\n    """Triple x with sandboxpkg."""\n',
        "canonical_solution": "    return sandboxpkg.triple(x)\n",
        "test": "def check(candidate):\n    for x in range(5):\n        assert candidate(x) == 3 * x\n",
        "entry_point": "f",
    },
    {
        "task_id": "pkg/read-only",
        "prompt": 'import os\nimport sandboxpkg\n\n\ndef f() -> str:\n    """Try to write beside sandboxpkg."""\n',
        "canonical_solution": (
            "    try:\n        open(os.path.join(os.path.dirname(sandboxpkg.__file__), 'x.py'), 'w').write('')\n"
            "        return 'written'\n    except OSError:\n        return 'refused'\n"
        ),
        "test": "def check(candidate):\n    assert candidate() == 'refused'\n",
        "entry_point": "f",
    },
]


def make_venv(root: Path) -> Path:
    """A virtual environment of the system's Python with one package of its own (no network needed)."""
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(root)], check=True)
    [site] = root.glob("lib/python3*/site-packages")
    (site / "sandboxpkg.py").write_text(PACKAGE)
    for path in [root, *root.rglob("*")]:  # the sandbox runs as `nobody` when we are root
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    return root / "bin" / "python"


def reference(env, task) -> Trajectory:
    return env.reference(task, None)


def tasks_file(tmp_path) -> str:
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    return str(path)


@pytest.fixture(scope="module")
def venv_python():
    # Not under pytest's own temporary directory: that one is private to us, and `nobody` must reach it.
    root = Path(tempfile.mkdtemp(prefix="warmstart-venv-"))
    root.chmod(0o755)
    yield make_venv(root / "venv")
    shutil.rmtree(root)


@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "per-execution"])
def test_programs_import_the_named_interpreters_packages_read_only(tmp_path, venv_python, zygote):
    env = PythonEnv(PythonOptions(tasks_file=tasks_file(tmp_path), python=str(venv_python), zygote=zygote))
    try:
        by_id = {t.id: t for t in env.all_tasks}
        assert by_id["python/pkg/proxied"].hidden["mode"] == "proxy" and "calls" in by_id["python/pkg/literal"].hidden
        for task in env.all_tasks:
            verdict = env.verify(task, reference(env, task))
            assert verdict.passed, (task.id, verdict)
    finally:
        env.close()


def test_the_default_interpreter_has_the_standard_library_only(tmp_path):
    env = PythonEnv(PythonOptions(tasks_file=tasks_file(tmp_path)))
    try:
        for task in env.all_tasks:
            verdict = env.verify(task, reference(env, task))
            assert not verdict.passed and verdict.infra_error is None
            assert "No module named 'sandboxpkg'" in verdict.details["reason"]
    finally:
        env.close()


def test_an_interpreter_under_a_path_the_sandbox_owns_is_mounted_elsewhere(venv_python):
    python = interpreter(str(venv_python))
    assert str(venv_python).startswith("/tmp/")
    assert python.path.startswith("/python/") and python.site
    assert all(not inside.startswith("/tmp") for _, inside in python.mounts)


@pytest.mark.parametrize(
    "path, message",
    [
        ("/nonexistent/bin/python", "env.options.python: /nonexistent/bin/python does not exist"),
        ("/usr", "env.options.python: /usr is a directory"),
        ("/bin/true", "env.options.python: /bin/true did not run as a Python interpreter"),
    ],
)
def test_a_bad_interpreter_is_one_error_naming_it(tmp_path, path, message):
    with pytest.raises(WarmstartError, match=message):
        PythonEnv(PythonOptions(tasks_file=tasks_file(tmp_path), python=path))


def test_the_cli_refuses_a_bad_interpreter_before_writing_anything(tmp_path):
    run_dir = tmp_path / "run"
    recipe = write_recipe_file(tmp_path / "recipe.toml", small_recipe(run_dir, "env.name=python", train=4, eval_=2))
    command = [sys.executable, "-m", "warmstart.cli", "generate", str(recipe)]
    result = subprocess.run(
        [*command, "--set", "env.options.python='/nonexistent/python'"], capture_output=True, text=True, timeout=300
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "env.options.python: /nonexistent/python does not exist" in errors[0]
    assert not run_dir.exists()
