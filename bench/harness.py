"""What every side-by-side benchmark shares: A B A B repetitions, medians and ratios, and the results file.

Each benchmark script measures two systems in one process run, alternating them over several
repetitions so that drift in a shared, noisy machine hits both alike, and reports medians. It writes
its section to bench/results/<name>.md; `bench/run_all.py` runs them all and joins the sections into
bench/results.md under a header naming the machine and library versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).parent / "results"


def interleaved(systems: dict[str, Callable[[], float]], repetitions: int) -> dict[str, list[float]]:
    """Call each system once per repetition, in turn (A B A B ...); each call returns one measurement."""
    out: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(repetitions):
        for name, measure in systems.items():
            out[name].append(measure())
    return out


def report_errors(main: Callable[[], None]) -> None:
    """Run a benchmark's `main` as warmstart's CLI runs a command: a WarmstartError (bad input, a missing
    model) or a file-system error is one `error:` line and exit status 1, not a traceback."""
    from warmstart.errors import WarmstartError, error_line

    try:
        main()
    except (WarmstartError, OSError) as exc:
        raise SystemExit(error_line(exc)) from None


def positive_int(text: str) -> int:
    """argparse type of a count (repetitions, steps, requests): 0 or less is argparse's one-line error."""
    value = int(text)  # not a number: argparse says "invalid positive_int value"
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def median(values: list[float]) -> float:
    return statistics.median(values)


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none: not Linux)."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in block.splitlines())}


def cpu_model() -> str:
    """The CPU's name with its family and model numbers: a VM may name only the vendor's line ("AMD EPYC"),
    and under that one name and the same flags bench/utilisation.py read bf16 matmul peaks of 785 GFLOP/s
    (2026-12-03, family not recorded) and ~420 (2026-12-04, family 25 model 17: Zen 4)."""
    fields = cpuinfo()
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        return f"{name}, family {fields['cpu family']} model {fields['model']}"
    return name


def cpu_flags() -> str:
    """The CPU's flags that decide float kernels (floats round differently with and without them)."""
    flags = cpuinfo().get("flags")
    if flags is None:
        return "unknown"
    present = set(flags.split())
    return (
        " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in present) or "none of avx2/avx512/amx"
    )


def environment() -> str:
    """One markdown paragraph: machine, CPU flags, cores, Python and library versions."""
    packages = ["warmstart", "torch", "transformers", "trl", "accelerate", "openai"]
    versions = ", ".join(f"{p} {version(p)}" for p in packages)
    return (
        f"Machine: {cpu_model()} (CPU flags {cpu_flags()}), {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}; Python {sys.version.split()[0]}; {versions}."
    )


def write_section(name: str, markdown: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(markdown.rstrip() + "\n")
    return path


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
