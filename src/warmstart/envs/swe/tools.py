"""The agent's working copy in the swe environment, rebuilt from the conversation (no state kept).

The copy is the task's broken repository plus every well-formed `write_file` and `edit_file` of the
conversation, replayed in order; an `edit_file` whose `old` text does not occur exactly once changes
nothing (the agent was told so when it made the call). Paths are cleaned as in `repo` (relative, no
`..`, never .git). The grader decides later which of these changes it applies (paths.py).
"""

from __future__ import annotations

from ...lm.toolcalls import call_arguments
from ...types import Message
from ..repo import clean_path, function_tool

MAX_FILE_BYTES = 1_000_000

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
        return "error: path must be a relative path inside the repository (no '..', not .git)"
    if path not in files:
        return f"error: no such file: {path}"
    if not isinstance(old, str) or not isinstance(new, str) or not old:
        return "error: edit_file needs `old` (non-empty) and `new` strings"
    count = files[path].count(old)
    if count != 1:
        return f"error: `old` occurs {count} times in {path}; it must occur exactly once"
    content = files[path].replace(old, new, 1)
    if len(content.encode()) > MAX_FILE_BYTES:
        return f"error: a file may hold at most {MAX_FILE_BYTES} bytes"
    files[path] = content
    return None


def write(files: dict[str, str], arguments: dict) -> str | None:
    path, content = clean_path(arguments.get("path")), arguments.get("content")
    if path is None:
        return "error: path must be a relative path inside the repository (no '..', not .git)"
    if not isinstance(content, str) or len(content.encode()) > MAX_FILE_BYTES:
        return f"error: content must be a string of at most {MAX_FILE_BYTES} bytes"
    files[path] = content
    return None


def working_files(start: dict[str, str], messages: list[Message], before_call: str | None = None) -> dict[str, str]:
    """`start` with every write and edit of the conversation replayed in order; with `before_call` (a
    tool call's id), only those made before the last call with that id (the state that call sees)."""
    calls = [call for message in messages for call in message.tool_calls or []]
    if before_call is not None:
        ids = [call.id for call in calls]
        if before_call in ids:
            calls = calls[: len(ids) - 1 - ids[::-1].index(before_call)]
    files = dict(start)
    for call in calls:
        if call.function.name in ("write_file", "edit_file"):
            (write if call.function.name == "write_file" else edit)(files, call_arguments(call) or {})
    return files


def changed(start: dict[str, str], files: dict[str, str]) -> dict[str, str]:
    return {p: c for p, c in files.items() if start.get(p) != c}
