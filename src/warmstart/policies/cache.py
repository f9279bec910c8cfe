"""The response cache of the API policies: every successful reply, by request key, in one JSONL file.

A reply is appended (one line) under a key of everything that changes the answer, before it is used; a
rerun asks the cache first, so nothing is paid for twice (see `ResponseCache` for what survives what).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from pathlib import Path

from ..runs.jsonl import JsonlAppender, fs_error, read_records
from ..types import Record
from .backend import Reply


class CachedReply(Record):
    key: str
    reply: Reply


# The background fdatasync runs at most once per this many seconds. It guards only against a machine or
# OS crash (a killed process loses nothing written: the lines are in the kernel's page cache), so this is
# the most a crash can cost: about a second of replies, asked for again. One fdatasync a second is a few
# ms of disk time on an SSD, tens on a network disk, run in a thread: negligible at any request rate. A
# shorter interval buys little (an API run pays for minutes or hours of replies) for more disk flushes,
# a longer one widens the loss for no measurable gain. Redis's `appendfsync everysec` is the same rule.
SYNC_INTERVAL_S = 1.0


class ResponseCache:
    """Successful replies by request key, appended to a JSONL file as they arrive.

    What survives what:
    - a kill (SIGKILL, the OOM killer, Ctrl-C): `put` writes the reply's line with one `write` to an
      O_APPEND descriptor before it returns, and a reply is used only after its `put`. A written line is in
      the kernel's page cache, which outlives the process, so a rerun finds every reply that was used and
      pays again only for the requests that were in flight;
    - a machine or OS crash (power loss, kernel panic): lines reach the disk by a background fdatasync
      (`PeriodicSync`) at most once per `sync_interval_s`, each covering every line written before it
      began, and `close` syncs the rest. A crash loses at most about the last second of replies (plus an
      fdatasync in progress), which the rerun asks for again;
    - a disk error: a failed fdatasync is raised, naming the file, from the next `put` and every later one
      until `close` (such a put writes nothing: a disk that lost writes is not trusted with more), or else
      from `close`.

    `put` never waits for the disk: the event loop never blocks on it, and no request waits for a disk
    round trip, at concurrency 1 or 64. The same rule as `JsonlAppender`: flushed per line, fsynced at close.
    """

    def __init__(self, path: Path, sync_interval_s: float = SYNC_INTERVAL_S):
        self.path = path
        self.sync_interval_s = sync_interval_s
        self.replies = {r.key: r.reply for r in read_records(path, CachedReply)} if path.exists() else {}
        self._fd: int | None = None
        self._syncer: PeriodicSync | None = None  # the background fdatasync of the open descriptor
        self._failure_raised = False  # the syncer's failure was raised by a put: close need not repeat it
        self._tail_checked = False  # a killed writer's torn last line is cut once, before the first write

    @staticmethod
    def key(parts: dict) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> Reply | None:
        return self.replies.get(key)

    def put(self, key: str, reply: Reply) -> None:
        """Append the reply's line; return without waiting for the disk (see the class docstring)."""
        self._raise_disk_failure()
        line = (CachedReply(key=key, reply=reply).model_dump_json() + "\n").encode()
        fd = self._open()
        try:
            written = os.write(fd, line)  # one O_APPEND write: lines of concurrent puts never interleave
            if written != len(line):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            self._cut_back(fd)
            raise fs_error(self.path, "could not cache a reply", exc) from None
        self._size += len(line)
        self._syncer.wrote()
        self.replies[key] = reply

    def _cut_back(self, fd: int) -> None:
        """Remove what part of a failed line reached the file: it ends with its last whole reply."""
        try:
            os.ftruncate(fd, self._size)
        except OSError:
            pass  # the next writer cuts a torn tail before it appends

    def close(self) -> None:
        """Make every written line durable (a final fdatasync), then close the file."""
        if self._fd is None:
            return
        fd, syncer, already_raised = self._fd, self._syncer, self._failure_raised
        self._fd, self._syncer, self._failure_raised = None, None, False
        try:
            syncer.stop()  # the thread is joined before the descriptor is closed: it never syncs a reused fd
        finally:
            os.close(fd)
        if syncer.failure is not None and not already_raised:
            raise syncer.failure

    def _open(self) -> int:
        if self._fd is None:
            if not self._tail_checked:  # once per cache: every line it writes itself is whole
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not ends_with_newline(self.path):
                    JsonlAppender(self.path).close()  # cuts the torn last line a killed writer left
                self._tail_checked = True
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self._size = os.fstat(self._fd).st_size  # the file ends with a whole line here
            except OSError as exc:
                raise fs_error(self.path, "cannot write to it", exc) from None
            self._syncer = PeriodicSync(self._fd, self.path, self.sync_interval_s)
        return self._fd

    def _raise_disk_failure(self) -> None:
        if self._syncer is not None and self._syncer.failure is not None:
            self._failure_raised = True
            raise self._syncer.failure


def ends_with_newline(path: Path) -> bool:
    """No torn last line to cut: the file is absent, empty or ends with a newline (one byte read, not the file)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return True
            f.seek(size - 1)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True


class PeriodicSync:
    """A time-based group commit for one append-only descriptor: one thread (per descriptor, not per
    reply) runs fdatasync at most once per `interval_s`, and only when lines were written since the last;
    each covers every line written before it began. Nobody waits for it but `stop`."""

    def __init__(self, fd: int, path: Path, interval_s: float):
        self.fd, self.path, self.interval_s = fd, path, interval_s
        self.failure: OSError | None = None  # the first failed fdatasync, for the cache to raise
        self._changed = threading.Condition()
        self._written = 0  # lines written, as told by `wrote`
        self._synced = 0  # of which covered by a finished fdatasync
        self._stopping = False
        # A daemon: a cache never closed (a crashed caller) must not keep the interpreter alive.
        self._thread = threading.Thread(target=self._run, name=f"fdatasync {path.name}", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        with self._changed:
            was_clean = self._written == self._synced
            self._written += 1
            if was_clean:  # only then can the thread be waiting for a line; later ones it finds itself
                self._changed.notify()

    def stop(self) -> None:
        """End the thread (after the fdatasync it may be running), then sync what is left."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join()
        if self.failure is None and self._written > self._synced:
            self._sync_covering(self._written)

    def _run(self) -> None:
        began = time.monotonic() - self.interval_s  # the first line is synced at once
        while self.failure is None:  # after a failure, syncing again could report a lost write as success
            with self._changed:
                self._changed.wait_for(lambda: self._stopping or self._written > self._synced)
                # Let the interval since the previous fdatasync began run out: lines written meanwhile share the next.
                self._changed.wait_for(lambda: self._stopping, timeout=began + self.interval_s - time.monotonic())
                if self._stopping:
                    return  # `stop` syncs what is left
                covers = self._written
            began = time.monotonic()
            self._sync_covering(covers)

    def _sync_covering(self, lines: int) -> None:
        try:
            _sync(self.fd)
        except OSError as exc:
            self.failure = disk_failure(self.path, exc)
            return
        with self._changed:
            self._synced = lines


def _sync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)  # fdatasync: data and the file size, no timestamps


def disk_failure(path: Path, exc: OSError) -> OSError:
    """The error a failed fdatasync is reported as: the file named, the replies at risk said."""
    failure = OSError(
        exc.errno,
        f"the response cache could not be synced to disk ({exc.strerror or exc}); "
        "replies cached since its last successful sync may not survive a machine crash",
        str(path),
    )
    failure.__cause__ = exc
    return failure
