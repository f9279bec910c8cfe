"""Runs pytest inside the sandbox for the swe grader and miner (copied to /task; never imported by warmstart).

Trusted code that runs before any of the repository's: it imports pytest from the interpreter's own
site-packages *before* the repository is put on sys.path (so a `pytest.py` or `_pytest/` in the
repository cannot shadow it), disables plugin auto-loading, installs an audit hook that refuses writes
into the results directory from anything but pytest's JUnit writer of this session (in the main thread,
after the last check: not a nested `pytest.main` the repository started), records what the repository's code
could patch to forge results (the import machinery, pytest's report and JUnit functions) and aborts
without a result if any of it changed, and ends with os._exit right after pytest returns, so no atexit
handler or thread of the repository's code runs after the report is written. Its output goes to
/dev/null: the grader reads the JUnit XML and nothing else.

Usage: python -I runner.py SPEC.json — SPEC: root, paths (sys.path entries), results (a directory),
ids (node ids; empty: the whole suite), assert ("plain" or "rewrite"), maxfail, collect_only.
"""

import json
import operator
import os
import sys
import threading

# Class attributes pytest itself sets while it runs (found by running suites with every name watched).
MUTABLE = {
    "Config": ("_getini_unknown_type",),
    "pytestPDB": ("_pluginmanager", "_config", "_saved", "_recursive_debug", "_wrapped_pdb_cls"),
    "_pytest.assertion.util": ("_reprcompare", "_config", "_assertion_pass"),  # messages only, not outcomes
}
NO_PYTEST = 5  # the interpreter has no pytest: the caller checks this once, before any untrusted run
TAMPERED = 6


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # no entry-point plugins: only what we name
    try:
        import _pytest.junitxml
        import _pytest.runner
        import pytest
    except ImportError:
        os._exit(NO_PYTEST)
    root, results = spec["root"], spec["results"]
    if spec.get("probe"):
        os._exit(0)
    watched = watch()
    writer = {"thread": None}  # set by the Guard once this session's report may be written
    sys.addaudithook(results_hook(results, os.path.dirname(_pytest.junitxml.__file__), writer))
    os.chdir(root)
    sys.path[:0] = [os.path.join(root, p) for p in spec["paths"]]
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    args = [
        "-p", "no:cacheprovider", "-o", "addopts=", "-o", "junit_logging=no", "-o", "junit_family=xunit1",
        "-o", "junit_prefix=", "--rootdir", root, "-q", "--tb=short", f"--assert={spec['assert']}",
        "--junitxml", os.path.join(results, "junit.xml"),
    ]  # fmt: skip
    if spec.get("maxfail"):
        args.append(f"--maxfail={spec['maxfail']}")
    plugin = Guard(watched, results, spec.get("collect_only", False), writer)
    # The last check runs before JUnit's LogXML writes the report; the finders are recorded after pytest's own.
    Guard.pytest_sessionfinish = pytest.hookimpl(tryfirst=True)(Guard.pytest_sessionfinish)
    Guard.pytest_configure = pytest.hookimpl(trylast=True)(Guard.pytest_configure)
    code = pytest.main([*args, *spec["ids"]], plugins=[plugin])
    os._exit(int(code))


def watch_targets() -> list[tuple[object, str]]:
    """What a forged result would go through: JUnit's writer, the reports, the test protocol."""
    import _pytest.junitxml
    import _pytest.reports
    import _pytest.runner

    names = (
        (_pytest.junitxml.LogXML, ("pytest_runtest_logreport", "pytest_sessionfinish", "finalize")),
        (_pytest.junitxml._NodeReporter, ("append_pass", "append_failure", "append_error", "append_skipped")),
        (_pytest.runner, ("call_and_report", "runtestprotocol", "call_runtest_hook", "check_interactive_exception")),
        (_pytest.reports.TestReport, ("from_item_and_call", "passed", "failed", "skipped")),
    )
    return [(owner, name) for owner, attrs in names for name in attrs if name in vars(owner)]


def watched_namespaces() -> list[object]:
    """Every module of pytest, pluggy, importlib and unittest loaded by now, builtins, and the classes
    those modules define: what collects, imports, runs and judges the tests, and what tests call to
    decide (`assertEqual`, `pytest.raises`, `len`). A package that replaced any of it (`assertEqual`
    with a no-op, `importlib.import_module` with one that empties test modules, ...) could pass tests."""
    import builtins
    import unittest  # noqa: F401 - loaded so that it is watched

    prefixes = ("_pytest", "pytest", "pluggy", "importlib", "unittest")
    modules = [m for n, m in list(sys.modules.items()) if n.split(".")[0] in prefixes and m is not None]
    classes = [
        v
        for m in modules
        for v in vars(m).values()
        if isinstance(v, type) and getattr(v, "__module__", "") == m.__name__
    ]
    return [builtins, *modules, *classes]


def mutable(owner, name: str) -> bool:
    """Whether pytest itself sets this while it runs."""
    return name in MUTABLE.get(getattr(owner, "__name__", ""), ())


def watch() -> dict:
    """The watched objects by identity, taken before any repository code runs: per namespace, its live
    mapping, the names and their objects (checked after every test, so in C loops: `map(is_, ...)`)."""
    spaces = []
    for owner, names in group(watch_targets()):
        spaces.append((vars(owner), names, tuple(vars(owner)[n] for n in names)))
    for space in watched_namespaces():
        names = tuple(n for n in list(vars(space)) if not mutable(space, n))
        spaces.append((vars(space), names, tuple(vars(space)[n] for n in names)))
    return {"path_hooks": [id(h) for h in sys.path_hooks], "spaces": spaces}


def group(pairs: list[tuple[object, str]]) -> list[tuple[object, tuple[str, ...]]]:
    owners: dict[int, tuple[object, list[str]]] = {}
    for owner, name in pairs:
        owners.setdefault(id(owner), (owner, []))[1].append(name)
    return [(owner, tuple(names)) for owner, names in owners.values()]


def unchanged(watched: dict) -> bool:
    same = all(all(map(operator.is_, map(m.get, names), values)) for m, names, values in watched["spaces"])
    return same and [id(h) for h in sys.path_hooks] == watched["path_hooks"]


def results_hook(results: str, junit_dir: str, writer: dict):
    """An audit hook (it cannot be removed): nothing but pytest's JUnit writer (or this file) writes into
    `results`, and only in the thread and at the moment the Guard allows (after its last check, as this
    session ends): not a pytest session the repository's code started itself, not another thread."""
    prefix = os.path.realpath(results) + os.sep

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode = args[0], args[1]
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            if isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR):
                writing = True
            if (
                writing
                and isinstance(path, (str, bytes))
                and inside(path, prefix)
                and not trusted_writer(junit_dir, writer)
            ):
                raise PermissionError(f"{path}: the results directory is the runner's")
        elif event in ("os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link", "os.truncate", "os.chmod"):
            if any(isinstance(a, (str, bytes)) and inside(a, prefix) for a in args[:2]):
                raise PermissionError("the results directory is the runner's")

    return hook


def inside(path, prefix: str) -> bool:
    return (os.path.realpath(os.fsdecode(path)) + os.sep).startswith(prefix)


def trusted_writer(junit_dir: str, writer: dict) -> bool:
    """Whether the code calling `open` (two frames up: this, the hook) is pytest's JUnit writer or this file."""
    if writer["thread"] != threading.get_ident():
        return False
    name = sys._getframe(2).f_code.co_filename
    return name == os.path.join(junit_dir, "junitxml.py") or name == os.path.abspath(__file__)


class Guard:
    """Checks, as collection ends, after every test and before the report is written, that the watched
    machinery is the same objects as before any repository code ran, and the import machinery as pytest
    configured it; otherwise exits without a report."""

    def __init__(self, watched: dict, results: str, collect_only: bool, writer: dict):
        self.watched, self.results, self.collect_only, self.writer = watched, results, collect_only, writer
        self.collect_errors: list[dict] = []

    def check(self) -> None:
        # Finders appended later (toolz's `tlz` adds one) are asked only for what none of these finds: files
        # on disk, the tests among them, still come from the same finders in the same order.
        configured = self.watched["configured_meta_path"]
        same_finders = [id(f) for f in sys.meta_path[: len(configured)]] == configured
        if not same_finders or not unchanged(self.watched):
            os._exit(TAMPERED)

    def pytest_configure(self, config) -> None:
        # pytest's assertion rewriter has put its finder in place by now; nothing of the repository has run.
        self.watched["configured_meta_path"] = [id(f) for f in sys.meta_path]

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            lines = str(report.longrepr).strip().splitlines() or ["collection failed"]
            self.collect_errors.append({"nodeid": report.nodeid, "message": lines[-1][:300]})

    def pytest_collection_finish(self, session) -> None:
        self.check()
        if self.collect_only:  # the miner's listing of the suite (trusted code only: the unmutated package)
            listing = {"ids": [item.nodeid for item in session.items], "errors": self.collect_errors}
            self.writer["thread"] = threading.get_ident()
            with open(os.path.join(self.results, "collected.json"), "w") as f:
                json.dump(listing, f)
            os._exit(0)

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call":
            self.check()

    def pytest_sessionfinish(self, session) -> None:
        self.check()
        self.writer["thread"] = threading.get_ident()


if __name__ == "__main__":
    main()
