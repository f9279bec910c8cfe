"""One writer per run directory: an advisory lock that a stage holds while it runs.

Two processes running stages on one run directory would append every record twice (and pay twice) and
race on the manifest. Each stage takes `fcntl.flock` on `<run dir>/.lock` for as long as it runs; a
second process is refused at once with one line naming the holder's pid. The kernel drops the lock when
its holder exits, however it exits (a SIGKILL included), so a stale lock file never blocks a rerun.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import WarmstartError


class RunLock:
    def __init__(self, root: Path):
        self.path = root / ".lock"
        self.fd: int | None = None

    def acquire(self, stage: str) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WarmstartError(f"{self.path}: cannot open the run directory's lock ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WarmstartError(
                f"{stage}: another warmstart process (pid {holder}) is running a stage in {self.path.parent}; "
                "wait for it to finish, or give this run another run.dir"
            ) from None
        except OSError as exc:  # a file system without locks (ENOLCK): no stage may run unguarded
            os.close(fd)
            raise WarmstartError(f"{self.path}: cannot lock the run directory ({exc.strerror})") from None
        self.fd = fd
        write_holder(fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None


def write_holder(fd: int) -> None:
    """Our pid in the lock file, for a refused process to name. Only a courtesy: the lock is the flock, so a
    write the disk refuses (full) leaves the stage running with the lock held, and the holder unnamed."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
