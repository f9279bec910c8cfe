"""What the Ray tests compare: a run's records without what may differ between two runs of one recipe."""

from __future__ import annotations

import json
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
