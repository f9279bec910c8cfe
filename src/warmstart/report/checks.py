"""The run files the report reads, checked before anything is drawn.

A file edited by hand (or written by another tool) can be valid JSON of the wrong shape: a row named in
`rows` with no entry in `policies`, a pass@1 that is text or null, a stage entry that is a list. Each is
one error naming the file and the field, never a traceback halfway through the page, nor a table or a
figure built from a value the report misread. Only what the report uses is checked, so results written
by an older warmstart (without `tasks_scored`, say) still report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from ..errors import WarmstartError

MISSING = object()  # a key the file does not have, said as "missing" rather than as a null it does not hold


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_share(value: Any) -> bool:
    return is_number(value) and 0.0 <= value <= 1.0


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_interval(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(map(is_number, value)) and value[0] <= value[1]


def is_text(value: Any) -> bool:
    return isinstance(value, str)


def either_none(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or test(value)


def require(path: Path, where: str, value: Any, test: Callable[[Any], bool], expected: str) -> None:
    if not test(value):
        raise WarmstartError(f"{path}: {where} is {shown(value)}, expected {expected} (not as warmstart writes it)")


def shown(value: Any) -> str:
    if value is MISSING:
        return "missing"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def optional(path: Path, entry: dict, where: str, key: str, test: Callable[[Any], bool], expected: str) -> None:
    """`entry[key]` passes `test` where the key is there at all."""
    if key in entry:
        require(path, f"{where}.{key}", entry[key], test, expected)


def check_results(path: Path, results: dict) -> dict:
    """eval/results.json as the report reads it (`html.build_report`); returned as it is."""
    require(
        path,
        "k",
        results.get("k", MISSING),
        lambda k: is_count(k) and k >= 1,
        "a number of samples per task, 1 or more",
    )
    require(path, "temperature", results.get("temperature", MISSING), is_number, "a number")
    rows, policies = results["rows"], results["policies"]
    require(path, "rows", rows, lambda r: isinstance(r, list) and all(map(is_text, r)), "a list of row names")
    for name in rows:
        if name not in policies:
            raise WarmstartError(f"{path}: rows names {name!r}, which has no entry in policies")
    for name, row in policies.items():
        check_row(path, f"policies.{name}", row, results["k"])
    comparisons = results.get("comparisons") or []
    require(path, "comparisons", comparisons, lambda c: isinstance(c, list), "a list")
    for number, comparison in enumerate(comparisons):
        check_comparison(path, f"comparisons[{number}]", comparison)
    return results


def check_row(path: Path, where: str, row: Any, k: int) -> None:
    require(path, where, row, lambda r: isinstance(r, dict), "an object (one policy's results)")
    require(path, f"{where}.pass@1", row.get("pass@1", MISSING), is_share, "a number from 0 to 1")
    require(
        path,
        f"{where}.tasks",
        row.get("tasks", MISSING),
        lambda n: is_count(n) and n > 0,
        "a number of tasks, 1 or more",
    )
    if row.get("tasks_scored") == 0:  # eval refuses such a row: its pass@1 would be a 0 that measured nothing
        raise WarmstartError(f"{path}: {where}: no task scored (tasks_scored 0), so its pass@1 measured nothing")
    optional(path, row, where, "pass@1_ci", either_none(is_interval), "[low, high] or null")
    optional(path, row, where, f"pass@{k}", either_none(is_share), "a number from 0 to 1 or null")
    optional(path, row, where, f"pass@{k}_ci", either_none(is_interval), "[low, high] or null")
    optional(path, row, where, "policy", either_none(is_text), "the policy's name")
    optional(path, row, where, "model_files", is_digests, "an object of file: digest")

    def within_tasks(n: Any) -> bool:
        return is_count(n) and n <= row["tasks"]

    for key in ("tasks_scored", "tasks_scored_k"):
        optional(path, row, where, key, within_tasks, f"a number of tasks from 0 to {row['tasks']}")
    for key in ("request_errors", "infra_errors", "samples_per_task"):
        optional(path, row, where, key, is_count, "a whole number")


def check_comparison(path: Path, where: str, comparison: Any) -> None:
    require(path, where, comparison, lambda c: isinstance(c, dict), "an object (a paired difference)")
    for key in ("a", "b"):
        require(path, f"{where}.{key}", comparison.get(key, MISSING), is_text, "a row name")
    require(path, f"{where}.diff", comparison.get("diff", MISSING), is_number, "a number")
    for key in ("tasks", "tasks_either"):
        optional(path, comparison, where, key, is_count, "a whole number")
    require(path, f"{where}.ci", comparison.get("ci", MISSING), is_interval, "[low, high]")
    require(
        path,
        f"{where}.within_noise",
        comparison.get("within_noise", MISSING),
        lambda v: isinstance(v, bool),
        "true or false",
    )


def check_stages(path: Path, stages: dict) -> dict:
    """manifest.json's stages, the fields the report reads (run line, lineages, costs, funnels); returned as
    they are."""
    for name, entry in stages.items():
        where = f"stages.{name}"
        require(path, where, entry, lambda e: isinstance(e, dict), "an object (one stage's record)")
        for key in (
            "seconds",
            "train_seconds",
            "flops_estimate",
            "finished",
            "seconds_failed_before",
            "seconds_before",
        ):
            optional(path, entry, where, key, either_none(is_number), "a number")
        for key in ("status", "init", "data", "source", "error"):
            optional(path, entry, where, key, either_none(is_text), "text")
        for key in ("sequence", "started_sequence"):
            optional(path, entry, where, key, either_none(is_count), "a whole number")
        optional(
            path,
            entry,
            where,
            "output_files",
            lambda o: isinstance(o, dict) and all(map(is_digests, o.values())),
            "an object of directory: {file: digest}",
        )
        optional(path, entry, where, "this_run", is_own_part, "an object of numbers (train_seconds, flops_estimate)")
        optional(path, entry, where, "stopped_runs", is_stopped_runs, "a list of {started, finished, seconds, error}")
        optional(path, entry, where, "api_cost", either_none(lambda c: isinstance(c, dict)), "an object")
        check_api_cost(path, f"{where}.api_cost", entry.get("api_cost") or {})
        if name.startswith("curate:") and "kept" in entry:
            check_funnel(path, where, entry)
    return stages


def is_stopped_runs(runs: Any) -> bool:
    """A stage entry's runs stopped part-way beside it (runs/directory.py `add_stopped_run`)."""
    fields = {"started": is_number, "finished": is_number, "seconds": is_number, "error": is_text, "sequence": is_count}
    return isinstance(runs, list) and all(
        isinstance(run, dict)
        and all(check(run.get(key, 0 if key != "error" else "")) for key, check in fields.items())
        and is_own_part(run.get("this_run"))
        for run in runs
    )


def is_own_part(part: Any) -> bool:
    """A training run's own seconds and FLOPs (`this_run`: absent from older records)."""
    return part is None or (isinstance(part, dict) and all(either_none(is_number)(v) for v in part.values()))


def check_running(path: Path, running: Any) -> dict:
    """manifest.json's start records (runs that never finished), absent from older manifests; returned as they are."""
    running = {} if running is None else running
    require(path, "running", running, lambda r: isinstance(r, dict), "an object of stage: start record")
    for name, start in running.items():
        where = f"running.{name}"
        require(path, where, start, lambda s: isinstance(s, dict), "an object (a start record)")
        optional(path, start, where, "started", either_none(is_number), "a number")
        optional(path, start, where, "pid", either_none(is_count), "a process id")
        optional(path, start, where, "host", either_none(is_text), "text")
        optional(path, start, where, "sequence", either_none(is_count), "a whole number")
    return running


def is_digests(value: Any) -> bool:
    """{file name: digest} of one model's files (a digest null for a directory among them)."""
    return isinstance(value, dict) and all(either_none(is_text)(d) for d in value.values())


def check_api_cost(path: Path, where: str, cost: dict) -> None:
    optional(path, cost, where, "usd", either_none(is_number), "dollars or null (a price unknown)")
    optional(path, cost, where, "accepted", is_count, "a whole number")


def check_funnel(path: Path, where: str, entry: dict) -> None:
    for key in ("input", "kept"):
        require(path, f"{where}.{key}", entry.get(key, MISSING), is_count, "a whole number")
    require(path, f"{where}.dropped", entry.get("dropped", MISSING), is_reasons, "an object of reason: count")


def is_reasons(value: Any) -> bool:
    return isinstance(value, dict) and all(map(is_count, value.values()))
