"""Where `warmstart report` writes its page: the run directory's report.html, or `--out` (a run directory
one cannot write to), checked before any work."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import WarmstartError

PAGE_START = "<!doctype html><html><head><meta charset='utf-8'><title>warmstart: "  # how a report is told apart


def report_path(root: Path, out: Path | None) -> Path:
    """Where the page goes, checked before any work: `<root>/report.html`, or `out` (`--out`)."""
    if out is None:
        # os.access, not the mode bits: it also says no for a read-only mount, even to root.
        if not os.access(root, os.W_OK):
            raise WarmstartError(
                f"{root}: the run directory is not writable, so report.html cannot be written there; "
                "give --out PATH to write the report elsewhere"
            )
        return root / "report.html"
    out = Path(out)
    if out.is_dir():
        raise WarmstartError(f"--out {out}: a directory; give the file to write (e.g. {out / 'report.html'})")
    if not out.parent.is_dir():
        raise WarmstartError(f"--out {out}: there is no directory {out.parent} to write it in")
    if not os.access(out.parent, os.W_OK):
        raise WarmstartError(f"--out {out}: {out.parent} is not writable")
    if out.exists() and not is_report(out):  # a typo must not replace a run's manifest or results
        raise WarmstartError(f"--out {out}: exists and is not a warmstart report; refusing to replace it")
    return out


def is_report(path: Path) -> bool:
    try:
        with path.open("rb") as page:
            return page.read(len(PAGE_START)) == PAGE_START.encode()
    except OSError:
        return False


def run_name(root: Path) -> str:
    """The run directory's name, also when it is given as `.` (whose name is empty)."""
    return root.resolve().name or str(root.resolve())
