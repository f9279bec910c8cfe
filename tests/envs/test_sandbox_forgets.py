"""The sandbox forgets every execution: whatever one execution writes, wherever it manages to write it,
the next never sees, and nothing of it stays in the host's memory or on its disk. In the pre-started
zygote (the default) and with a new sandbox per execution alike; real bubblewrap, hostile programs."""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path

import pytest

from warmstart.envs.python import PythonEnv, PythonOptions, parse_results, run_harness
from warmstart.envs.python_harness import decode
from warmstart.envs.sandbox import bubblewrap as sandbox

pytestmark = pytest.mark.skipif(
    sandbox.bwrap_path() is None or not Path("/usr/bin/python3").exists(), reason="needs bubblewrap"
)

SCRATCH = {"/work", "/tmp", "/dev/shm"}  # the only places an execution may write, each fresh and capped
MB = 1 << 20
MODES = ["zygote", "per-execution"]

# What a program does to leave files behind: take off whatever is mounted over the sandbox's own
# filesystems (it must lack the capabilities), then write a file into every directory that takes one —
# in its own namespaces and again from a user namespace of its own (where the mounts are locked).
LEAVER = r"""
import ctypes, os
CLONE_NEWUSER, CLONE_NEWNS, MNT_DETACH = 0x10000000, 0x20000, 2
LIBC = ctypes.CDLL(None, use_errno=True)

def uncover():
    for target in (b"/work", b"/tmp", b"/dev/shm", b"/dev", b"/"):
        for _ in range(3):
            LIBC.umount2(target, MNT_DETACH)

def directories():
    found = {"/tmp", "/var/tmp", "/work", "/dev/shm", "/dev", "/", os.environ.get("HOME", "/work")}
    for root, dirs, _ in os.walk("/"):
        if root.startswith(("/proc", "/sys", "/usr")):
            dirs[:] = []
        else:
            found.add(root)
    return sorted(found)

def write_everywhere(token, size):
    wrote = []
    for directory in directories():
        try:
            with open(os.path.join(directory, "leftover-" + token), "wb") as f:
                f.write(b"x" * size)
            wrote.append(directory)
        except OSError:
            pass
    return wrote

def leave_quickly(token, size):
    # What `leave` does, minus the walk and the nested namespace: cheap enough for a thousand runs.
    uncover()
    wrote = []
    for directory in ("/tmp", "/var/tmp", "/work", "/dev/shm", "/dev", "/", "/task"):
        try:
            with open(os.path.join(directory, "leftover-" + token), "wb") as f:
                f.write(b"x" * size)
            wrote.append(directory)
        except OSError:
            pass
    return wrote

def leftovers():
    return [os.path.join(root, name) for root, dirs, names in os.walk("/") if not root.startswith(("/proc", "/sys"))
            for name in names if name.startswith("leftover-")]

def in_own_user_namespace(work):
    # Returns what `work` returned in a forked child that made itself a user and mount namespace.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            LIBC.unshare(CLONE_NEWUSER | CLONE_NEWNS)
            uncover()
            os.write(write_end, repr(work()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.waitpid(pid, 0)
    return eval(data) if data else []

def leave(token, size):
    uncover()
    return {"wrote": write_everywhere(token, size), "nested": in_own_user_namespace(lambda: write_everywhere(token + "n", size))}

def find():
    uncover()
    return leftovers() + in_own_user_namespace(leftovers)

def leave_and_hang(token):
    leave(token, 4096)
    while True:
        pass

def fill(count_inodes=True):
    # Bytes until the tmpfs is full (files of 4 MB: the file-size rlimit is 16 MB), then empty files until
    # no inode is left, in each writable place.
    result = {}
    for directory in ("/work", "/tmp", "/dev/shm"):
        error, files = None, 0
        try:
            for n in range(10**6):
                with open(f"{directory}/big{n}", "wb") as f:
                    f.write(b"x" * (4 << 20))
        except OSError as exc:
            error = exc.errno
        written = sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))
        try:
            for n in range(10**6 if count_inodes else 0):
                open(f"{directory}/empty{n}", "wb").close()
                files += 1
        except OSError:
            pass
        result[directory] = [written, error, files]
    return result

def capabilities():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return [fields[name].strip() for name in ("CapEff", "CapPrm", "CapBnd")]
"""


def call(env: PythonEnv, function: str, *args):
    """`function` of LEAVER called once in the sandbox, and its value (None: it returned nothing)."""
    nonce = secrets.token_hex(8)
    spec = {
        "program": LEAVER,
        "entry_point": function,
        "calls": [{"args": list(args), "kwargs": {}}],
        "nonce": nonce,
        "per_call_s": 30.0,
    }
    results, load_error = parse_results(env.execute(spec).stdout, nonce, 1)
    assert load_error is None
    record = results.get(0, {})
    return decode(record["value"]) if "value" in record else None


def make_env(mode: str, **options) -> PythonEnv:
    return PythonEnv(PythonOptions(zygote=mode == "zygote", **{"wall_s": 20.0, **options}))


@pytest.fixture(scope="module", params=MODES)
def env(request):
    env = make_env(request.param)
    yield env
    env.close()


def shmem_bytes() -> int:
    """Host memory held by every tmpfs and shared-memory segment on the machine (tmpfs lives in RAM)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(fields["Shmem"].split()[0]) * 1024


def sandbox_disk_bytes() -> int:
    """Bytes in the sandbox's host-side directories (a zygote's task files, per-execution task dirs)."""
    total = 0
    for entry in Path(tempfile.gettempdir()).glob("warmstart-*"):
        for path in [entry, *entry.rglob("*")] if entry.is_dir() else [entry]:
            try:
                total += path.lstat().st_size
            except FileNotFoundError:
                pass
    return total


def test_an_execution_can_write_only_its_own_scratch_directories(env):
    left = call(env, "leave", secrets.token_hex(4), 1024)
    assert set(left["wrote"]) == SCRATCH  # the cwd and $HOME are /work; /, /dev, /var/tmp, /task refuse
    assert set(left["nested"]) <= SCRATCH  # its own user namespace uncovers nothing writable either


def test_the_next_execution_sees_none_of_the_files_the_last_one_left(env):
    for _ in range(3):
        left = call(env, "leave", secrets.token_hex(4), 64 * 1024)
        assert set(left["wrote"]) == SCRATCH
        assert call(env, "find") == []


def test_a_job_holds_no_capability_to_unmount_its_scratch(env):
    assert call(env, "capabilities") == ["0000000000000000"] * 3


@pytest.mark.parametrize("mode", MODES)
def test_a_timed_out_executions_files_are_gone_too(mode):
    env = make_env(mode, wall_s=2.0)
    try:
        started = time.monotonic()
        assert call(env, "leave_and_hang", secrets.token_hex(4)) is None
        assert time.monotonic() - started < 2.0 + 5.0  # it was killed at the wall-clock limit
        # The look that follows gets room to finish on a loaded machine (limits are read per execution; the
        # zygote, and whatever the killed job might have left in it, stay the same).
        env.options = env.options.model_copy(update={"wall_s": 20.0})
        assert call(env, "find") == []
    finally:
        env.close()


def test_writing_past_the_caps_fails_inside_and_the_host_is_unharmed(env):
    limits = sandbox.Limits()
    before = shmem_bytes()
    filled = call(env, "fill")
    assert set(filled) == SCRATCH
    for directory, (written, error, files) in filled.items():
        assert error == 28, directory  # ENOSPC inside the sandbox
        assert limits.tmpfs_bytes - 8 * MB <= written <= limits.tmpfs_bytes, directory
        assert files <= limits.tmpfs_inodes, directory
    assert shmem_bytes() - before < 50 * MB  # the 192 MB it held went back with the execution
    assert call(env, "find") == []  # and the sandbox works on


def test_bwrap_run_writes_only_capped_scratch_and_forgets_it():
    """`sandbox.run` without a zygote (the repo environment's path): the same writable set, bytes and
    inodes capped (test_sandbox_inodes.py tests the inode cap in every mode)."""
    limits = sandbox.Limits(wall_s=20.0, tmpfs_bytes=8 * MB)

    def run(function: str, *args):
        nonce = secrets.token_hex(8)
        spec = {
            "program": LEAVER,
            "entry_point": function,
            "calls": [{"args": list(args), "kwargs": {}}],
            "nonce": nonce,
            "per_call_s": 30.0,
        }
        with tempfile.TemporaryDirectory(prefix="warmstart-py-") as task_dir:  # the sandbox user reads it
            results, _ = parse_results(run_harness(spec, Path(task_dir), limits, unsafe=False).stdout, nonce, 1)
        return decode(results[0]["value"])

    assert set(run("leave", "bwrap", 1024)["wrote"]) == SCRATCH
    assert run("find") == []
    filled = run("fill")
    assert {d: (w <= 8 * MB, e, f < limits.tmpfs_inodes) for d, (w, e, f) in filled.items()} == {
        d: (True, 28, True) for d in SCRATCH
    }


@pytest.mark.parametrize(("mode", "executions"), [("zygote", 1000), ("per-execution", 50)])
def test_many_executions_leaving_files_leave_no_memory_or_disk_behind(mode, executions):
    """Each execution writes 1 MB into every place it can; after them all, the host's tmpfs memory and
    the sandbox's own disk are where they were (a leak would be `executions` MB at least). Per
    execution, a new sandbox costs ~0.15 s on 2 loaded cores, hence fewer of them."""
    env = make_env(mode)
    try:
        call(env, "find")  # a zygote started before the baseline: its start is not a leak
        memory, disk = shmem_bytes(), sandbox_disk_bytes()
        for n in range(executions):
            assert set(call(env, "leave_quickly", f"{n}", MB)) == SCRATCH
        assert call(env, "find") == []
        assert shmem_bytes() - memory < 50 * MB
        assert sandbox_disk_bytes() - disk < 50 * MB
    finally:
        env.close()


def test_a_work_dir_is_copied_into_capped_scratch_and_the_hosts_copy_is_never_written():
    """A caller's work_dir (the repo and swe environments' working copy) had been bound writable at /work:
    writes landed on the host's disk with no cap but the file-size rlimit per file (a model's command
    wrote 287 MB in 0.37 s). Now /work is a tmpfs capped at tmpfs_bytes beyond the copied tree."""
    limits = sandbox.Limits(wall_s=20.0, tmpfs_bytes=8 * MB)
    script = (
        "cat notes.txt; echo changed > notes.txt; cat notes.txt; mkdir -p sub && echo new > sub/new.txt; "
        "for i in 1 2 3 4 5 6; do head -c 4000000 /dev/zero > big$i || break; done; echo kept $(ls big* | wc -l)"
    )
    with tempfile.TemporaryDirectory(prefix="warmstart-work-") as tmp:
        os.chmod(tmp, 0o755)  # the sandbox user must reach the two directories inside
        work, task = Path(tmp) / "work", Path(tmp) / "task"
        work.mkdir()
        task.mkdir()
        (work / "notes.txt").write_text("original\n")
        (work / "data.bin").write_bytes(b"y" * (3 * MB))  # the tree's own size is room beyond the cap
        execution = sandbox.run(["/bin/sh", "-c", script], task, limits, work_dir=work)
        host = sorted(p.relative_to(work).as_posix() for p in work.rglob("*"))
        notes = (work / "notes.txt").read_text()
    out, err = execution.stdout.decode(), execution.stderr.decode()
    assert out.startswith("original\nchanged\n"), (out, err)  # the program worked on its own writable copy
    assert "No space left on device" in err and int(out.split("kept ")[1]) <= 3, (out, err)
    assert host == ["data.bin", "notes.txt"] and notes == "original\n"  # nothing of it reached the host
