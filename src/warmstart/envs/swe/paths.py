"""Which of an agent's file changes the swe grader applies: the defence by construction.

What runs at grading is the original repository's tests, configuration and layout, plus the agent's
changes to Python source files only. Dropped, whatever their content:
- anything that is not a `.py` file: a mined bug is always in a Python module, and a data file the tests
  read (`testdata/expected.json`) would otherwise be the agent's to rewrite;
- tests: any path with a `tests`/`test`/`testing` directory, `test_*.py`, `*_test.py`, `test.py`, `tests.py`;
- the task set's `test_paths` (`find_test_paths()`, stored by mining in the manifest): every collected test
  file, and every folder that holds one with all under it (`unit_tests/helpers.py` beside
  `unit_tests/test_core.py`), unless that folder is a source root or holds the package's own code;
- every `conftest.py`, anywhere (pytest loads one from the rootdir and every directory above a test);
- what configures pytest or the interpreter: pytest.ini, pyproject.toml, setup.cfg, tox.ini, setup.py,
  `*.pth`, sitecustomize.py, usercustomize.py;
- anything under a directory or file whose name starts with a dot (.git, .pytest_cache, ...);
- a new file that is not a `.py` file in a package directory the original already had (an `__init__.py`
  beside it), or whose name would shadow what the runner imports (pytest, _pytest, pluggy, ...): a new
  top-level module or directory could be imported in the place of something else.

Which folders hold the package's own code is read from its imports (parsed, never run): a folder
holding a collected test is code when its own `__init__.py` imports a module under it, or when non-test
code outside every test folder does (`calc/__init__.py` importing `calc/core.py` beside
`calc/test_core.py`: tests beside the code). The repository root and `src` are never test folders (a
root-level `test_inflection.py`). A test-support folder whose `__init__.py` imports its own helpers is
taken for code, as every folder was before (docs/swe.md: not defended).

`unwritable` names the changes no tree could hold (a path a file cannot have, text UTF-8 cannot encode,
a path that is a directory of the tree or lies under one of its files): the grader refuses those
outright (a 0 with the reason), rather than let writing the tree raise.
"""

from __future__ import annotations

import ast
import posixpath
from collections.abc import Iterable

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


def is_listed(path: str, test_paths: Iterable[str]) -> bool:
    """Whether `path` is one of `test_paths` or under one of its folders (written `dir/`)."""
    return any(path == entry or (entry.endswith("/") and path.startswith(entry)) for entry in test_paths)


def applicable(path: str, original: dict[str, str], test_paths: list[str] | None = None) -> bool:
    """Whether the agent's write to `path` (already a clean relative path) reaches the graded copy.
    `test_paths`: the task set's (None: a set mined before mining stored them; the name rules only)."""
    if is_protected(path) or not path.endswith(".py") or is_listed(path, test_paths or ()):
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


def applied_changes(
    changes: dict[str, str], original: dict[str, str], test_paths: list[str] | None = None
) -> dict[str, str]:
    return {p: c for p, c in changes.items() if applicable(p, original, test_paths) and original.get(p) != c}


def source_roots(original: dict[str, str]) -> list[str]:
    """sys.path entries for the repository, from the original's layout: its root, and `src` if it has one."""
    return ["", "src"] if any(p.startswith("src/") for p in original) else [""]


def find_test_paths(files: dict[str, str], test_files: Iterable[str]) -> list[str]:
    """What mining never mutates and grading never takes from the agent, beyond the name rules: each
    collected test file, and each folder holding one (`dir/`: all under it) that is neither a source root
    nor a folder of the package's code (the module docstring says how that is told)."""
    test_files = set(test_files)
    folders = {posixpath.dirname(f) for f in test_files} - set(source_roots(files))
    imports = code_imports(files)
    while code := {f for f in folders if imported_by_code(f, folders, imports)}:
        folders -= code  # a folder found to be code makes its imports count: look again
    listed = [f for f in test_files if not is_listed(f, (f"{d}/" for d in folders))]
    return sorted([*listed, *(f"{d}/" for d in folders)])


def imported_by_code(folder: str, test_folders: set[str], imports: dict[str, set[str]]) -> bool:
    """Whether a module under `folder` is imported by the folder's own `__init__.py`, or by a module
    outside every test folder."""
    own_init = f"{folder}/__init__.py"
    for importer, imported in imports.items():
        if importer == own_init or not is_listed(importer, (f"{d}/" for d in test_folders)):
            if any(p.startswith(f"{folder}/") for p in imported - {importer}):
                return True
    return False


def code_imports(files: dict[str, str]) -> dict[str, set[str]]:
    """For every non-test module: the repository's files its import statements name."""
    modules = module_files(files)
    # A file under `src` has two names ("src.calc.core", "calc.core"): the shortest, from the innermost
    # root, is the one its relative imports resolve against.
    names = {path: name for name, path in sorted(modules.items(), key=lambda item: -len(item[0]))}
    return {
        path: imported_files(text, names.get(path, ""), path.endswith("/__init__.py"), modules)
        for path, text in files.items()
        if path.endswith(".py") and not is_protected(path)
    }


def module_files(files: dict[str, str]) -> dict[str, str]:
    """Importable module name -> its file, from each source root."""
    modules = {}
    for root in source_roots(files):
        prefix = f"{root}/" if root else ""
        for path in files:
            if not (path.endswith(".py") and path.startswith(prefix)):
                continue
            parts = path[len(prefix) : -3].split("/")
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            if parts and all(part.isidentifier() for part in parts):
                modules.setdefault(".".join(parts), path)
    return modules


def imported_files(source: str, name: str, is_package: bool, modules: dict[str, str]) -> set[str]:
    """The files of `modules` that one module's imports name (`name`: its own module name)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute_module(node.module, node.level, package)
            if base is None:
                continue
            # `from a import b`: b is a module of a or a name in it; both are looked up.
            targets = [base, *(f"{base}.{alias.name}" if base else alias.name for alias in node.names)]
        else:
            continue
        found.update(modules[t] for t in targets if t in modules)
    return found


def absolute_module(module: str | None, level: int, package: str) -> str | None:
    """The absolute name `from <level dots><module> import ...` refers to, inside `package` (None: above
    the top, which Python refuses too)."""
    if not level:
        return module or ""
    parts = package.split(".") if package else []
    if level > len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


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
