"""The connections of `warmstart serve`: how many are served at once, how long one may take to send a request's
head, and whether a client that has stopped sending is gone or is still waiting for its answer.

- http.server gives each connection a thread. At most `ServeOptions.max_connections` (512 by default) are
  served at once; the accepting thread answers one past that itself, with a 503 and `Retry-After`, and
  closes it. So many idle or slow connections (slowloris) hold at most that many threads.
- A request's head (request line and headers) must be complete within `HEAD_TIMEOUT_S` of the connection's
  opening or of the previous answer: an idle kept-alive connection is closed then, and so is one that
  trickles its headers a byte at a time, which the per-read timeout alone never ends. Its body, likewise,
  within `BODY_TIMEOUT_S` of the head's end (a 408, then the close): a body trickled a byte at a time, each
  read in time, had held its thread for as long as the client went on.
- A client that closes its connection and one that only half-closes it (shutdown after sending its
  request, still reading) look alike to the server: the socket reads as ended. They differ once written
  to: a closed one answers with a reset. So the first time the socket reads as ended, the answer's first
  bytes, `HTTP/`, are written ahead of the rest (`AnswerWriter`), and the client counts as gone only once
  they have been refused. Every answer starts with them, so the client reads the same bytes it would have:
  sound in HTTP/1.0, which has no interim answers, as in 1.1 (an interim `100 Continue`, the earlier
  probe, is 1.1's alone: an HTTP/1.0 client was taken for gone).
- A connection the server closes is closed lingering (`close_lingering`): its sending side shut down, then
  what the client still sends read and dropped until it closes too, for at most `LINGER_S` (`LINGER_READ_S`
  of silence) and `LINGER_BYTES`. A client still sending a body the server refused (a 413 over the limit,
  a 401) thus reads the answer: a socket closed with bytes unread resets the connection, and a client
  still sending then sees a broken pipe instead of the answer. The bounds keep a client from holding its
  thread by sending on forever. A connection refused past the limit is closed lingering too, by one thread
  for all of them (`LingeringCloser`): the accepting thread must not wait, nor start a thread for each.
"""

from __future__ import annotations

import io
import json
import queue
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass

from .request import ApiError

DEFAULT_MAX_CONNECTIONS = 512  # far above what one model's batch serves at once, far below the fd limit
HEAD_TIMEOUT_S = 30  # above the keep-alive expiry of common clients (httpx 5 s, aiohttp 15 s): they close first
# A request's body is due whole this long after its head: the default limit's 4 MiB at 35 kB/s, or a body
# that stops for the per-read timeout (60 s) and then goes on once. A larger --max-request-bytes over a slow
# link needs a faster client; the bound is what ends a body trickled in forever.
BODY_TIMEOUT_S = 120
RETRY_AFTER_S = 1  # connections free up as requests are answered; the SDKs wait this long, then ask again
ANSWER_START = b"HTTP/"  # the first bytes of every answer, whatever its version and status
# A lingering close reads what the client still sends for at most this long in all, this long of silence, and
# this many bytes: a client sending a 64 MiB body over a 10 MB/s link reads its 413. Past the byte bound the
# connection is closed with the rest unread, which the kernel answers with a reset, after the answer: a client
# that reads the answer once its send fails (curl, the openai SDK, urllib3) still reads it, one that gives up at
# the failed send (http.client) sees a broken pipe. The bound is there because every byte of a refused body is
# read for nothing: without it a client could make the server read 30 s of its fastest link per request.
LINGER_S = 30
LINGER_READ_S = 5
LINGER_BYTES = 64 * 1024 * 1024
# Connections refused past the limit that linger at once (`LingeringCloser`); one more is closed at once. Each
# holds a descriptor for up to LINGER_S; a client that reads its 503 and closes, as the SDKs do, for a moment.
MOST_LINGERING = 64


class ConnectionLimit:
    """The connections being served, at most `most` at once (a slot taken per connection, given back at its end)."""

    def __init__(self, most: int):
        self.most = most
        self.slots = threading.BoundedSemaphore(most)

    def take(self) -> bool:
        return self.slots.acquire(blocking=False)

    def give_back(self) -> None:
        self.slots.release()


def busy_answer(most: int) -> bytes:
    """The whole answer to a connection past the limit: a 503 the SDKs retry after `Retry-After`."""
    error = ApiError(
        503,
        f"the server is serving its limit of {most} connections at once; retry in {RETRY_AFTER_S} s",
        code="server_busy",
    )
    body = json.dumps(error.body()).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Retry-After: {RETRY_AFTER_S}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def refuse(connection: socket.socket, answer: bytes) -> None:
    """Write `answer` without waiting on the client: this runs in the accepting thread, which must not block.
    It fits an empty socket's send buffer; should it not, the client gets the close alone."""
    try:
        connection.setblocking(False)
        connection.send(answer)
    except OSError:  # reset already, or a full buffer
        pass


class DeadlinePassed(TimeoutError):
    """A read past the deadline a connection's reads keep (`DeadlineReads.keep`); its message says what was late."""


class DeadlineReads(io.RawIOBase):
    """A connection's reads: each waits at most `per_read_s`, and while a request's head or body is awaited
    (a deadline kept) none waits past the deadline, however steadily the bytes trickle in."""

    def __init__(self, connection: socket.socket, per_read_s: float):
        super().__init__()
        self.connection, self.per_read_s = connection, per_read_s
        self.deadline: float | None = None
        self.late = ""  # what DeadlinePassed says

    def keep(self, within_s: float, late: str) -> None:
        """From now on no read waits past `within_s` from now; one that would raises DeadlinePassed(late)."""
        self.deadline, self.late = time.monotonic() + within_s, late

    def drop_deadline(self) -> None:
        self.deadline = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.connection.settimeout(self._wait_s())
        try:
            return self.connection.recv_into(buffer)
        except TimeoutError:
            self._check_deadline()  # the wait that ran out may have been what was left of the deadline
            raise

    def _wait_s(self) -> float:
        if self.deadline is None:
            return self.per_read_s
        self._check_deadline()
        return min(self.deadline - time.monotonic(), self.per_read_s)

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlinePassed(self.late)


class AnswerWriter(io.BufferedIOBase):
    """A connection's writes (http.server's `wfile`), whose answer may have been begun ahead of time: the
    bytes written early are not written twice."""

    def __init__(self, connection: socket.socket):
        super().__init__()
        self.connection = connection
        self.ahead = b""  # written before the answer was known; its next write starts with these bytes

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if self.ahead:
            if not data.startswith(self.ahead):  # every answer starts with ANSWER_START: a bug, not the client's
                raise RuntimeError(f"an answer begun with {self.ahead!r} went on with {data[:20]!r}")
            data, self.ahead = data[len(self.ahead) :], b""
        self.connection.sendall(data)
        return len(data)

    def begin(self) -> None:
        """Write the answer's first bytes now, once."""
        if not self.ahead:
            self.connection.sendall(ANSWER_START)
            self.ahead = ANSWER_START


class ClientWatch:
    """Whether the client of one request has gone away while the request is generated (module docstring)."""

    def __init__(self, connection: socket.socket, answer: AnswerWriter):
        self.connection, self.answer = connection, answer

    def gone(self) -> bool:
        poller = select.poll()  # not select.select: it refuses a descriptor above 1023 (a busy server's)
        try:
            poller.register(self.connection, select.POLLIN)
            events = poller.poll(0)
            if not events:
                return False
            if events[0][1] & (select.POLLERR | select.POLLHUP):  # reset: closed, and written to
                return True
            # Readable: the peek returns at once. Data is its next request, sent early: it is still there.
            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                # Ended: closed or half-closed. A closed one resets the answer's start, seen at the next look.
                self.answer.begin()
            return False
        except (OSError, ValueError):  # reset, or closed under us
            return True


def close_lingering(connection: socket.socket) -> None:
    """Shut down the sending side, then read and drop what the client still sends until it closes its side
    too, within the bounds (module docstring); the socket itself is closed by the caller."""
    deadline = time.monotonic() + LINGER_S
    try:
        connection.shutdown(socket.SHUT_WR)
        dropped, scratch = 0, bytearray(64 * 1024)
        while dropped < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(min(left, LINGER_READ_S))
            received = connection.recv_into(scratch)
            if not received:
                return
            dropped += received
    except OSError:  # reset or closed by the client, or silent past the bounds (TimeoutError): done
        pass


@dataclass
class Linger:
    """One connection being closed lingering by a `LingeringCloser`: its bounds, and what it has sent since."""

    connection: socket.socket
    ends: float  # LINGER_S after it began
    silent_until: float  # LINGER_READ_S after its last read
    dropped: int = 0

    def drop_sent(self) -> bool:
        """Read and drop what the client has sent; False once it has closed, reset, or sent LINGER_BYTES."""
        try:
            received = len(self.connection.recv(64 * 1024))
        except BlockingIOError:
            return True
        except OSError:
            return False
        self.dropped, self.silent_until = self.dropped + received, time.monotonic() + LINGER_READ_S
        return received > 0 and self.dropped < LINGER_BYTES

    def due(self, now: float) -> float:
        return min(self.ends, self.silent_until) - now


class LingeringCloser:
    """Connections closed lingering (`close_lingering`'s bounds) by one thread for all of them: those the
    accepting thread refuses past the limit, which it must not wait on, and a thread for each is what the
    limit is there to prevent. Closed at once, a refused client still sending its body had a reset, and
    http.client a broken pipe, instead of its 503. At most `most` linger at once; one more is closed at once."""

    def __init__(self, most: int = MOST_LINGERING):
        self.most = most
        self.arrivals: queue.SimpleQueue[socket.socket | None] = queue.SimpleQueue()  # None: stop
        self.wake_up, self.waker = socket.socketpair()  # a byte sent by `waker` ends the thread's wait
        self.wake_up.setblocking(False)
        self.waker.setblocking(False)
        self.thread = threading.Thread(target=self._run, name="serve-lingering-close", daemon=True)
        self.thread.start()

    def close(self, connection: socket.socket) -> None:
        """Close `connection` lingering: its sending side shut down, then what its client sends dropped."""
        self.arrivals.put(connection)
        self._wake()

    def stop(self) -> None:
        """Close every connection still lingering, at once, and end the thread."""
        self.arrivals.put(None)
        self._wake()
        self.thread.join()
        self.wake_up.close()
        self.waker.close()

    def _wake(self) -> None:
        try:
            self.waker.send(b"!")
        except BlockingIOError:  # bytes not read yet: the thread wakes anyway
            pass

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:  # epoll where there is one: any descriptor, any number
            selector.register(self.wake_up, selectors.EVENT_READ)
            while self._take_arrivals(selector):
                for key, _ in selector.select(self._wait_s(selector)):
                    if key.data is None:
                        self.wake_up.recv(4096)
                    elif not key.data.drop_sent():
                        self._end(selector, key.data)
                now = time.monotonic()
                for linger in lingering(selector):
                    if linger.due(now) <= 0:
                        self._end(selector, linger)
            for linger in lingering(selector):
                self._end(selector, linger)

    def _take_arrivals(self, selector: selectors.BaseSelector) -> bool:
        """Begin lingering on the connections handed over since the last look; False once told to stop."""
        while True:
            try:
                connection = self.arrivals.get_nowait()
            except queue.Empty:
                return True
            if connection is None:
                return False
            self._begin(selector, connection)

    def _begin(self, selector: selectors.BaseSelector, connection: socket.socket) -> None:
        if len(lingering(selector)) >= self.most:
            connection.close()
            return
        try:
            connection.shutdown(socket.SHUT_WR)
            connection.setblocking(False)
        except OSError:  # reset already
            connection.close()
            return
        now = time.monotonic()
        selector.register(connection, selectors.EVENT_READ, Linger(connection, now + LINGER_S, now + LINGER_READ_S))

    def _wait_s(self, selector: selectors.BaseSelector) -> float | None:
        """Until the first lingering connection is due; while none lingers, until woken."""
        now = time.monotonic()
        dues = [linger.due(now) for linger in lingering(selector)]
        return max(0.0, min(dues)) if dues else None

    def _end(self, selector: selectors.BaseSelector, linger: Linger) -> None:
        selector.unregister(linger.connection)
        linger.connection.close()


def lingering(selector: selectors.BaseSelector) -> list[Linger]:
    """The connections a LingeringCloser's selector watches (the waker aside)."""
    return [key.data for key in selector.get_map().values() if key.data is not None]
