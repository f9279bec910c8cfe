"""A pre-started interpreter inside one bubblewrap sandbox that runs each job in fresh namespaces.

Runs as the sandbox's program (standard library only; the python harness sits beside it in /task).
Starting an interpreter inside a new sandbox costs ~20 ms per execution; this zygote pays it once.
For every job it forks; the child unshares new user, mount, pid, network, ipc and uts namespaces
(nested inside the sandbox's own), forks again to become pid 1 of the new pid namespace, mounts fresh
size-capped tmpfs on /work and /tmp, sets the job's rlimits and runs the harness. So each execution
is still isolated from the others: its files, processes, IPC and network die with it (killing pid 1
of a pid namespace kills everything in it), and the zygote itself never runs untrusted code.

Protocol (stdin / stdout of the zygote): one JSON job per line; for each, a header line
`RESULT <bytes> <timed_out> <truncated> <exit code>` and then that many bytes of the job's output.
Exit codes 70-72 mean the job could not be isolated (SETUP_FAILED): the caller's infra error.
"""

import ctypes
import importlib
import json
import os
import resource
import select
import signal
import sys
import time

sys.path.insert(0, "/task")
import python_harness  # noqa: E402  (copied beside this file)

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x20000,
    0x4000000,
    0x8000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
MS_REC, MS_PRIVATE = 0x4000, 0x40000
PR_SET_PDEATHSIG = 1
SETUP_FAILED = (70, 71, 72)  # unshare / parent gone / mount: kept in step with bubblewrap.py
# Standard-library modules that model-written programs import most (type hints, collections, math,
# regexes, heaps), imported here once so every job's fork inherits them: `typing` alone takes ~3.5 ms
# to import afresh, more than the rest of a job's set-up, and 28 of the 48 shipped tasks import it. A
# job that changes one changes its own copy-on-write copy. Left out: modules seeded at import (random,
# secrets, tempfile), whose state every job would then share.
PRELOADED = ("typing", "collections", "itertools", "functools", "math", "re", "heapq", "bisect", "string", "operator")


def isolate_and_run(job: dict, channel: int, libc) -> None:
    """In the forked child: new namespaces, then pid 1 of them runs the job. Never returns."""
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) != 0:
        os._exit(70)
    alive_read, alive_write = os.pipe()  # open in the parent for as long as it lives
    inner = os.fork()
    if inner:
        # Asked to stop (time or output limit): kill pid 1, whose exit waits for the kernel to kill and
        # reap everything else in its namespace, so the zygote's wait returns only once all are gone.
        signal.signal(signal.SIGTERM, lambda *_: os.kill(inner, signal.SIGKILL))
        _, status = os.waitpid(inner, 0)
        os._exit(exit_code(status))
    os.close(alive_write)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # if the zygote kills our parent, we (pid 1) go too
    if select.select([alive_read], [], [], 0)[0]:  # EOF already: the parent died before the prctl
        os._exit(71)
    os.setsid()  # out of the zygote's process group: kill(0, ...) must not reach the zygote
    size = f"size={job['tmpfs_bytes']}".encode()
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0 or any(
        libc.mount(b"tmpfs", target, b"tmpfs", 0, size) != 0 for target in (b"/work", b"/tmp")
    ):
        os._exit(72)
    os.chdir("/work")
    for name, value in (
        (resource.RLIMIT_CPU, job["cpu_s"]),
        (resource.RLIMIT_AS, job["memory_bytes"]),
        (resource.RLIMIT_FSIZE, job["file_bytes"]),
        (resource.RLIMIT_NOFILE, job["open_files"]),
        (resource.RLIMIT_NPROC, job["processes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(name, (value, value))
    os.dup2(channel, 1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    python_harness.run_spec(job["spec"])
    os._exit(0)


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def collect(fd: int, child: int, wall_s: float, cap: int) -> tuple[bytes, bool, bool, int]:
    chunks, size, deadline = [], 0, time.monotonic() + wall_s
    timed_out = truncated = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        size += len(data)
        if size > cap:
            truncated = True
            break
        chunks.append(data)
    if timed_out or truncated:
        os.kill(child, signal.SIGTERM)  # our own code in the child: it takes the namespace down
    _, status = os.waitpid(child, 0)
    return b"".join(chunks), timed_out, truncated, exit_code(status)


def main() -> None:
    for module in PRELOADED:
        importlib.import_module(module)
    libc = ctypes.CDLL(None, use_errno=True)
    out = sys.stdout.buffer
    for line in sys.stdin:
        job = json.loads(line)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read_end)
            isolate_and_run(job, write_end, libc)
        os.close(write_end)
        data, timed_out, truncated, code = collect(read_end, child, job["wall_s"], job["output_bytes"])
        os.close(read_end)
        out.write(f"RESULT {len(data)} {int(timed_out)} {int(truncated)} {code}\n".encode() + data)
        out.flush()


if __name__ == "__main__":
    main()
