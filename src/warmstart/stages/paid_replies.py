"""Replies generate paid for and never wrote: billed once, by every later run of the stage.

`generate` writes a chunk's rollouts once the chunk is answered, and every usable reply goes to the
response cache as it arrives. A run killed mid-chunk (SIGKILL, a crashed machine) leaves replies that were
paid for in the cache only; a rerun answers them from it, and a cache hit costs nothing. Left at that, the
ledger would miss their price and the dollar cap, which starts from the ledger, could be crossed by it.

So every billed reply's usage is appended here as it arrives (one flushed line, `reply_id` naming it)
before anything else keeps it, and each run of the stage bills the ones no record bills (a record bills
the replies it was sent for; its cache hits bill nothing). Idempotent: a later run finds the same ones.
"""

from __future__ import annotations

from pathlib import Path

from ..runs.jsonl import read_records
from ..types import Trajectory, Usage


def paid_replies_path(out: Path) -> Path:
    """Beside the stage's output, in a folder no output name can take: trajectories/paid/<output>.jsonl."""
    return out.parent / "paid" / out.name


def judge_paid_path(out: Path) -> Path:
    """The LLM judge's paid replies (`[env.judge]`), every one: no record carries a judge's bill, so each run
    of the stage bills them all (trajectories/paid/judge/<output>.jsonl)."""
    return out.parent / "paid" / "judge" / out.name


def paid(path: Path) -> list[Usage]:
    """Every reply `path` says was paid for."""
    return read_records(path, Usage) if path.exists() else []


def unrecorded(path: Path, records: list[Trajectory]) -> list[Usage]:
    """The replies `path` says were paid for that none of `records` bills."""
    if not path.exists():
        return []
    billed = {u.reply_id for t in records for u in [*t.usage, *t.rejected_usage] if not u.from_cache}
    return [u for u in read_records(path, Usage) if u.reply_id not in billed]
