"""Which of an agent's file changes the swe grader applies: the defence by construction.

What runs at grading is the original repository's tests, configuration and layout, plus the agent's
changes to source files only. Dropped, whatever their content:
- tests: any path with a `tests`/`test`/`testing` directory, `test_*.py`, `*_test.py`, `test.py`, `tests.py`;
- every `conftest.py`, anywhere (pytest loads one from the rootdir and every directory above a test);
- what configures pytest or the interpreter: pytest.ini, pyproject.toml, setup.cfg, tox.ini, setup.py,
  `*.pth`, sitecustomize.py, usercustomize.py;
- anything under a directory or file whose name starts with a dot (.git, .pytest_cache, ...);
- a new file that is not a `.py` file in a package directory the original already had (an `__init__.py`
  beside it), or whose name would shadow what the runner imports (pytest, _pytest, pluggy, ...): a new
  top-level module or directory could be imported in the place of something else.

`unwritable` names the changes no tree could hold (a path a file cannot have, text UTF-8 cannot encode,
a path that is a directory of the tree or lies under one of its files): the grader refuses those
outright (a 0 with the reason), rather than let writing the tree raise.
"""

from __future__ import annotations

import posixpath

from ..repo import clean_path, encodable, tree_conflict

TEST_DIRS = frozenset({"tests", "test", "testing"})
CONFIG_FILES = frozenset(
    {"pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini", "setup.py", "sitecustomize.py", "usercustomize.py"}
)
SHADOWING = frozenset({"pytest", "_pytest", "pluggy", "iniconfig", "packaging", "py", "conftest"})


def is_test_path(path: str) -> bool:
    parts = path.split("/")
    name = parts[-1]
    return (
        any(part in TEST_DIRS for part in parts[:-1])
        or name in ("test.py", "tests.py", "conftest.py")
        or (name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")))
    )


def is_protected(path: str) -> bool:
    """Never taken from the agent: tests, pytest's and the interpreter's configuration, hidden paths."""
    parts = path.split("/")
    name = parts[-1]
    return (
        is_test_path(path)
        or name in CONFIG_FILES
        or name.endswith(".pth")
        or any(part.startswith(".") for part in parts)
    )


def applicable(path: str, original: dict[str, str]) -> bool:
    """Whether the agent's write to `path` (already a clean relative path) reaches the graded copy."""
    if is_protected(path):
        return False
    if path in original:
        return True
    directory, name = posixpath.split(path)
    module = name.removesuffix(".py")
    return (
        name.endswith(".py")
        and module not in SHADOWING
        and posixpath.join(directory, "__init__.py") in original
        and bool(directory)
    )


def applied_changes(changes: dict[str, str], original: dict[str, str]) -> dict[str, str]:
    return {p: c for p, c in changes.items() if applicable(p, original) and original.get(p) != c}


def source_roots(original: dict[str, str]) -> list[str]:
    """sys.path entries for the repository, from the original's layout: its root, and `src` if it has one."""
    return ["", "src"] if any(p.startswith("src/") for p in original) else [""]


def unwritable(changes: dict[str, str], start: dict[str, str]) -> dict[str, str]:
    """Why each change (by path) could not be written into the tree `start` holds with the changes."""
    tree = {**start, **changes}
    reasons = {}
    for path, content in changes.items():
        if clean_path(path) != path:
            reasons[path] = "not a path a file can have (a NUL byte, an over-long name, not normalised)"
        elif not isinstance(content, str) or not encodable(content):
            reasons[path] = "not text UTF-8 can encode"
        elif conflict := tree_conflict(path, tree):
            reasons[path] = conflict.removeprefix("error: ")
    return reasons
