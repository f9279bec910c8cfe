"""What a report says of the stages whose last run failed: a failed eval's results marked as an earlier
eval's, and what the failed runs spent, apart from the rows' costs (lineage.py: a failed training run
published no model); and of runs that started and never finished (killed: the manifest's start records,
runs/directory.py), whose checkpoints, curve and perhaps published model no record describes."""

from __future__ import annotations

import html
import os
import socket
import time
from pathlib import Path

from .markup import table


def utc(timestamp: float | None) -> str:
    if timestamp is None:
        return "time not recorded"
    try:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))
    except (OverflowError, OSError, ValueError):  # a hand-edited record's 1e300: past what a clock can say
        return f"time out of range ({timestamp!r})"


def failed_eval(stages: dict) -> dict | None:
    """The manifest's eval entry where the last eval failed: results.json, if any, is an earlier eval's."""
    entry = stages.get("eval")
    return entry if entry is not None and entry.get("status", "done") != "done" else None


def failed_because(entry: dict) -> str:
    return (
        f"{entry.get('status', 'failed')} at {utc(entry.get('finished'))}: {entry.get('error') or 'no error recorded'}"
    )


def stale_note(results_path: Path, last_eval: dict | None) -> str:
    """Said above results the last eval did not write: the eval that failed left the earlier eval's file
    (results and samples are replaced only when an eval finishes), and eval/results.json records no time
    of its own, so its file's time is the one given."""
    if last_eval is None:
        return ""
    written = utc(results_path.stat().st_mtime)
    text = (
        f"These are not the last eval's results: the last eval {failed_because(last_eval)}. They are an earlier "
        f"eval's, as it wrote eval/results.json (file last modified {written}), and so are the failed samples "
        "below. Run eval again for results of the run as it is now."
    )
    return f"<p class='stale'>{html.escape(text)}</p>"


def curves_caption(stages: dict, running: dict | None = None) -> str:
    """Each curve is its stage's last run (figures.series): where that run failed or never finished, the
    curve is not of the model a row scored, which the caption says."""
    failed = [name for name, entry in stages.items() if entry.get("status") == "failed" and "train_seconds" in entry]
    note = f" The last run of {', '.join(failed)} failed: its curve is of that run." if failed else ""
    # A stage with a start record standing ran again since its stopped run: that later run is its last.
    stopped = [
        name for name, entry in sorted(stages.items()) if entry.get("stopped_runs") and name not in (running or {})
    ]
    if stopped:
        note += (
            f" The last run of {', '.join(stopped)} stopped part-way (above): its curve is of that run, not of the "
            "model the stage last recorded."
        )
    if running:
        note += (
            f" The last run of {', '.join(sorted(running))} never finished (above): its curve is of that run, "
            "not of the model the stage last recorded."
        )
    return f"Training curves, per stage (metrics.jsonl), each the stage's last run.{note}"


def unfinished_runs(running: dict) -> str:
    """The runs that started and have no finished or failed record: killed, or still running."""
    if not running:
        return ""
    lines = [
        f"{name}: a run started at {utc(start.get('started'))} {how_it_ended(start)}"
        for name, start in sorted(running.items())
    ]
    text = (
        " ".join(f"{line}." for line in lines)
        + " What such a run wrote (checkpoints, its training curve, a model it may have published) is described "
        "by no record of the manifest; run the stage again to finish it."
    )
    return f"<p class='stale'>{html.escape(text)}</p>"


def how_it_ended(start: dict) -> str:
    """A start record's run: still running here (its pid alive on this host), elsewhere perhaps, or killed."""
    pid, host = start.get("pid"), start.get("host")
    if host != socket.gethostname():
        return f"on host {host} (pid {pid}) and has not finished: it is still running there, or it was killed"
    if pid_alive(pid):
        return f"(pid {pid}) is still running"
    return (
        f"(pid {pid}, now gone) never finished and recorded no error: it was killed (SIGKILL, the OOM killer, "
        "a power loss)"
    )


def pid_alive(pid: int | None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


FAILED_CAPTION = (
    "What the last run of each stage that failed spent before it failed: spent, so in the run's seconds above and in "
    "costs.json. Its train s and FLOPs are its own (a run resumed from a checkpoint: from there on). A training "
    "stage's failed run published no model, so its seconds and FLOPs are in no row's cost; "
    "a generate stage keeps the records it wrote, so a failed one's dollars are in the API $ of rows trained "
    "on its data."
)


def own(record: dict, key: str):
    """A failed or stopped run's own training seconds or FLOPs: its record's totals are the model's whole
    training, a checkpoint's included, where the run had resumed from one (`this_run` is the run's part;
    records written before it existed give the totals)."""
    return (record.get("this_run") or {}).get(key, record.get(key))


def failed_attempts(stages: dict) -> str:
    """The stages whose last run failed, with what that run spent, and the training runs stopped part-way
    beside a stage's finished run: apart from the rows' costs (lineage.py)."""
    failed = {name: entry for name, entry in sorted(stages.items()) if entry.get("status") == "failed"}
    stopped = [(name, run) for name, entry in sorted(stages.items()) for run in entry.get("stopped_runs") or []]
    if not failed and not stopped:
        return ""
    head = ["stage", "failed at", "wall s", "train s", "train FLOPs", "API $", "error"]
    rows = [
        [
            name,
            utc(entry.get("finished")),
            number(entry.get("seconds"), ",.1f"),
            number(own(entry, "train_seconds"), ",.1f"),
            number(own(entry, "flops_estimate"), ".2e"),
            api_dollars(entry.get("api_cost")),
            entry.get("error") or "",
        ]
        for name, entry in failed.items()
    ]
    rows += [
        [
            f"{name} (stopped part-way)",
            utc(run.get("finished")),
            number(run.get("seconds"), ",.1f"),
            number(own(run, "train_seconds"), ",.1f"),
            number(own(run, "flops_estimate"), ".2e"),
            "",
            run.get("error") or "",
        ]
        for name, run in stopped
    ]
    caption = FAILED_CAPTION + (STOPPED_CAPTION if stopped else "")
    return "<h2>Runs that failed</h2>" + table(head, rows) + f"<p>{html.escape(caption)}</p>"


STOPPED_CAPTION = (
    " A training run stopped part-way (Ctrl-C, a divergence) before it published a model is listed beside the "
    "stage's finished run, whose record still describes the stage's model: its wall seconds are in the totals."
)


def number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def api_dollars(cost: dict | None) -> str:
    if not cost or not cost.get("api", cost.get("requests", 0) > 0):
        return ""  # a local policy: its cost is the seconds beside
    return "price unknown" if cost.get("usd") is None else f"{cost['usd']:,.4f}"
