"""Progress bars for long stages (rich), written to stderr so stdout stays for results."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, total: int):
    """Yields `advance(n=1, note="", total=None)`: moves the bar and shows a short note (e.g. the loss); a
    `total` changes the bar's length (a stage whose work grows as it learns more, `generate`'s rounds)."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=total, note="")

        def advance(n: int = 1, note: str | None = None, total: int | None = None) -> None:
            changes = {"note": note} if note is not None else {}
            progress.update(task, advance=n, total=total, **changes)

        yield advance
