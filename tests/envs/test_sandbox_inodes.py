"""Every tmpfs an execution can write is capped in inodes, not only in bytes: a program creating empty
files, directories and symlinks stops at `Limits.tmpfs_inodes` with ENOSPC instead of holding the host's
kernel memory (an empty file costs no byte of the tmpfs but ~1 KB of slab: 1.4 million of them, 1.4 GB,
in 10 s before the cap). In every mode: the python environment's zygote and its one-off sandboxes, and
`sandbox.run` as the repo environment calls it and as swe does (a work_dir copied into /work, an out_dir
bound inside it). Real bubblewrap."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from warmstart.envs.python import PythonEnv, PythonOptions, parse_results
from warmstart.envs.python_harness import decode
from warmstart.envs.sandbox import bubblewrap as sandbox

pytestmark = pytest.mark.skipif(
    sandbox.bwrap_path() is None or not Path("/usr/bin/python3").exists(), reason="needs bubblewrap"
)

SCRATCH = ("/work", "/tmp", "/dev/shm")
CAP = sandbox.Limits().tmpfs_inodes  # the default every environment runs with
MB = 1 << 20
MODES = ["zygote", "per-execution", "run", "run-with-work-and-out-dirs"]

# Run inside the sandbox: as a function the python harness calls, or as a script with a JSON argument.
PROGRAM = r"""
import ctypes, errno, json, os, sys

def slab_bytes():
    # The host's kernel slab: /proc/meminfo is not namespaced.
    fields = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    return int(fields["Slab"].split()[0]) * 1024

def make(path, n):
    # Files, directories and symlinks in turn: each takes an inode and (nearly) no byte.
    if n % 3 == 0:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    elif n % 3 == 1:
        os.mkdir(path)
    else:
        os.symlink("t", path)

def fill(attempts):
    # Up to `attempts` new entries in each writable place: how many it made, the error that stopped it, and
    # how much the host's slab grew while they all exist.
    before, made = slab_bytes(), {}
    for directory in ("/work", "/tmp", "/dev/shm"):
        n, error = 0, None
        try:
            while n < attempts:
                make(f"{directory}/e{n}", n)
                n += 1
        except OSError as exc:
            error = errno.errorcode.get(exc.errno, str(exc.errno))
        made[directory] = [n, error]
    return {"made": made, "slab_growth": slab_bytes() - before}

def look():
    # What each writable place holds at the start, and whether a file can be made in it.
    seen = {}
    for directory in ("/work", "/tmp", "/dev/shm"):
        names = sorted(os.listdir(directory))
        try:
            open(f"{directory}/fresh", "w").close()
            seen[directory] = [names, True]
        except OSError:
            seen[directory] = [names, False]
    return seen

def lift_the_cap():
    # Everything a program can try to remount its scratch without the cap: in its own namespaces and in a
    # user and mount namespace of its own (as root there); then what the kernel says the mounts are.
    libc = ctypes.CDLL(None, use_errno=True)
    MS_REMOUNT, CLONE_NEWUSER, CLONE_NEWNS = 0x20, 0x10000000, 0x20000
    def remount_all():
        return [libc.mount(b"tmpfs", d.encode(), b"tmpfs", MS_REMOUNT, b"nr_inodes=0") == 0 for d in ("/work", "/tmp", "/dev/shm")]
    lifted = remount_all()
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        try:
            libc.unshare(CLONE_NEWUSER | CLONE_NEWNS)
            os.write(write_end, json.dumps(remount_all()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    nested = json.loads(os.read(read_end, 4096) or b"[]")
    os.wait()
    mounts = {}
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[4] in ("/work", "/tmp", "/dev/shm"):
            mounts[fields[4]] = [fields[5], line.split(" - ")[1].split()[2]]  # mount flags, filesystem options
    capabilities = [l.split()[1] for l in open("/proc/self/status") if l.startswith(("CapEff", "CapPrm", "CapBnd"))]
    return {"lifted": lifted + nested, "mounts": mounts, "capabilities": capabilities, "uid": os.getuid()}

if __name__ == "__main__":
    print(json.dumps(globals()[sys.argv[1]](*json.loads(sys.argv[2]))))
"""


class PythonEnvRunner:
    """The python environment: its zygote, or a one-off sandbox per execution (`zygote = false`)."""

    def __init__(self, zygote: bool):
        self.env = PythonEnv(PythonOptions(zygote=zygote, wall_s=30.0))

    def __call__(self, function: str, *args):
        nonce = secrets.token_hex(8)
        spec = {
            "program": PROGRAM,
            "entry_point": function,
            "calls": [{"args": list(args), "kwargs": {}}],
            "nonce": nonce,
            "per_call_s": 30.0,
        }
        results, load_error = parse_results(self.env.execute(spec).stdout, nonce, 1)
        assert load_error is None and "value" in results.get(0, {}), results
        return decode(results[0]["value"])

    def close(self) -> None:
        self.env.close()


class RunRunner:
    """`sandbox.run` with a new sandbox per execution: bare (the repo environment's commands, the swe probe)
    or with a work_dir copied into /work and an out_dir bound at /work/<name> (the swe grader's runs)."""

    def __init__(self, dirs: bool, limits: sandbox.Limits = sandbox.Limits(wall_s=30.0, cpu_s=30)):
        self.root = Path(tempfile.mkdtemp(prefix="warmstart-inodes-"))
        os.chmod(self.root, 0o755)  # the sandbox user must reach the directories inside
        self.task, self.limits, self.dirs = self.root / "task", limits, {}
        self.task.mkdir()
        (self.task / "program.py").write_text(PROGRAM)
        if dirs:
            work, out = self.root / "work", self.root / "results"
            (work / "pkg").mkdir(parents=True)
            (work / "pkg" / "mod.py").write_text("x = 1\n")
            (work / "README").write_text("a repository\n")
            out.mkdir()
            self.dirs = {"work_dir": work, "out_dir": out}

    def execute(self, function: str, *args) -> sandbox.Execution:
        argv = ["/usr/bin/python3", "-I", "-S", "/task/program.py", function, json.dumps(args)]
        return sandbox.run(argv, self.task, self.limits, **self.dirs)

    def __call__(self, function: str, *args):
        execution = self.execute(function, *args)
        assert execution.returncode == 0, execution
        return json.loads(execution.stdout)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def runner_for(mode: str):
    if mode in ("zygote", "per-execution"):
        return PythonEnvRunner(zygote=mode == "zygote")
    return RunRunner(dirs=mode == "run-with-work-and-out-dirs")


@pytest.fixture(params=MODES)
def runner(request):
    runner = runner_for(request.param)
    yield runner
    runner.close()


def own_entries(runner, names: list[str]) -> list[str]:
    """What a writable place holds that the execution did not find there by design (swe's copied tree and
    results directory in /work)."""
    given = {"pkg", "README", "results"} if isinstance(runner, RunRunner) and runner.dirs else set()
    return [name for name in names if name not in given]


def test_creating_entries_stops_at_the_cap_with_enospc_in_every_writable_place(runner):
    filled = runner("fill", 2 * CAP)
    # The tmpfs's root is one of its inodes; in /work, so are the copied tree and the out_dir's mount point
    # (the cap there is that much higher): every place leaves the program the same count of its own.
    assert filled["made"] == {directory: [CAP - 1, "ENOSPC"] for directory in SCRATCH}


def test_a_program_trying_for_millions_of_entries_holds_little_of_the_hosts_memory(runner):
    """Before the cap, 100,000 entries in each place took ~300 MB of slab (1 KB each) in `sandbox.run`; now
    3 x 16,384 at most, ~50 MB. The program measures the slab itself while its entries exist."""
    filled = runner("fill", 100_000)
    assert all(made <= CAP for made, _ in filled["made"].values()), filled
    assert filled["slab_growth"] < 128 * MB, filled


def test_the_next_execution_starts_clean_after_one_that_hit_the_cap(runner):
    assert runner("fill", 2 * CAP)["made"]["/tmp"] == [CAP - 1, "ENOSPC"]
    seen = runner("look")
    for directory in SCRATCH:
        names, writable = seen[directory]
        assert own_entries(runner, names) == [] and writable, (directory, names)


@pytest.mark.parametrize("mode", ["run", "run-with-work-and-out-dirs"])
def test_the_program_cannot_lift_the_cap_and_keeps_the_sandbox_user_and_no_capability(mode):
    """`sandbox.run` caps by remounting bwrap's tmpfs as root of bwrap's user namespace, then leaves it: the
    program, one namespace down as before, can remount nothing, nor from a namespace of its own; bwrap's
    nosuid and nodev survive the remount."""
    runner = runner_for(mode)
    try:
        found = runner("lift_the_cap")
    finally:
        runner.close()
    assert found["lifted"] == [False] * 6
    for directory in SCRATCH:
        flags, options = found["mounts"][directory]
        assert {"nosuid", "nodev"} <= set(flags.split(",")), (directory, flags)
        assert ("nr_inodes=" in options) and ("size=" in options), (directory, options)
    assert found["capabilities"] == ["0000000000000000"] * 3
    assert found["uid"] == (65534 if os.getuid() == 0 else os.getuid())


def test_a_smaller_cap_from_limits_applies_to_sandbox_run():
    runner = RunRunner(dirs=True, limits=sandbox.Limits(wall_s=30.0, cpu_s=30, tmpfs_inodes=100))
    try:
        filled = runner("fill", 1000)
    finally:
        runner.close()
    assert filled["made"] == {directory: [99, "ENOSPC"] for directory in SCRATCH}


def test_a_cap_that_cannot_be_set_is_the_sandboxs_failure_and_the_program_never_runs(monkeypatch):
    monkeypatch.setattr(sandbox, "MOUNT", "/usr/bin/mount --no-such-option")  # the first remount fails
    runner = RunRunner(dirs=False)
    try:
        execution = runner.execute("look")
    finally:
        runner.close()
    assert execution.stdout == b"" and execution.returncode == 125
    assert execution.stderr.startswith(sandbox.SANDBOX_FAILED.encode()), execution.stderr  # mount's words after ours
    assert "capping the inodes" in execution.infra_error and "no-such-option" in execution.infra_error


def test_a_cap_of_zero_is_refused_since_the_kernel_reads_it_as_none():
    with pytest.raises(ValueError):
        sandbox.Limits(tmpfs_inodes=0)
    with pytest.raises(ValueError):
        sandbox.Limits(tmpfs_bytes=0)
