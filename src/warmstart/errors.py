"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""


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


# What `json.loads` raises for text it cannot read, beyond JSONDecodeError: ValueError for an integer past
# Python's 4,300 digits, RecursionError for nesting deeper than the interpreter's stack.
JSON_ERRORS = (ValueError, RecursionError)


def json_problem(exc: Exception) -> str:
    """Why `json.loads` refused a text, in a few words for a one-line error."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return getattr(exc, "msg", None) or first_line(exc, 120)
