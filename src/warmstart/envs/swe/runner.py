"""Runs pytest inside the sandbox for the swe grader and miner (copied to /task; never imported by warmstart).

Trusted code that runs before any of the repository's. The report it leaves (JUnit XML in the results
directory) is believed because nothing but pytest's own writer can produce it, and that does not rest
on the repository's code being unable to *find* anything (the results path, a key): it rests on what
the kernel and an audit hook refuse to the whole process, whatever code asks.

- Process creation is impossible: a seccomp filter (installed first; the kernel enforces it and nothing
  removes it) makes execve/execveat fail, so no program without the audit hook can run, however it is
  started (`subprocess`, `os.system`, `_posixsubprocess.fork_exec`, which raises no audit event); the
  audit hook also refuses fork, spawn and Popen outright, with a clear error.
- An audit hook (it cannot be removed) refuses every write, creation, rename, link, symlink, chmod or
  removal that lands in the results directory unless the caller is pytest's JUnit writer of this
  session (in the main thread, after the runner's last check) or this file. Paths are resolved as the
  kernel would: against the event's `dir_fd` (read back from /proc/self/fd), an fd against what it is
  open on, symlinks followed. `os.open` does not report its `dir_fd`, so an `os.open` of a relative path
  for writing is refused outright. Foreign calls and raw memory through ctypes are refused, since they
  could do all of this without the hook seeing it.
- The runner confirms the report: it exits with REPORTED only when the hook let pytest's writer write
  it and pytest finished normally; the grader reads the report only then, and only if it is a regular
  file (not a symlink, FIFO or directory).

It also imports pytest from the interpreter's own site-packages *before* the repository is put on
sys.path (so a `pytest.py` or `_pytest/` in the repository cannot shadow it), disables plugin
auto-loading, records what the repository's code could patch to forge results (the import machinery,
pytest's report and JUnit functions) and aborts without a result if any of it changed, checks (when
grading) that every test it runs is code compiled from the repository's files as they were before any
of the repository's code ran (not a module put in a test module's place in sys.modules), and ends with
os._exit right after pytest returns, so no atexit handler of the repository's code runs after the report
is written. Its output goes to /dev/null: the grader reads the JUnit XML and nothing else.

Usage: python -I runner.py SPEC.json — SPEC: root, paths (sys.path entries), results (a directory),
ids (node ids; empty: the whole suite), assert ("plain" or "rewrite"), maxfail, collect_only.
"""

import errno
import inspect
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
REPORTED = 0  # the report (or the listing) was written by pytest's writer (the runner) and pytest finished
NO_PYTEST = 5  # the interpreter has no pytest: the caller checks this once, before any untrusted run
TAMPERED = 6
NOT_WRITTEN = 7  # pytest returned without its writer having written the report
NO_EXEC_FILTER = 8  # the kernel refused the seccomp filter: nothing untrusted may run then

# Audit events that start another program or reach raw memory: refused to everyone, always.
REFUSED_EVENTS = frozenset(
    {
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "pty.spawn", "ctypes.call_function", "ctypes.cdata",
    }
)  # fmt: skip
# Audit events that change the file system: per path argument, its index and its dir_fd's (None: none).
PATH_EVENTS = {
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.symlink": ((1, 2),),  # the link; its target is checked apart
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.truncate": ((0, None),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# seccomp: per machine, the audit architecture and the numbers of execve and execveat.
EXEC_SYSCALLS = {"x86_64": (0xC000003E, 59, 322), "aarch64": (0xC00000B7, 221, 281)}


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
    if not forbid_exec():
        os._exit(NO_EXEC_FILTER)
    root, results = spec["root"], spec["results"]
    if spec.get("probe"):
        os._exit(0)
    # The tests' code as the files hold it now, before anything of the repository runs (grading only:
    # mining rewrites asserts, so its code differs, and runs the unmodified package).
    sources = python_sources(root) if spec["assert"] == "plain" and spec["ids"] else None
    watched = watch()
    writer = {"thread": None, "wrote": False}  # set by the Guard once this session's report may be written
    sys.addaudithook(results_hook(results, os.path.dirname(_pytest.junitxml.__file__), writer, watched["code_ids"]))
    plugin = Guard(watched, results, spec.get("collect_only", False), writer, sources)
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
    # The last check runs before JUnit's LogXML writes the report; the finders are recorded after pytest's own.
    # The phase wrappers are the outermost: they see each phase's exception (or none) before anything else.
    Guard.pytest_sessionfinish = pytest.hookimpl(tryfirst=True)(Guard.pytest_sessionfinish)
    Guard.pytest_configure = pytest.hookimpl(trylast=True)(Guard.pytest_configure)
    Guard.pytest_runtest_logreport = pytest.hookimpl(tryfirst=True)(Guard.pytest_runtest_logreport)
    # Old-style wrappers (`hookwrapper`): a repository may pin a pytest older than 7.4's `wrapper=True`.
    for phase in ("setup", "call", "teardown"):
        hook = f"pytest_runtest_{phase}"
        setattr(Guard, hook, pytest.hookimpl(hookwrapper=True, tryfirst=True)(getattr(Guard, hook)))
    code = pytest.main([*args, *spec["ids"]], plugins=[plugin])
    finished = int(code) in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    os._exit(REPORTED if writer["wrote"] and finished else int(code) or NOT_WRITTEN)


def forbid_exec() -> bool:
    """Make execve and execveat fail (EPERM) for this process and every child, for good: a seccomp filter,
    which the kernel enforces and nothing in the process can lift. A program started any way at all
    would run without the audit hook. False when the filter could not be installed."""
    import ctypes
    import struct

    machine = EXEC_SYSCALLS.get(os.uname().machine)
    if machine is None:
        return False
    arch, execve, execveat = machine
    deny, allow = 0x00050000 | errno.EPERM, 0x7FFF0000  # SECCOMP_RET_ERRNO | EPERM, SECCOMP_RET_ALLOW
    program = [  # classic BPF over struct seccomp_data: (code, jump if true, jump if false, k)
        (0x20, 0, 0, 4),  # load the architecture
        (0x15, 1, 0, arch),  # ours: go on
        (0x06, 0, 0, deny),  # another ABI (i386 through int 0x80): nothing
        (0x20, 0, 0, 0),  # load the syscall number
        (0x35, 3, 0, 0x40000000),  # x32 numbers: deny
        (0x15, 2, 0, execve),
        (0x15, 1, 0, execveat),
        (0x06, 0, 0, allow),
        (0x06, 0, 0, deny),
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    ulong = ctypes.c_ulong
    fprog = Program(len(program), ctypes.addressof(code))
    no_new_privs = prctl(38, ulong(1), ulong(0), ulong(0), ulong(0))  # PR_SET_NO_NEW_PRIVS
    return no_new_privs == 0 and prctl(22, ulong(2), ctypes.byref(fprog), ulong(0), ulong(0)) == 0  # PR_SET_SECCOMP


def python_sources(root: str) -> dict[str, bytes]:
    """Every .py file of the repository, by absolute path, as it is before any of its code runs."""
    sources = {}
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path, "rb") as f:
                    sources[path] = f.read()
    return sources


def code_objects(source: bytes, path: str) -> set:
    """Every code object compiling `source` makes (as the import system compiles it, plain asserts)."""
    try:
        pending = [compile(source, path, "exec", dont_inherit=True)]
    except (SyntaxError, ValueError):
        return set()
    found = set()
    while pending:
        code = pending.pop()
        found.add(code)
        pending.extend(c for c in code.co_consts if isinstance(c, type(code)))
    return found


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
    mapping, the names and their objects (checked after every test, so in C loops: `map(is_, ...)`); the
    watched modules as `sys.modules` holds them (a copy of `pytest` whose `raises` swallows everything, put
    in its place, is another object); and the functions among them, whose `__code__` may not be replaced
    (that keeps the function's identity)."""
    spaces, code_ids = [], set()
    for owner, names in group(watch_targets()):
        spaces.append((vars(owner), names, tuple(vars(owner)[n] for n in names)))
    namespaces = watched_namespaces()
    for space in namespaces:
        names = tuple(n for n in list(vars(space)) if not mutable(space, n))
        values = tuple(vars(space)[n] for n in names)
        spaces.append((vars(space), names, values))
        code_ids.update(id(f) for v in values for f in functions_of(v))
    modules = {m.__name__: m for m in namespaces if isinstance(m, type(sys)) and sys.modules.get(m.__name__) is m}
    return {
        "path_hooks": [id(h) for h in sys.path_hooks],
        "spaces": spaces,
        "module_names": tuple(modules),
        "modules": tuple(modules.values()),
        "recorded": {name: dict(vars(m)) for name, m in modules.items()},
        "code_ids": code_ids,
    }


def functions_of(value) -> list:
    """The Python functions a watched value is or holds (a method, a property's accessors, ...)."""
    found = []
    for v in (value, *(getattr(value, a, None) for a in ("__func__", "fget", "fset", "fdel", "__wrapped__"))):
        if isinstance(v, type(functions_of)):
            found.append(v)
    return found


def group(pairs: list[tuple[object, str]]) -> list[tuple[object, tuple[str, ...]]]:
    owners: dict[int, tuple[object, list[str]]] = {}
    for owner, name in pairs:
        owners.setdefault(id(owner), (owner, []))[1].append(name)
    return [(owner, tuple(names)) for owner, names in owners.values()]


def unchanged(watched: dict) -> bool:
    same = all(all(map(operator.is_, map(m.get, names), values)) for m, names, values in watched["spaces"])
    same = same and all(map(operator.is_, map(sys.modules.get, watched["module_names"]), watched["modules"]))
    return same and [id(h) for h in sys.path_hooks] == watched["path_hooks"]


def results_hook(results: str, junit_dir: str, writer: dict, code_ids: frozenset | set = frozenset()):
    """An audit hook (it cannot be removed): no other program is started, and nothing but pytest's JUnit
    writer (or this file) changes anything in `results`, and only in the thread and at the moment the
    Guard allows (after its last check, as this session ends): not a pytest session the repository's code
    started itself, not another thread. The code of a watched function (`code_ids`) is never replaced: that
    changes what it does and keeps the object the identity checks compare."""
    prefix = os.path.realpath(results) + os.sep

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            if opens_for_writing(args) and inside(location(args[0]), prefix):
                if not trusted_writer(junit_dir, writer):
                    raise PermissionError(f"{args[0]}: the results directory is the runner's")
                writer["wrote"] = True
        elif event in PATH_EVENTS:
            paths = [location(args[i], args[d] if d is not None else None) for i, d in PATH_EVENTS[event]]
            if event == "os.symlink":
                paths.append(link_target(args[0], paths[0]))
            if any(inside(path, prefix) for path in paths):
                raise PermissionError(f"{event}: the results directory is the runner's")
        elif event in REFUSED_EVENTS:
            raise PermissionError(f"{event}: not allowed while the tests run (the swe runner refuses it)")
        elif event == "object.__setattr__" and args[1] == "__code__" and id(args[0]) in code_ids:
            raise PermissionError("the code of pytest's, unittest's and the import system's functions is the runner's")

    return hook


def opens_for_writing(args: tuple) -> bool:
    """Whether an `open` event (path, mode, flags) may write. `os.open` (mode None) of a relative path
    for writing is refused here: its dir_fd, which could be the results directory, is not in the event."""
    path, mode, flags = args[0], args[1], args[2]
    if not isinstance(flags, int) or not flags & WRITE_FLAGS:
        return False
    if mode is None and isinstance(path, (str, bytes)) and not os.path.isabs(path):
        raise PermissionError(f"{path!r}: os.open of a relative path for writing (use an absolute path)")
    return True


def location(path, dir_fd=None) -> str:
    """The absolute path an event acts on: an fd's open file, or `path` against `dir_fd` or the cwd."""
    if isinstance(path, int):
        return fd_target(path)
    try:
        path = os.fsdecode(path)
    except TypeError:
        return ""
    if os.path.isabs(path):
        return path
    if isinstance(dir_fd, int) and dir_fd >= 0:
        return os.path.join(fd_target(dir_fd), path)
    try:
        return os.path.join(os.getcwd(), path)
    except OSError:
        return ""


def fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""  # not an open fd: the call itself fails


def link_target(target, link: str) -> str:
    """Where a symlink at `link` would point: a relative target is read from the link's directory."""
    try:
        target = os.fsdecode(target)
    except TypeError:
        return ""
    return target if os.path.isabs(target) else os.path.join(os.path.dirname(link), target)


def inside(path: str, prefix: str) -> bool:
    """Whether `path` (or, not following its last part, the entry itself) is in the directory `prefix`."""
    if not path:
        return False
    followed = os.path.realpath(path)
    entry = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return any((p + os.sep).startswith(prefix) for p in (followed, entry))


def trusted_writer(junit_dir: str, writer: dict) -> bool:
    """Whether the code calling `open` (two frames up: this, the hook) is pytest's JUnit writer or this file."""
    if writer["thread"] != threading.get_ident():
        return False
    name = sys._getframe(2).f_code.co_filename
    return name == os.path.join(junit_dir, "junitxml.py") or name == os.path.abspath(__file__)


def test_function(item):
    """The function pytest calls for `item` (for a method, as its class holds it now), or None for an item
    that is not a Python function (a doctest, a conftest's own kind of test)."""
    name = getattr(item, "originalname", None)
    if name is None:
        return None
    cls = getattr(item, "cls", None)
    found = getattr(cls, name, None) if cls is not None else getattr(item, "obj", None)
    return getattr(found, "__func__", found)


class Guard:
    """Checks, as collection ends, after every test and before the report is written, that the watched
    machinery is the same objects as before any repository code ran, and the import machinery as pytest
    configured it; when grading, that every test is code compiled from the repository's own files;
    otherwise exits without a report."""

    def __init__(self, watched: dict, results: str, collect_only: bool, writer: dict, sources):
        self.watched, self.results, self.collect_only, self.writer = watched, results, collect_only, writer
        self.sources: dict[str, bytes] | None = sources  # None: the tests' code is not checked
        # The interpreter's own library directories (read-only in the sandbox): made before the repository's
        # directories are put on sys.path.
        self.libraries = tuple(os.path.join(p, "") for p in sys.path if os.path.isabs(p))
        self.codes: dict[str, set] = {}
        self.collect_errors: list[dict] = []
        # Taken now, before any repository code could replace them where they are looked up.
        import _ast
        import builtins
        import importlib.machinery
        import zipimport

        self.builtins = (builtins, vars(builtins))
        self.finder_types = (importlib.machinery.FileFinder, zipimport.zipimporter, type(None))
        self.source_loader = importlib.machinery.SourceFileLoader
        self.ast = {n: getattr(_ast, n) for n in ("If", "Try", "With", "FunctionDef", "Import", "ImportFrom")}
        # What the Guard saw itself, apart from pytest's reports: the tests whose call returned, and those
        # that raised in any phase. The grader takes a test as passed only when both say so.
        self.called: set[str] = set()
        self.raised: set[str] = set()

    def check(self) -> None:
        # Finders appended later (toolz's `tlz` adds one) are asked only for what none of these finds: files
        # on disk, the tests among them, still come from the same finders in the same order.
        configured = self.watched["configured_meta_path"]
        same_finders = [id(f) for f in sys.meta_path[: len(configured)]] == configured
        if not same_finders or not unchanged(self.watched):
            os._exit(TAMPERED)

    def original(self, code) -> bool:
        """Whether `code` is compiled from a file of the repository as it was before any of its code ran."""
        path = code.co_filename
        if path not in self.codes:
            source = self.sources.get(path)
            self.codes[path] = code_objects(source, path) if source is not None else set()
        return code in self.codes[path]

    def check_test(self, item) -> None:
        """The test's own code, or (a library's decorator: mock.patch, ...) the code it wraps, comes from the
        repository's files: not a module the repository's code put in a test module's place in sys.modules,
        nor a method replaced since."""
        if self.sources is None:
            return
        function = test_function(item)
        code = getattr(function, "__code__", None)
        if code is None or self.original(code):
            return
        try:
            inner = getattr(inspect.unwrap(function), "__code__", None)
        except ValueError:
            inner = None
        in_library = code.co_filename.startswith(self.libraries)
        if not (in_library and inner is not None and inner is not code and self.original(inner)):
            os._exit(TAMPERED)

    def pytest_configure(self, config) -> None:
        # pytest's assertion rewriter has put its finder in place by now; nothing of the repository has run.
        self.watched["configured_meta_path"] = [id(f) for f in sys.meta_path]

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            lines = str(report.longrepr).strip().splitlines() or ["collection failed"]
            self.collect_errors.append({"nodeid": report.nodeid, "message": lines[-1][:300]})

    def check_module(self, module) -> None:
        """A test module as its file's imports and definitions bind it: `import pytest` and `from pytest
        import raises` bound to the objects recorded before any repository code ran (not a copy put in
        sys.modules while it was imported and taken out since), its functions compiled from the file, the
        real builtins, and loaded by the import system's own source loader."""
        path = getattr(module, "__file__", None)
        if self.sources is None or path not in self.sources:
            return
        namespace = vars(module)
        loader = getattr(getattr(module, "__spec__", None), "loader", None)
        if type(loader) is not self.source_loader or namespace.get("__loader__") is not loader:
            os._exit(TAMPERED)
        if not any(namespace.get("__builtins__") is b for b in self.builtins):
            os._exit(TAMPERED)
        for name, expected in self.bindings(path, self.sources[path]):
            if expected is None:  # a plain `def` in the file
                value = namespace.get(name)
                code = getattr(value, "__code__", None)
                if isinstance(value, type(test_function)) and not self.original(code):
                    os._exit(TAMPERED)
            elif namespace.get(name, expected) is not expected:
                os._exit(TAMPERED)

    def bindings(self, path: str, source: bytes) -> list[tuple[str, object]]:
        """The module-level names the file binds by importing a watched module or a name of one (each with
        the recorded object), or by an undecorated `def` (None)."""
        node_type = self.ast
        try:
            body = list(compile(source, path, "exec", 1024, dont_inherit=True).body)  # 1024: ast.PyCF_ONLY_AST
        except (SyntaxError, ValueError):
            return []
        recorded, found = self.watched["recorded"], []

        modules = dict(zip(self.watched["module_names"], self.watched["modules"]))
        module = modules.get

        while body:
            node = body.pop()
            if isinstance(node, (node_type["If"], node_type["Try"], node_type["With"])):
                body.extend([*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])])
                body.extend(s for h in getattr(node, "handlers", []) for s in h.body)
            elif isinstance(node, node_type["FunctionDef"]) and not node.decorator_list:
                found.append((node.name, None))
            elif isinstance(node, node_type["Import"]):
                for alias in node.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    target = module(alias.name if alias.asname else alias.name.split(".")[0])
                    if target is not None:
                        found.append((bound, target))
            elif isinstance(node, node_type["ImportFrom"]) and not node.level and node.module in recorded:
                for alias in node.names:
                    names = recorded[node.module]
                    target = names[alias.name] if alias.name in names else module(f"{node.module}.{alias.name}")
                    if alias.name != "*" and target is not None:
                        found.append((alias.asname or alias.name, target))
        return found

    def pytest_collection_finish(self, session) -> None:
        self.check()
        finders = [type(f) for f in sys.path_importer_cache.values()]
        if not all(any(f is t for t in self.finder_types) for f in finders):
            os._exit(TAMPERED)  # a finder of the repository's own cached for a directory (the tests')
        for module in {id(m): m for m in (getattr(i, "module", None) for i in session.items) if m}.values():
            self.check_module(module)
        for item in session.items:
            self.check_test(item)
        if self.collect_only:  # the miner's listing of the suite (trusted code only: the unmutated package)
            listing = {"ids": [item.nodeid for item in session.items], "errors": self.collect_errors}
            self.writer["thread"] = threading.get_ident()
            with open(os.path.join(self.results, "collected.json"), "w") as f:
                json.dump(listing, f)
            os._exit(REPORTED)

    def pytest_runtest_setup(self, item):
        outcome = yield
        self.note_raised(item, outcome)

    def pytest_runtest_teardown(self, item):
        outcome = yield
        self.note_raised(item, outcome)

    def pytest_runtest_call(self, item):
        """Right after the test function returns (before its report is made, before anything of pytest's
        reporting runs): a patch put in place while the test ran, which would put the original back the
        moment it is used, is still there to be found."""
        self.check_test(item)
        outcome = yield
        self.check()
        self.note_raised(item, outcome)
        if getattr(item, "_excinfo", None):  # a unittest test's failure: kept on the item for its report
            self.raised.add(item.nodeid)
        self.called.add(item.nodeid)

    def note_raised(self, item, outcome) -> None:
        """A phase that raised (its outcome holds the exception) fails its test in the runner's own record."""
        if outcome.excinfo is not None:
            self.raised.add(item.nodeid)

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call":
            self.check()

    def pytest_sessionfinish(self, session) -> None:
        self.check()
        self.writer["thread"] = threading.get_ident()
        with open(os.path.join(self.results, "ran.txt"), "w") as f:  # builtins only: they are watched
            f.write("".join(repr(i) + "\n" for i in sorted(self.called - self.raised)))
        self.writer["wrote"] = False  # that was the runner's file: pytest's writer has not written yet


if __name__ == "__main__":
    main()
