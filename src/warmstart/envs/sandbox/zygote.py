"""A pre-started interpreter inside one bubblewrap sandbox that runs each job in fresh namespaces.

Runs as the sandbox's program (standard library only; the python harness sits beside it in /task).
Starting an interpreter inside a new sandbox costs ~20 ms per execution; this zygote pays it once.
For every job it forks; the child unshares new user, mount, pid, network, ipc and uts namespaces
(nested inside the sandbox's own), forks again to become pid 1 of the new pid namespace, mounts fresh
tmpfs capped in bytes and inodes on /work, /tmp and /dev/shm, drops every capability, sets the job's
rlimits and runs the harness. So each execution is still isolated from the others: its files,
processes, IPC and network die with it (killing pid 1 of a pid namespace kills everything in it), and
the zygote itself never runs untrusted code.

Why one execution's files cannot reach the next: those three tmpfs are the only writable filesystems
a job has, and they belong to its own mount namespace, which the kernel frees when its last process
dies (a timed-out or killed job included). Everything the zygote's own namespace holds is read-only
(bubblewrap.py mounts nothing writable for it), so there is nothing shared to write into even under
the job's mounts. The job cannot take those mounts off: it has no capabilities left, and a user
namespace it creates for itself gets a copy in which the kernel locks them in place. Nor can it
reach into the zygote through /proc/<pid>/mem: the zygote is not dumpable (PR_SET_DUMPABLE 0).

A proxied job (`spec["mode"] == "proxy"`, python_proxy.py) is two such children, each isolated on its
own: the test's runner, forked from here, and the candidate, which execs a fresh interpreter before any of
its code runs (this process has held the test, and a fork would hand the program a copy of it); the two
talk only through a pair of pipes, and only the runner reports.

Why one job's data cannot reach a later job's program: a literal or io job's program runs in a fork of
this process (no exec: the ~20 ms it saves is the zygote's point), so it can read all of this process's
memory, freed memory included, with ctypes. So a job's spec (its program, its test and expected values) is
never turned into Python objects here: it is read into a bytearray that only the job's own child parses,
and zeroed once the job is done; the job's output is collected into one bytearray, written out from it
and zeroed too. (Before, a literal program could find an earlier proxied job's test, expected values
included, and an earlier sample's program, in the zygote's freed memory.)

Protocol (stdin / stdout of the zygote): for each job, its header's length as 10 digits and a newline,
the header (JSON: the limits, `mode` and `spec_bytes`), then `spec_bytes` bytes of the spec's JSON; for
each, a line `RESULT <bytes> <timed_out> <truncated> <exit code> <isolated>` and then that many bytes of the
job's output. `isolated` 0: a child's isolation failed before any job code ran (the caller's infra error);
only a byte the set-up writes says so, never an exit code, which a program could choose.
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
import python_proxy  # noqa: E402

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x20000,
    0x4000000,
    0x8000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 4, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL, CAPABILITY_VERSION_3, LAST_CAPABILITY = 4, 0x20080522, 63
SCRATCH = (b"/work", b"/tmp", b"/dev/shm")  # every path a job can write: each a fresh tmpfs of its own
# Standard-library modules that model-written programs import most (type hints, collections, math,
# regexes, heaps), imported here once so every job's fork inherits them: `typing` alone takes ~3.5 ms
# to import afresh, more than the rest of a job's set-up, and 28 of the 48 shipped tasks import it. A
# job that changes one changes its own copy-on-write copy. Left out: modules seeded at import (random,
# secrets, tempfile), whose state every job would then share.
PRELOADED = ("typing", "collections", "itertools", "functools", "math", "re", "heapq", "bisect", "string", "operator")


def isolate_and_run(job: dict, ready: int, libc, run) -> None:
    """In the forked child: new namespaces, then pid 1 of them calls `run()`. Never returns. One byte on
    `ready` says the isolation is complete: written before any job code runs and closed at once, so a
    program cannot fake a failed set-up (by its exit code, say) to pass its failure off as ours."""
    uid, gid = os.getuid(), os.getgid()
    # Dumpable for a moment: a process may write its own uid_map only then. Nothing else runs as us now.
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) != 0:
        os._exit(70)
    if not map_own_ids(uid, gid):
        os._exit(70)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
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
    if not mount_scratch(libc, job["tmpfs_bytes"], job["tmpfs_inodes"]) or not drop_capabilities(libc):
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
    os.write(ready, b"R")
    os.close(ready)
    try:
        run()
    finally:  # whatever happens, this copy of the zygote never returns to its loop
        os._exit(0)


def run_harness(job: dict, channel: int) -> None:
    """A job of the literal-call harness (python_harness.py): its results are written to `channel`."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # not the zygote's own stdin, where the next jobs arrive
    os.dup2(channel, 1)
    os.dup2(null, 2)
    python_harness.run_spec(json.loads(job["spec"]))


def run_check(job: dict, channel: int, to_candidate: int, from_candidate: int) -> None:
    """The test side of a proxied job (python_proxy.py): trusted code, reporting on `channel`. It hands the
    candidate its program first (the zygote never reads the spec)."""
    spec, out = json.loads(job["spec"]), os.fdopen(channel, "w")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        python_proxy.write_all(to_candidate, python_proxy.program_line(spec))
    except OSError:
        pass  # it died: the test finds no program there, and its isolation byte tells whether that was ours

    def emit(record: dict) -> None:
        out.write(f"{spec['nonce']} {json.dumps(record)}\n")
        out.flush()

    python_proxy.run_check(spec, python_proxy.Channel(to_candidate, from_candidate, spec["per_call_s"]), emit)


def exec_candidate(requests: int, replies: int) -> None:
    """The candidate side of a proxied job: a fresh interpreter (exec), so that nothing of this process's
    memory, where tests and earlier jobs have been, reaches the program; its stdin and stdout are the two
    pipes (its program comes first on stdin) and every other descriptor closes on exec (Python opens them
    so)."""
    os.dup2(requests, 0)
    os.dup2(replies, 1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    python = [sys.executable, "-I", *(["-S"] if sys.flags.no_site else [])]
    os.execv(sys.executable, [*python, "/task/python_proxy.py", "serve", ",".join(PRELOADED)])


def spawn_candidate(job: dict, libc) -> dict:
    """A candidate server in its own isolated namespaces, started now and waiting for its program: the
    zygote keeps one ready after a proxied job, so the next one does not wait for an interpreter to start."""
    to_candidate, from_candidate = os.pipe(), os.pipe()  # (read, write) each
    keep = (to_candidate[0], from_candidate[1])
    job = {**job, "fds": [*to_candidate, *from_candidate]}
    pid, ready = fork_job(job, libc, lambda: exec_candidate(*keep), keep=keep)
    for fd in keep:
        os.close(fd)
    return {
        "pid": pid,
        "ready": ready,
        "requests": to_candidate[1],
        "replies": from_candidate[0],
        "limits": limits_of(job),
    }


def limits_of(job: dict) -> str:
    return json.dumps({k: v for k, v in job.items() if k not in ("spec", "spec_bytes", "fds")}, sort_keys=True)


def retire(candidate: dict) -> bool:
    """Stop a candidate server; whether its isolation had been complete."""
    for fd in (candidate["requests"], candidate["replies"]):
        if fd is not None:  # None: handed to a test child, closed here then
            os.close(fd)
    stop(candidate["pid"])
    return was_isolated(candidate["ready"])


def map_own_ids(uid: int, gid: int) -> bool:
    """Be the same user inside the new user namespace as outside: without a mapping the job could create
    no file in the tmpfs it mounts (their owner would be unmapped), only in the zygote's, shared ones."""
    try:
        for path, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{path}", "w") as f:
                f.write(text)
    except OSError:
        return False
    return True


def mount_scratch(libc, size_bytes: int, inodes: int) -> bool:
    """Fresh tmpfs, capped in bytes and in files, on every path the job may write; private, so nothing
    mounted here propagates back to the zygote."""
    options = f"size={size_bytes},nr_inodes={inodes},mode=1777".encode()
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    return all(libc.mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, options) == 0 for target in SCRATCH)


class CapabilityHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class CapabilityData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def drop_capabilities(libc) -> bool:
    """Give up the capabilities the new user namespace granted (the job would otherwise be able to unmount
    its scratch tmpfs), for good: bounding and ambient sets emptied, no privilege gained by exec."""
    for capability in range(LAST_CAPABILITY + 1):
        libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)  # EINVAL past the kernel's last one: fine
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    none = (CapabilityData * 2)()
    return libc.capset(ctypes.byref(CapabilityHeader(CAPABILITY_VERSION_3, 0)), none) == 0


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def collect(fd: int, wall_s: float, output: bytearray) -> tuple[int, bool, bool]:
    """Read the job's output into `output` (its length is the cap, plus one byte to see past it): (size,
    timed out, truncated). Read in place, so no copy of it is left in this process's freed memory."""
    view, size, deadline = memoryview(output), 0, time.monotonic() + wall_s
    timed_out = truncated = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        got = os.readv(fd, [view[size:]])
        if not got:
            break
        size += got
        if size == len(output):  # one byte past the cap
            truncated, size = True, size - 1
            break
    return size, timed_out, truncated


def stop(child: int) -> int:
    """Our own code in the child takes its namespace down on SIGTERM; its exit code once all is gone."""
    try:
        os.kill(child, signal.SIGTERM)
    except ProcessLookupError:
        pass
    _, status = os.waitpid(child, 0)
    return exit_code(status)


def fork_job(job: dict, libc, run, keep: tuple[int, ...]) -> tuple[int, int]:
    """(pid, read end of its ready pipe) of a new isolated child that calls `run()`; in the child every
    pipe end of this job but `keep` is closed first (`job["fds"]`: the ones the zygote opened for it)."""
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:
        for fd in job["fds"]:
            if fd not in keep:
                os.close(fd)
        os.close(ready_read)
        isolate_and_run(job, ready_write, libc, run)
    os.close(ready_write)
    return child, ready_read


def was_isolated(ready_read: int) -> bool:
    isolated = os.read(ready_read, 1) == b"R"
    os.close(ready_read)
    return isolated


def run_job(job: dict, libc, spare: dict | None, output: bytearray) -> tuple[int, bool, bool, int, bool]:
    """(output's size, timed out, truncated, exit code, isolated) of one job, its output collected into
    `output`: the literal-call harness in one isolated process, or a proxied test (`mode` "proxy") in two,
    each isolated on its own (the candidate's: `spare` when its limits match, else one started now)."""
    report_read, report_write = os.pipe()
    job["fds"] = [report_read, report_write]
    if job["mode"] != "proxy":
        child, ready = fork_job(job, libc, lambda: run_harness(job, report_write), keep=(report_write,))
        os.close(report_write)
        size, timed_out, truncated = collect(report_read, job["wall_s"], output)
        os.close(report_read)
        return size, timed_out, truncated, stop(child), was_isolated(ready)
    candidate = spare if spare is not None and spare["limits"] == limits_of(job) else spawn_candidate(job, libc)
    if spare is not None and candidate is not spare:
        retire(spare)
    channel = (candidate["requests"], candidate["replies"])
    job["fds"] += channel
    test, test_ready = fork_job(
        job, libc, lambda: run_check(job, report_write, *channel), keep=(report_write, *channel)
    )
    for fd in (report_write, *channel):
        os.close(fd)
    candidate["requests"] = candidate["replies"] = None  # handed over: the test child holds them now
    size, timed_out, truncated = collect(report_read, job["wall_s"], output)
    os.close(report_read)
    code = stop(test)
    test_isolated = was_isolated(test_ready)
    candidate_isolated = retire(candidate)  # always: a candidate left behind would run on
    isolated = test_isolated and candidate_isolated
    return size, timed_out, truncated, code, isolated


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    # Not dumpable: a job runs as the same user, and could otherwise write into /proc/<zygote>/mem.
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    for module in PRELOADED:
        importlib.import_module(module)
    spare, output = None, bytearray()
    while (job := read_job()) is not None:
        if spare is not None and job["mode"] != "proxy":
            retire(spare)  # a literal or io job next: the waiting candidate is not needed (nor inherited)
            spare = None
        if len(output) != job["output_bytes"] + 1:
            output = bytearray(job["output_bytes"] + 1)
        size, timed_out, truncated, code, isolated = run_job(job, libc, spare, output)
        python_proxy.write_all(1, f"RESULT {size} {int(timed_out)} {int(truncated)} {code} {int(isolated)}\n".encode())
        python_proxy.write_all(1, memoryview(output)[:size])
        zero(output)  # all of it: a truncated output's byte past the cap too
        zero(job["spec"])
        # After a proxied job, the next one's candidate starts now, while the caller reads this result.
        spare = spawn_candidate(job, libc) if job["mode"] == "proxy" else None
    if spare is not None:
        retire(spare)


def read_job() -> dict | None:
    """The next job from stdin (module docstring), its spec left as raw bytes; None at the end of input."""
    length = read_exactly(11)
    if length is None:
        return None
    job = json.loads(read_exactly(int(length)))
    job["spec"] = bytearray(job["spec_bytes"])
    view, got = memoryview(job["spec"]), 0
    while got < len(view):
        read = os.readv(0, [view[got:]])
        if not read:
            raise EOFError("stdin ended inside a job's spec")
        got += read
    return job


def read_exactly(n: int) -> bytes | None:
    """n bytes of stdin (not secret: a length or a header), or None at the end of input before any."""
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            if data:
                raise EOFError("stdin ended inside a job's header")
            return None
        data += chunk
    return data


def zero(buffer: bytearray) -> None:
    """Overwrite the buffer in place: a later job's program, forked from here, could read it."""
    if buffer:
        ctypes.memset((ctypes.c_char * len(buffer)).from_buffer(buffer), 0, len(buffer))


if __name__ == "__main__":
    main()
