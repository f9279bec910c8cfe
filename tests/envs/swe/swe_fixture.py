"""A tiny pure-Python package with a pytest suite, and a sandbox interpreter that has pytest.

The interpreter: a virtual environment of the system's Python (which the sandbox user can read, unlike
a Python under /root) with this test run's own pytest, pluggy, iniconfig and packaging copied into its
site-packages: the real pytest, run in the real sandbox, with no download.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
from pathlib import Path

PYTEST_PACKAGES = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py")

CORE = '''"""Small numeric helpers."""


def clamp(value, low, high):
    """`value` limited to [low, high]."""
    if value < low:
        return low
    if value > high:
        return high
    return value


def window(items, size=2):
    """Consecutive runs of `size` items."""
    return [tuple(items[i : i + size]) for i in range(len(items) - size + 1)]


def both(a, b):
    return bool(a and b)
'''

FILES = {
    "calc/__init__.py": "from .core import both, clamp, window\n",
    "calc/core.py": CORE,
    "tests/test_core.py": """from calc import both, clamp, window


def test_clamp_inside():
    assert clamp(5, 0, 10) == 5


def test_clamp_high():
    assert clamp(15, 0, 10) == 10


def test_clamp_low():
    assert clamp(-3, 0, 10) == 0


def test_window():
    assert window([1, 2, 3]) == [(1, 2), (2, 3)]


def test_window_three():
    assert window([1, 2, 3, 4], 3) == [(1, 2, 3), (2, 3, 4)]


def test_both():
    assert both(1, 1) and not both(1, 0)
""",
    "pyproject.toml": '[project]\nname = "calc"\nversion = "0.1"\n\n[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
    "README.md": "calc: small numeric helpers.\n",
}

BROKEN = {"calc/core.py": CORE.replace("        return high", "        return low")}
FAIL_TO_PASS = ["tests/test_core.py::test_clamp_high"]
PASS_TO_PASS = [
    "tests/test_core.py::test_clamp_inside",
    "tests/test_core.py::test_clamp_low",
    "tests/test_core.py::test_window",
    "tests/test_core.py::test_window_three",
    "tests/test_core.py::test_both",
]


def make_sandbox_venv(dest: Path) -> Path:
    """A venv of /usr/bin/python3 with pytest copied in; its python's path."""
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(dest)], check=True)
    (site,) = dest.glob("lib/python3*/site-packages")
    for name in PYTEST_PACKAGES:
        source = Path(importlib.import_module(name).__file__)
        if source.name == "__init__.py":
            shutil.copytree(source.parent, site / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:  # a one-file module (pytest's `py` shim)
            shutil.copy(source, site / source.name)
    return dest / "bin" / "python"
