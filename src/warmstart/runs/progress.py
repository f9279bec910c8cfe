"""Progress for long stages, written to stderr so stdout stays for results: a rich bar on a terminal, and
elsewhere (a log file, `nohup`, CI, `| tee`), where rich draws only the bar's final state, a plain line
every `PLAIN_EVERY_S` seconds or tenth of the work, and one at the end."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_EVERY_S = 30.0


@contextmanager
def progress_bar(description: str, total: int):
    """Yields `advance(n=1, note="", total=None)`: moves the bar and shows a short note (e.g. the loss); a
    `total` changes the bar's length (a stage whose work grows as it learns more, `generate`'s rounds)."""
    console = Console(stderr=True)
    description = escape(description)  # a stage's or row's name, the user's text: `qwen3 [/no_think]` is no tag
    if not console.is_terminal:
        with plain_progress(description, total, console) as advance:
            yield advance
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(description, total=total, note="")

        def advance(n: int = 1, note: str | None = None, total: int | None = None) -> None:
            changes = {"note": escape(note)} if note is not None else {}
            progress.update(task, advance=n, total=total, **changes)

        yield advance


@contextmanager
def plain_progress(description: str, total: int, console: Console):
    """The same `advance`, as plain lines (`progress_bar`)."""
    now = time.monotonic()
    state = {"done": 0, "total": total, "note": "", "started": now, "said": now, "said_done": 0, "tenth": 0}

    def say() -> None:
        done, whole = state["done"], state["total"]
        share = f" ({100 * done / whole:.0f} %)" if whole else ""
        elapsed = clock(time.monotonic() - state["started"])
        note = f", {state['note']}" if state["note"] else ""
        console.print(f"{description}: {done:,}/{whole:,}{share}, {elapsed} elapsed{escape(note)}", highlight=False)
        state["said"], state["said_done"] = time.monotonic(), done

    def advance(n: int = 1, note: str | None = None, total: int | None = None) -> None:
        state["done"] += n
        state["total"] = total if total is not None else state["total"]
        state["note"] = note if note is not None else state["note"]
        tenth = int(10 * state["done"] / state["total"]) if state["total"] else 0
        if n and (tenth > state["tenth"] or time.monotonic() - state["said"] >= PLAIN_EVERY_S):
            state["tenth"] = tenth
            say()

    yield advance
    if state["done"] != state["said_done"]:
        say()  # where it ended, not said yet (a stage stopped early, or one whose last tenth was not said)


def clock(seconds: float) -> str:
    """h:mm:ss with as many hours as it took (a day had wrapped back to 00:00:00 as a clock's time would)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"
