"""The agent's working copy in the swe environment, rebuilt from the conversation (no state kept).

The copy is the task's broken repository plus every well-formed `write_file` and `edit_file` of the
conversation, replayed in order; an `edit_file` whose `old` text does not occur exactly once changes
nothing (the agent was told so when it made the call), and so does a write or edit the working copy
could not hold (`repo.write`: a path with a NUL byte or an over-long name, one that is a directory or
lies under a file, text with a lone surrogate), so writing the copy never raises. Paths are cleaned as
in `repo` (relative, no `..`, never .git). The grader decides later which of these changes it applies
(paths.py).
"""

from __future__ import annotations

from ...lm.toolcalls import call_arguments
from ...types import Message
from ..repo import PATH_ERROR, clean_path, content_error, function_tool
from ..repo import write as write_file
from .snapshot import MAX_FILE_BYTES as SNAPSHOT_FILE_BYTES

# As large as the snapshot keeps: a task mined in a 1.5 MB module must be fixable with these tools.
MAX_FILE_BYTES = SNAPSHOT_FILE_BYTES

EDIT_TOOL = function_tool(
    "edit_file",
    "Replace the one occurrence of `old` in a file with `new` (`old` must occur exactly once).",
    {"path": {"type": "string"}, "old": {"type": "string"}, "new": {"type": "string"}},
)


def edit(files: dict[str, str], arguments: dict) -> str | None:
    """Apply one edit_file call to `files` in place; the error text when it cannot be applied."""
    path = clean_path(arguments.get("path"))
    old, new = arguments.get("old"), arguments.get("new")
    if path is None:
        return PATH_ERROR
    if path not in files:
        return f"error: no such file: {path}"
    if not isinstance(old, str) or not isinstance(new, str) or not old:
        return "error: edit_file needs `old` (non-empty) and `new` strings"
    count = files[path].count(old)
    if count != 1:
        return f"error: `old` occurs {count} times in {path}; it must occur exactly once"
    content = files[path].replace(old, new, 1)
    error = content_error(content, MAX_FILE_BYTES)
    if error is None:
        files[path] = content
    return error


def write(files: dict[str, str], arguments: dict) -> str | None:
    """Apply one write_file call to `files` in place; the error text when it cannot be applied."""
    return write_file(files, arguments, MAX_FILE_BYTES)


def working_files(start: dict[str, str], messages: list[Message], before_call: str | None = None) -> dict[str, str]:
    """`start` with every write and edit of the conversation replayed in order; with `before_call` (a
    tool call's id), only those made before the last call with that id (the state that call sees)."""
    return replay(start, messages, before_call)[0]


def replay(
    start: dict[str, str], messages: list[Message], before_call: str | None = None
) -> tuple[dict[str, str], list[str]]:
    """`working_files`, and the error of each write or edit the replay refused (changing nothing)."""
    calls = [call for message in messages for call in message.tool_calls or []]
    if before_call is not None:
        ids = [call.id for call in calls]
        if before_call in ids:
            calls = calls[: len(ids) - 1 - ids[::-1].index(before_call)]
    files, refused = dict(start), []
    for call in calls:
        if call.function.name in ("write_file", "edit_file"):
            error = (write if call.function.name == "write_file" else edit)(files, call_arguments(call) or {})
            if error is not None:
                refused.append(f"{call.function.name}: {error}")
    return files, refused


def changed(start: dict[str, str], files: dict[str, str]) -> dict[str, str]:
    return {p: c for p, c in files.items() if start.get(p) != c}
