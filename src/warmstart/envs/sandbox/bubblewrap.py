"""Running untrusted code (model-written programs) under bubblewrap, with limits, killed from outside.

What it protects against, per execution:
- network: a new, empty network namespace (no interface but its own loopback), so no outbound TCP or
  DNS and no connection to servers on the host's loopback;
- the host's files: only /usr (read-only) and the task's own directory (read-only) are visible; the
  working directory /work, /tmp and /dev/shm are private tmpfs mounts capped in bytes and in files
  (inodes: an empty file costs the host's kernel memory but no byte), fresh for each execution (a tree
  the caller made to work in is copied into /work, never written in place); the root and /dev are
  read-only; no home, no /etc secrets, no site-packages of ours; writes anywhere else fail
  (but in the one host directory a caller may hand over for results, `out_dir`);
- other executions: nothing one execution writes is seen by the next or outlives it (its tmpfs die
  with its namespaces, killed or not), including in the zygote, whose own namespace holds nothing
  writable (zygote.py says how each job gets its own);
- the environment: cleared (no API keys or other secrets leak in);
- privileges: it runs as `nobody` in new user, pid, ipc, uts and cgroup namespaces, with every
  capability dropped and a new session (no terminal to inject into); the set-up that caps the inodes runs
  before it, as root of bwrap's user namespace, and the program one user namespace below (`capping_inodes`);
- resources: rlimits on CPU seconds, address space, file size, processes (counted for `nobody`, which
  is why the sandbox never runs as root) and open files; output is read with a cap and the run killed
  when it is exceeded (`truncated`); a wall-clock limit kills bwrap from outside, and since the
  sandbox's init process dies with bwrap (--die-with-parent) the kernel kills every process left in
  the pid namespace: background daemons, double forks and processes ignoring signals included.

What it does not protect against: kernel exploits (bubblewrap is namespaces, not a VM); CPU time used
by other sandboxes on the same machine; timing side channels. It needs unprivileged user namespaces
(as on stock Debian) and the `bwrap` binary. Without bwrap it refuses to run unless `unsafe=True`,
which runs the same command as a plain subprocess with only the rlimits: for trusted code only.

The interpreter inside is the system's /usr/bin/python3 (readable by `nobody`): sandboxed programs get
the standard library only, unless another interpreter is named (interpreter.py: its directories are
mounted read-only). `run` starts a new sandbox per execution (~30 ms); `Zygote` keeps one
sandbox with a pre-started interpreter that runs each job in fresh nested namespaces (~5 ms).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import WarmstartError
from .interpreter import Interpreter

NOBODY = 65534
PR_SET_CHILD_SUBREAPER = 36
PRLIMIT, SETPRIV = "/usr/bin/prlimit", "/usr/bin/setpriv"  # util-linux: on every Debian
MOUNT, UNSHARE = "/usr/bin/mount", "/usr/bin/unshare"  # util-linux too
SANDBOX_FAILED = "sandbox failed: "  # how an Execution that never ran begins its stderr
WORK_ORIGINAL = "/work-original"  # a caller's work_dir, read-only: copied into the capped /work before the program
TMPFS_PAGE = 4096  # what a tmpfs charges a file for, per page started
# Runs first in a sandbox given a work_dir: the tree copied into /work (ownership is the sandbox user's, so
# git sees its own repository), then the program in its place. A failed copy is the sandbox's failure.
COPY_IN = (
    f"if ! why=$(cp -R -P --preserve=mode,timestamps {WORK_ORIGINAL}/. /work/ 2>&1); then "
    f'printf "{SANDBOX_FAILED}copying the working copy into /work: %s\\n" "$why" >&2; exit 125; fi; exec "$@"'
)
# A sandbox that writes starts as root of bwrap's own user namespace (the one that owns its mounts) with the
# two capabilities its set-up needs, because bwrap cannot set a tmpfs's nr_inodes and only CAP_SYS_ADMIN in
# the user namespace that owns a mount may remount it; CAP_SETFCAP because the kernel lets a new user
# namespace map its parent's root (the set-up's `unshare`, `capping_inodes`) only when its creator held it.
# (Without --uid 0 bwrap would put the set-up one user namespace below its mounts' owner, as it does a program.)
SET_UP_AS_ROOT = ("--uid", "0", "--gid", "0", "--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETFCAP")
SET_UP_TOOLS = (b"bwrap:", b"unshare:", b"setpriv:")  # how the set-up's own tools begin their errors


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30  # address space
    file_bytes: int = 16 << 20  # largest file a process may write
    processes: int = 64  # processes of the sandbox user
    open_files: int = 64
    output_bytes: int = 1 << 20  # stdout + stderr kept; more kills the run
    tmpfs_bytes: int = 64 << 20  # /work (beyond a work_dir copied in), /tmp, /dev/shm, each: more fails with ENOSPC
    # Files, directories and symlinks in each of them (/work: beyond a work_dir's): more fails with ENOSPC.
    # Each costs the host ~1 KB of kernel memory that tmpfs_bytes does not count (1.4 million empty files
    # took 1.4 GB in 10 s); 16384 is tmpfs_bytes in one-page files, so only smaller files meet it first.
    tmpfs_inodes: int = 16384

    def __post_init__(self) -> None:
        if self.tmpfs_bytes < 1 or self.tmpfs_inodes < 1:  # the kernel reads size=0 and nr_inodes=0 as no cap
            raise ValueError(
                f"sandbox: tmpfs caps must be positive: {self.tmpfs_bytes} bytes, {self.tmpfs_inodes} inodes"
            )


@dataclass
class Execution:
    returncode: int | None  # None: killed by us
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    truncated: bool = False
    seconds: float = 0.0

    @property
    def infra_error(self) -> str | None:
        """Why the sandbox itself failed (so the program's outcome says nothing about it), or None."""
        bwrap_failed = self.returncode not in (0, None) and self.stderr.startswith(SET_UP_TOOLS)
        if bwrap_failed or self.stderr.startswith(SANDBOX_FAILED.encode()):
            return self.stderr[-300:].decode(errors="replace")
        return None


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def bwrap_command(
    task_dir: Path,
    argv: list[str],
    limits: Limits,
    work_dir: Path | None,
    scratch: bool = True,
    python: Interpreter = Interpreter(),
    out_dir: Path | None = None,
) -> list[str]:
    """The bwrap command line. Writable: /work, /tmp and /dev/shm only, tmpfs of this sandbox capped in
    bytes and in inodes; everything else read-only. `work_dir` (a tree the caller made for the program to
    work in) is mounted read-only and copied into /work first (`work_mounts`); `out_dir`, a host directory,
    is mounted writable at /work/<its name>. `scratch=False` (the zygote): nothing writable at all, since
    the zygote's namespace outlives its jobs and each job mounts its own scratch tmpfs (zygote.py)."""
    # fmt: off
    if not scratch:
        writable = ["--dir", "/work", "--dir", "/tmp"]  # mount points for each job's own tmpfs
        identity = ()
    else:
        tree = tree_size(work_dir) if work_dir is not None else TreeSize(0, 0)
        tmpfs = str(limits.tmpfs_bytes)
        writable = [
            *work_mounts(limits, tree.bytes, work_dir, out_dir),
            "--size", tmpfs, "--tmpfs", "/tmp", "--size", tmpfs, "--tmpfs", "/dev/shm",
        ]
        identity = SET_UP_AS_ROOT
        if work_dir is not None:
            argv = ["/bin/sh", "-c", COPY_IN, "sh", *argv]
        argv = capping_inodes(scratch_inodes(limits, tree.entries, out_dir), argv)
    return [
        bwrap_path(),
        "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL", *identity,
        "--ro-bind", "/usr", "/usr", *python.bwrap_mounts(),
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        "--proc", "/proc", "--dev", "/dev",
        *writable,
        "--ro-bind", str(task_dir), "/task",
        # bwrap's own tmpfs under / and /dev are not size-capped: nothing may be written there.
        "--remount-ro", "/dev", "--remount-ro", "/",
        "--chdir", "/work",
        "--setenv", "PATH", "/usr/bin", "--setenv", "HOME", "/work", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--", *argv,
    ]
    # fmt: on


def work_mounts(limits: Limits, tree_bytes: int, work_dir: Path | None, out_dir: Path | None) -> list[str]:
    """/work: a tmpfs capped at the work_dir's own size (`tree_bytes`) plus `tmpfs_bytes`, the work_dir
    read-only beside it (COPY_IN copies it in), and the out_dir's bind.

    Why a copy, not the work_dir bound writable at /work (as it was): a bind writes to the host's disk with
    no cap but the file-size rlimit per file, and a model's command wrote 287 MB there in 0.37 s. A tmpfs
    is capped by the kernel (ENOSPC), dies with the sandbox, and the copy costs a few ms for a repository.
    Nothing the program writes in /work is read back afterwards but what the caller asked for through
    `out_dir`, the one writable host directory (the swe runner's report: its audit hook lets only pytest's
    writer in, and the file-size rlimit caps that file)."""
    mounts = ["--size", str(limits.tmpfs_bytes + tree_bytes), "--tmpfs", "/work"]
    if work_dir is not None:
        mounts += ["--ro-bind", str(work_dir), WORK_ORIGINAL]
    if out_dir is not None:
        mounts += ["--bind", str(out_dir), f"/work/{out_dir.name}"]
    return mounts


@dataclass(frozen=True)
class TreeSize:
    bytes: int  # every file's pages, and a page per entry to spare
    entries: int  # files, directories and symlinks: an inode each


def tree_size(root: Path) -> TreeSize:
    """What a copy of `root` takes in a tmpfs."""
    total, entries = 0, 0
    for directory, subdirs, names in os.walk(root):
        for name in names:
            size = os.lstat(os.path.join(directory, name)).st_size
            total += -(-size // TMPFS_PAGE) * TMPFS_PAGE
        total += TMPFS_PAGE * (1 + len(subdirs) + len(names))
        entries += len(subdirs) + len(names)
    return TreeSize(total, entries)


def scratch_inodes(limits: Limits, tree_entries: int, out_dir: Path | None) -> dict[str, int]:
    """Each scratch tmpfs's nr_inodes: `tmpfs_inodes`, and in /work room for what is there before the program
    runs too (the work_dir's copy, the out_dir's mount point), so the program gets the same count of its own."""
    work = limits.tmpfs_inodes + tree_entries + (1 if out_dir is not None else 0)
    return {"/work": work, "/tmp": limits.tmpfs_inodes, "/dev/shm": limits.tmpfs_inodes}


def capping_inodes(inodes: dict[str, int], argv: list[str]) -> list[str]:
    """`argv` after a set-up (root of bwrap's user namespace, SET_UP_AS_ROOT) that remounts each scratch tmpfs
    with its nr_inodes, then leaves for a user namespace of its own, nested in bwrap's, as the sandbox user
    (the one bwrap maps itself: same ids inside as outside) with no capability left. That is where bwrap
    puts a program without a set-up, so the program sees what it did before; it cannot remount or unmount
    anything (bwrap's user namespace owns the mounts, and the program holds nothing there), and a user
    namespace it makes for itself gets the mounts locked in place. A failed remount is the sandbox's failure.

    `--options-mode=ignore`: mount would otherwise hand the mount's current options back to the kernel,
    among them the tmpfs's uid=/gid=, which root of this namespace cannot name (EINVAL); nosuid and nodev
    are bwrap's flags, which a remount would otherwise clear."""
    uid, gid = sandbox_ids()
    remounts = " && ".join(
        f"{MOUNT} --options-mode=ignore -o remount,nosuid,nodev,nr_inodes={count} {path}"
        for path, count in inodes.items()
    )
    script = (
        f"if ! why=$({{ {remounts}; }} 2>&1); then "
        f'printf "{SANDBOX_FAILED}capping the inodes of /work, /tmp and /dev/shm: %s\\n" "$why" >&2; exit 125; fi; '
        f"exec {UNSHARE} --map-user={uid} --map-group={gid} --keep-caps -- "
        f'{SETPRIV} --inh-caps=-all --ambient-caps=-all --bounding-set=-all -- "$@"'
    )
    return ["/bin/sh", "-c", script, "sh", *argv]


def sandbox_ids() -> tuple[int, int]:
    """The uid and gid bwrap runs as (`limited` makes root `nobody`): the program's, inside as outside."""
    return (NOBODY, NOBODY) if os.getuid() == 0 else (os.getuid(), os.getgid())


def limited(command: list[str], limits: Limits, demote: bool) -> list[str]:
    """`command` under util-linux's prlimit (rlimits) and, when we are root, setpriv (become `nobody`,
    since RLIMIT_NPROC does not bind root). Done by exec wrappers rather than a Python preexec_fn,
    which would force a slow fork of this (large) process for every execution."""
    rlimits = [
        f"--cpu={limits.cpu_s}",
        f"--as={limits.memory_bytes}",
        f"--fsize={limits.file_bytes}",
        f"--nproc={limits.processes}",
        f"--nofile={limits.open_files}",
        "--core=0",
    ]
    wrapped = [PRLIMIT, *rlimits, "--", *command]
    if demote and os.getuid() == 0:
        wrapped = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *wrapped]
    return wrapped


def run(
    argv: list[str],
    task_dir: Path,
    limits: Limits = Limits(),
    unsafe: bool = False,
    work_dir: Path | None = None,
    python: Interpreter = Interpreter(),
    out_dir: Path | None = None,
) -> Execution:
    """Run `argv` (paths inside the sandbox: the task directory is /task, read-only, and the cwd is
    /work: a size-capped tmpfs, holding a copy of `work_dir` when given — the host's tree is never
    written), with `python`'s directories mounted read-only. `out_dir`: a host directory the program
    may write, at /work/<its name> (the only writes that outlive it; sandboxed only)."""
    sandboxed = bwrap_path() is not None
    if not sandboxed and not unsafe:
        raise WarmstartError(
            "sandbox: bubblewrap (bwrap) is not installed; install it (apt-get install bubblewrap) or pass unsafe=True for trusted code"
        )
    hand_over(Path(task_dir), writable=False)  # `nobody` must be able to read the task it runs
    if work_dir is not None:  # read by the copy inside; written in place only without bwrap (trusted code)
        hand_over(Path(work_dir), writable=not sandboxed)
    if out_dir is not None:
        hand_over(Path(out_dir), writable=True)
    # Without bwrap there is no /task mount: the same paths are the task directory itself.
    command = (
        bwrap_command(Path(task_dir), argv, limits, work_dir, python=python, out_dir=out_dir)
        if sandboxed
        else [a.replace("/task", str(task_dir), 1) if a.startswith("/task") else a for a in argv]
    )
    become_subreaper()
    started = time.monotonic()
    process = subprocess.Popen(
        limited(command, limits, demote=sandboxed),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=(work_dir or task_dir) if not sandboxed else None,
        env={"PATH": "/usr/bin"} if not sandboxed else {},
        process_group=0,  # its own process group: the kill from outside takes all of it
    )
    execution = _collect(process, limits, started)
    reap_orphans()
    return execution


def hand_over(root: Path, writable: bool) -> None:
    """Let the sandbox user read (and, for a work copy, own) a directory tree."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        if writable and os.getuid() == 0:
            os.chown(path, NOBODY, NOBODY)
        os.chmod(path, (0o755 if path.is_dir() else 0o644) | (0o200 if writable else 0))


def become_subreaper() -> None:
    """Make orphans of our children come to us instead of the machine's init.

    bwrap's namespace-init process can outlive bwrap by a moment (then dies of --die-with-parent);
    orphaned, it would wait as a zombie for PID 1, which in containers may never reap it. Setting
    this on our own process is idempotent; it is process state, not module state."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans() -> None:
    """Kill and reap sandbox namespace inits re-parented to us.

    They are told apart from our own children (a running zygote's bwrap, any other subprocess) by
    living in a nested pid namespace: their NSpid line lists more than one pid. Nothing we spawned
    ourselves does."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields.get("PPid", "0")) == me and len(fields.get("NSpid", "").split()) > 1:
            try:
                os.kill(int(entry), signal.SIGKILL)
                os.waitpid(int(entry), 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _collect(process: subprocess.Popen, limits: Limits, started: float) -> Execution:
    """Read both pipes with a cap until the process ends, the output is too long or time is up."""
    out_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    size, timed_out, truncated = 0, False, False
    open_fds = set(chunks)
    while open_fds:
        remaining = limits.wall_s - (time.monotonic() - started)
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(list(open_fds), [], [], remaining)
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                open_fds.discard(fd)
                continue
            size += len(data)
            if size > limits.output_bytes:
                truncated = True
                break
            chunks[fd].append(data)
        if truncated:
            break
    if timed_out or truncated:
        _kill(process)
    try:
        process.wait(timeout=max(1.0, limits.wall_s))
    except subprocess.TimeoutExpired:
        _kill(process)
        process.wait()
    process.stdout.close()
    process.stderr.close()
    return Execution(
        returncode=None if (timed_out or truncated) else process.returncode,
        stdout=b"".join(chunks[out_fd]),
        stderr=b"".join(chunks[err_fd]),
        timed_out=timed_out,
        truncated=truncated,
        seconds=time.monotonic() - started,
    )


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL bwrap's process group; the sandbox's pid namespace goes down with it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Zygote:
    """One long-lived sandbox whose pre-started interpreter runs each job in fresh nested namespaces
    (`zygote.py`): the same isolation per execution without an interpreter start per
    execution. Started on first use; restarted if it stops answering (killed from outside)."""

    def __init__(self, files: dict[str, str], limits: Limits, python: Interpreter = Interpreter()):
        self.files, self.limits, self.python = files, limits, python
        self.process: subprocess.Popen | None = None
        self.dir: Path | None = None
        self.pending = b""  # read from the zygote, not yet consumed

    def _start(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="warmstart-zygote-"))
        for name, text in {**self.files, "zygote.py": Path(__file__).with_name("zygote.py").read_text()}.items():
            (self.dir / name).write_text(text)
        hand_over(self.dir, writable=False)
        # The zygote's own limits are loose (it forks every job); each job sets its own tight ones.
        loose = Limits(cpu_s=10**6, memory_bytes=4 << 30, processes=self.limits.processes + 8, open_files=256)
        argv = [*self.python.argv(), "/task/zygote.py"]
        command = bwrap_command(self.dir, argv, self.limits, None, scratch=False, python=self.python)
        become_subreaper()
        self.process = subprocess.Popen(
            limited(command, loose, demote=True),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )
        self.pending = b""

    def execute(self, spec: dict, limits: Limits) -> Execution:
        if self.process is None or self.process.poll() is not None:
            self._start()
        body = json.dumps(spec).encode()
        mode = spec.get("mode", "literal")
        header = json.dumps({**dataclasses.asdict(limits), "mode": mode, "spec_bytes": len(body)}).encode()
        started = time.monotonic()
        try:  # the zygote's protocol (zygote.py): the header's length, the header, the spec
            self.process.stdin.write(f"{len(header):010d}\n".encode() + header + body)
            self.process.stdin.flush()
            header = self._read_line(limits.wall_s + 5.0)
            _, size, timed_out, truncated, code, isolated = header.split()
            data = self._read_exactly(int(size), 5.0)
        except (OSError, ValueError, TimeoutError) as exc:
            self.close()  # the hard kill from outside; the next job starts a fresh zygote
            return Execution(
                returncode=None,
                stdout=b"",
                stderr=f"{SANDBOX_FAILED}{exc}".encode(),
                seconds=time.monotonic() - started,
            )
        setup = b"" if isolated == "1" else f"{SANDBOX_FAILED}the job could not be isolated (exit {code})".encode()
        return Execution(
            returncode=int(code),
            stdout=data,
            stderr=setup,
            timed_out=timed_out == "1",
            truncated=truncated == "1",
            seconds=time.monotonic() - started,
        )

    def _read_line(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.pending:
            self._read_more(deadline)
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode()

    def _read_exactly(self, n: int, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        while len(self.pending) < n:
            self._read_more(deadline)
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    def _read_more(self, deadline: float) -> None:
        """Whatever the zygote has written, up to 64 KiB (a header and a short output come in one read)."""
        fd = self.process.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError("no answer in time")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise OSError("the zygote exited")
        self.pending += chunk

    def close(self) -> None:
        if self.process is not None:
            _kill(self.process)
            self.process.wait()
            self.process.stdin.close()
            self.process.stdout.close()
            self.process = None
            reap_orphans()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
