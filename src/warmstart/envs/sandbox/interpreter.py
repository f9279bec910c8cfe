"""Which Python runs sandboxed programs, and what of the host it needs, mounted read-only.

The default is the system's /usr/bin/python3 with the standard library only (no site: none of the
host's packages). `env.options.python` may name another interpreter, typically a virtual environment
made for the sandbox (`python3 -m venv /opt/sandbox-py && /opt/sandbox-py/bin/pip install numpy`): its
prefix (and base prefix, and any other directory on its sys.path) is mounted read-only, and it runs
with `site`, so its packages import. Nothing of it is writable inside.

A directory is mounted at its own path, which is what absolute paths in a venv's pyvenv.cfg and .pth
files expect, unless that path is one the sandbox owns (/work, /tmp, /dev, /proc, /task: each job's
fresh scratch or its task files would hide it); such a one is mounted under /python/<n> instead, which a
venv's own packages survive (Python finds a venv relative to its executable).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...errors import WarmstartError

SYSTEM_PYTHON = "/usr/bin/python3"
SANDBOX_OWNED = ("/work", "/tmp", "/dev", "/proc", "/task")
PROBE = "import json, sys; print(json.dumps({'prefix': sys.prefix, 'base': sys.base_prefix, 'path': sys.path, 'version': list(sys.version_info[:2])}))"


@dataclass(frozen=True)
class Interpreter:
    path: str = SYSTEM_PYTHON  # as seen inside the sandbox
    site: bool = False  # whether its own packages are on sys.path
    mounts: tuple[tuple[str, str], ...] = ()  # (host directory, where it appears inside), read-only
    host: str = SYSTEM_PYTHON  # its path outside (trusted code run without bubblewrap)

    def argv(self, sandboxed: bool = True) -> list[str]:
        return [self.path if sandboxed else self.host, "-I", *([] if self.site else ["-S"])]

    def bwrap_mounts(self) -> list[str]:
        return [arg for host, inside in self.mounts for arg in ("--ro-bind", host, inside)]


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def interpreter(path: str | None) -> Interpreter:
    """The default, or `path` probed (outside the sandbox: it is the user's own) and its mounts worked out.
    Anything wrong is one WarmstartError naming the path."""
    if path is None:
        return Interpreter()
    executable = Path(path).absolute()
    if not executable.exists():
        raise WarmstartError(f"env.options.python: {path} does not exist")
    if executable.is_dir():
        raise WarmstartError(f"env.options.python: {path} is a directory, not a Python interpreter")
    facts = probe(str(executable), path)
    if tuple(facts["version"]) < (3, 9):
        raise WarmstartError(
            f"env.options.python: {path} is Python {'.'.join(map(str, facts['version']))}; 3.9 or newer is needed"
        )
    roots = [facts["prefix"], facts["base"], *(p for p in facts["path"] if p and Path(p).is_dir())]
    mounts: list[tuple[str, str]] = []
    for root in dict.fromkeys(str(Path(r).resolve()) for r in roots):
        if under(root, "/usr") or any(under(root, host) for host, _ in mounts):
            continue
        owned = any(under(root, o) for o in SANDBOX_OWNED)
        mounts.append((root, f"/python/{len(mounts)}" if owned else root))
    inside = inside_path(str(executable), mounts)
    return Interpreter(path=inside, site=True, mounts=tuple(mounts), host=str(executable))


def probe(executable: str, given: str) -> dict:
    try:
        done = subprocess.run([executable, "-I", "-c", PROBE], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise WarmstartError(f"env.options.python: {given} cannot be run ({exc.strerror})") from None
    except subprocess.TimeoutExpired:
        raise WarmstartError(f"env.options.python: {given} did not answer in 60 s") from None
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise WarmstartError(f"env.options.python: {given} did not run as a Python interpreter: {last}") from None


def inside_path(executable: str, mounts: list[tuple[str, str]]) -> str:
    """Where the interpreter's own path (not resolved: a venv is found beside it) appears inside."""
    for host, inside in mounts:
        if under(executable, host):
            return inside + executable[len(host) :]
    if under(executable, "/usr"):
        return executable
    raise WarmstartError(
        f"env.options.python: {executable} lies outside its own prefix; name the interpreter inside the environment (e.g. <venv>/bin/python)"
    )
