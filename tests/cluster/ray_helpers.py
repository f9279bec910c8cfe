"""What the Ray tests compare (a run's records without what may differ between two runs of one recipe) and the
processes they look for (Ray's workers, named after their actors)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def comparable(path: Path) -> list[str]:
    """Each record as canonical JSON, sorted, without what names the run rather than the answer: its creation
    time and its billed replies' ids (Usage.reply_id, drawn per reply)."""
    out = []
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        del record["provenance"]["created"]
        for usage in [*record.get("usage", []), *record.get("rejected_usage", [])]:
            usage.pop("reply_id", None)
        out.append(json.dumps(record, sort_keys=True))
    return sorted(out)


def ids_and_verdicts(path: Path) -> list[tuple]:
    rows = [json.loads(line) for line in path.read_bytes().splitlines()]
    return sorted((r["task_id"], r["sample_index"], json.dumps(r["verdict"], sort_keys=True)) for r in rows)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Ray's raylet is this process's child, its workers the raylet's)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def actor_processes(title: str) -> list[int]:
    """This process's Ray workers whose title starts with `title`: Ray names a worker after its actor
    (`ray::VerifyWorker`) and the method it runs (`ray::VerifyWorker.verify`). A killed one not yet reaped
    has no title."""
    pids = []
    for pid in descendants(os.getpid()):
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if name.startswith(title.encode()):
            pids.append(pid)
    return pids


def actor_processes_when_settled(title: str, expected: set[int], within_s: float = 20.0) -> set[int]:
    """The actor processes once they are `expected`, or as they are after `within_s`: `ray.kill` returns
    before its process is gone."""
    deadline = time.monotonic() + within_s
    while (found := set(actor_processes(title))) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return found
