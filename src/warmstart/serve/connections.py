"""The connections of `warmstart serve`: how many are served at once, how long one may take to send a request's
head, and whether a client that has stopped sending is gone or is still waiting for its answer.

- http.server gives each connection a thread. At most `ServeOptions.max_connections` (512 by default) are
  served at once; the accepting thread answers one past that itself, with a 503 and `Retry-After`, and
  closes it. So many idle or slow connections (slowloris) hold at most that many threads.
- A request's head (request line and headers) must be complete within `HEAD_TIMEOUT_S` of the connection's
  opening or of the previous answer: an idle kept-alive connection is closed then, and so is one that
  trickles its headers a byte at a time, which the per-read timeout alone never ends.
- A client that closes its connection and one that only half-closes it (shutdown after sending its
  request, still reading) look alike to the server: the socket reads as ended. They differ once written
  to: a closed one answers with a reset. So the first time the socket reads as ended, an interim
  `100 Continue` is written (HTTP/1.1 clients skip 1xx answers they did not ask for, RFC 9110 15.2), and
  the client counts as gone only once that has been refused.
"""

from __future__ import annotations

import io
import json
import select
import socket
import threading
import time

from .request import ApiError

DEFAULT_MAX_CONNECTIONS = 512  # far above what one model's batch serves at once, far below the fd limit
HEAD_TIMEOUT_S = 30  # above the keep-alive expiry of common clients (httpx 5 s, aiohttp 15 s): they close first
RETRY_AFTER_S = 1  # connections free up as requests are answered; the SDKs wait this long, then ask again
INTERIM_ANSWER = b"HTTP/1.1 100 Continue\r\n\r\n"


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


class DeadlineReads(io.RawIOBase):
    """A connection's reads: each waits at most `per_read_s`, and while a request's head is awaited
    (`deadline` set) none waits past the deadline, however steadily the bytes trickle in."""

    def __init__(self, connection: socket.socket, per_read_s: float):
        super().__init__()
        self.connection, self.per_read_s = connection, per_read_s
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.connection.settimeout(self._wait_s())
        return self.connection.recv_into(buffer)

    def _wait_s(self) -> float:
        if self.deadline is None:
            return self.per_read_s
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request's head did not come in time")
        return min(left, self.per_read_s)


class ClientWatch:
    """Whether the client of one request has gone away while the request is generated (module docstring)."""

    def __init__(self, connection: socket.socket, http_11: bool):
        self.connection = connection
        self.may_probe = http_11  # HTTP/1.0 has no 1xx answers: there an ended socket means gone
        self.probed = False

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
            return self.connection.recv(1, socket.MSG_PEEK) == b"" and not self._half_closed()
        except (OSError, ValueError):  # reset, or closed under us
            return True

    def _half_closed(self) -> bool:
        """The socket reads as ended: the first time, write the interim answer that tells a closed connection
        (it answers with a reset, seen at the next look) from a half-closed one (it does not)."""
        if self.may_probe and not self.probed:
            self.connection.sendall(INTERIM_ANSWER)
            self.probed = True
        return self.probed
