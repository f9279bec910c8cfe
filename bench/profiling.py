"""A profile actually run, as a markdown table: where a benchmark's time goes (shared by bench scripts)."""

from __future__ import annotations

import cProfile
import pstats
import time
from typing import Callable


def profile(run: Callable[[], object], top: int = 8, sort: str = "tottime") -> tuple[float, str]:
    """Run `run` once under cProfile; (wall seconds, markdown table of the `top` functions by `sort`)."""
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    try:
        run()
    finally:
        profiler.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in sorted(
        stats.stats.items(), key=lambda kv: -kv[1][2 if sort == "tottime" else 3]
    )[:top]:
        where = name if filename == "~" else f"{_short(filename)}:{line} {name}"
        rows.append(
            f"| `{where}` | {calls} | {tottime:.3f} | {cumtime:.3f} | {100 * (tottime if sort == 'tottime' else cumtime) / wall:.0f} % |"
        )
    header = f"| function | calls | own s | with callees s | share of {wall:.2f} s wall |\n|---|---|---|---|---|"
    return wall, header + "\n" + "\n".join(rows)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
