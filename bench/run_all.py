"""Run every side-by-side benchmark, one after another, and join their sections into bench/results.md.

    .venv/bin/python bench/run_all.py [--quick]

Each benchmark script that exists is run as its own subprocess (never two at once: they would measure
each other), with `--quick` passed through. Each writes bench/results/<name>.md (harness.write_section);
this runner then joins bench/results/*.md under a header naming the machine, the library versions,
the date and the command (sections an earlier run wrote are kept, and named with their date). A script that fails is reported in results.md as failed, with the last lines
of its stderr, and the runner goes on with the next one.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# In this order; the ones not written yet are skipped. Any other bench/*.py that writes a section
# (harness.write_section) and takes --quick follows the convention too and runs after these.
KNOWN = [
    "sandbox_vs_multiprocessing.py",
    "api_client_overhead.py",
    "sft_vs_trl.py",
    "grpo_vs_trl.py",
    "utilisation.py",
    "matmul_layouts.py",
]
NOT_BENCHMARKS = {"harness.py", "run_all.py", "profiling.py", "humaneval_style.py"}
STDERR_LINES = 20


def scripts() -> list[Path]:
    found = [BENCH / name for name in KNOWN if (BENCH / name).exists()]
    for path in sorted(BENCH.glob("*.py")):
        if path.name in NOT_BENCHMARKS or path.name in KNOWN:
            continue
        text = path.read_text(errors="replace")
        if "write_section(" in text and "--quick" in text:
            found.append(path)
    return found


def written_at(path: Path) -> datetime.datetime:
    """When a results file was written: its last commit's time where it is as committed (a fresh checkout's
    files all carry the checkout's time), else its modification time."""
    unchanged = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", str(path)], cwd=BENCH).returncode == 0
    committed = subprocess.run(
        ["git", "log", "-1", "--format=%ct", "--", str(path)], cwd=BENCH, capture_output=True, text=True
    ).stdout.strip()
    seconds = int(committed) if unchanged and committed else path.stat().st_mtime
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", nargs="+", metavar="SCRIPT", help="run only these scripts (file names in bench/)")
    parser.add_argument(
        "--join-only", action="store_true", help="run nothing: join the sections already in bench/results/"
    )
    args = parser.parse_args()
    todo = scripts()
    if args.only:
        unknown = [name for name in args.only if name not in {p.name for p in todo} | {p.stem for p in todo}]
        if unknown:
            parser.error(f"--only: {', '.join(unknown)}: not a benchmark here ({', '.join(p.name for p in todo)})")
        todo = [p for p in todo if p.name in args.only or p.stem in args.only]
    if args.join_only:
        todo = []
    harness.RESULTS.mkdir(exist_ok=True)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    outcomes: list[tuple[str, str]] = []  # (script, markdown when it failed, else "")
    for path in todo:
        command = [sys.executable, str(path.relative_to(ROOT))] + (["--quick"] if args.quick else [])
        print(f"== {' '.join(command)}", flush=True)
        began = time.perf_counter()
        # stdout goes straight through (progress); stderr is kept to report a failure, and echoed.
        result = subprocess.run(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - began
        if result.stderr:
            sys.stderr.write(result.stderr)
        if result.returncode == 0:
            print(f"== {path.name}: done in {seconds:.0f} s", flush=True)
            outcomes.append((path.name, ""))
            continue
        tail = "\n".join(result.stderr.rstrip().splitlines()[-STDERR_LINES:]) or "(no stderr)"
        print(f"== {path.name}: FAILED (exit {result.returncode}) after {seconds:.0f} s", flush=True)
        outcomes.append(
            (
                path.name,
                f"## {path.stem}: failed\n\n`{' '.join(command)}` exited with {result.returncode} after {seconds:.0f} s. "
                f"Last stderr lines:\n\n```\n{tail}\n```\n",
            )
        )

    failed = [md for _, md in outcomes if md]
    paths = sorted(harness.RESULTS.glob("*.md"))
    stale = [  # sections this run did not write: kept, with their date, so the reader can tell
        f"{p.name} ({written_at(p):%Y-%m-%d %H:%M} UTC)" for p in paths if args.join_only or written_at(p) < started_at
    ]
    sections = [p.read_text().rstrip() + "\n" for p in paths]
    command = (
        ".venv/bin/python bench/run_all.py"
        + (" --quick" if args.quick else "")
        + (f" --only {' '.join(args.only)}" if args.only else "")
        + (" --join-only" if args.join_only else "")
    )
    header = (
        "# Benchmarks side by side with the peers\n\n"
        f"{harness.environment()}\n\n"
        f"Date: {started_at:%Y-%m-%d %H:%M} UTC. Command: `{command}`. Ran: {', '.join(n for n, _ in outcomes) or 'nothing'}"
        f"{'; failed: ' + ', '.join(n for n, md in outcomes if md) if failed else ''}. Each section names its own command."
        f"{' Written by an earlier run: ' + ', '.join(stale) + '.' if stale else ''}\n"
    )
    out = BENCH / "results.md"
    out.write_text("\n".join([header, *failed, *sections]))
    print(f"wrote {out} ({len(sections)} sections, {len(failed)} failed)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    harness.report_errors(main)
