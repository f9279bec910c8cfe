"""Graceful shutdown for `warmstart serve`: the requests being served are answered before the engine stops.

On Ctrl-C or SIGTERM (what `docker stop`, systemd and Kubernetes send) the listening socket closes, so no
new connection is taken; a request that comes on a connection kept alive is answered 503 (the SDKs ask
again, elsewhere or later); the requests already in progress are finished and answered; then the engine
stops. A second Ctrl-C or SIGTERM stops at once, the unanswered requests cut off (the engine's worker is a
daemon thread: the process ends without it).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class InProgress:
    """The requests a server is answering, counted by its handler threads."""

    def __init__(self):
        self.count, self.closed = 0, False
        self.changed = threading.Condition()

    def enter(self) -> bool:
        """Count one more request; False once the server is shutting down (it is not to be served)."""
        with self.changed:
            if self.closed:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self.changed:
            self.count -= 1
            self.changed.notify_all()

    def close(self) -> int:
        """Take no more requests; the number still being answered."""
        with self.changed:
            self.closed = True
            return self.count

    def wait_until_answered(self) -> None:
        with self.changed:
            while self.count:
                self.changed.wait(timeout=0.5)  # short waits: a second signal is handled between them


def finish_in_progress(in_progress: InProgress, engine) -> None:
    """Answer what is in progress, then stop `engine`; a second interrupt stops without waiting."""
    try:
        left = in_progress.close()
        if left:
            log.warning(
                "serve: shutting down once %d request(s) in progress are answered (Ctrl-C again: at once)", left
            )
        in_progress.wait_until_answered()
    except KeyboardInterrupt:
        log.warning("serve: stopped with %d request(s) unanswered", in_progress.count)
        return
    engine.stop()
