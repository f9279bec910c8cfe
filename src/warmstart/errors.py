"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""

import os


class WarmstartError(Exception):
    """A problem with the user's input or environment, stated so the user can fix it."""


def error_line(exc: WarmstartError | OSError) -> str:
    """The one `error:` line a command prints for a problem the user can fix: a WarmstartError, or a
    file-system error (the machine, not a bug: named by its file). Anything else is a bug, whose traceback
    the callers leave as it is."""
    if isinstance(exc, WarmstartError):
        return f"error: {exc}"
    where = f"{exc.filename}: " if exc.filename else ""
    return f"error: {where}{exc.strerror or exc}"


def first_line(message, limit: int = 200) -> str:
    """The first line of an exception's message (or any text), cut to `limit` characters: what a one-line
    error quotes of a library's report, however many lines it ran to."""
    return (str(message).strip().splitlines() or [""])[0][:limit]


# How a collective breaks off in a process whose peer ended (gloo's words, then NCCL's): that process's error
# says nothing of what went wrong, which the peer that failed first says in its own output.
PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
    "remote process exited or there was a network error",
)
PEER_FAILED = (
    "another process of this torchrun job failed first (its own error is in its output); this process's "
    "collective broke off"
)


def peer_failed(exc: BaseException) -> bool:
    """Whether `exc`, under torchrun (WORLD_SIZE > 1), is a collective that broke off because another process
    ended (`PEER_GONE`)."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    return any(words in str(exc) for words in PEER_GONE)


def one_line(text: str) -> str:
    """A server's message (it may run to several lines) as one line: its whitespace runs made one space."""
    return " ".join(text.split())


# What `json.loads` raises for text it cannot read, beyond JSONDecodeError: ValueError for an integer past
# Python's 4,300 digits, RecursionError for nesting deeper than the interpreter's stack.
JSON_ERRORS = (ValueError, RecursionError)


def json_problem(exc: Exception) -> str:
    """Why `json.loads` refused a text, in a few words for a one-line error."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return getattr(exc, "msg", None) or first_line(exc, 120)
