"""`warmstart export RUN`: the steps from a run directory to a written dataset.

Every check that can fail on the user's input (the format and its libraries, the run directory, the
curated file, the output directory) runs before anything is read in full or written.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Iterator

from ..config import check_run_name
from ..errors import WarmstartError
from ..runs.directory import failed_last, file_digest, read_manifest
from ..runs.jsonl import iter_records, read_json
from ..types import Trajectory
from .card import CardFacts, RowTally, dataset_card
from .checks import check_costs, check_dropped
from .output import check_output, staged
from .rows import trajectory_row
from .writers import format_named

log = logging.getLogger(__name__)


def export_run(
    root: Path,
    fmt: str,
    data: str = "train",
    out: Path | None = None,
    force: bool = False,
    think_in_content: bool = False,
) -> Path:
    """Write `root`'s `curated/<data>.jsonl` as a dataset in format `fmt` (jsonl, parquet, hf) with its card,
    into `out` (default `root/export/<fmt>`); return the output directory. `think_in_content`: the
    reasoning as `<think>...</think>` in the content, not in `reasoning_content` (`rows.py`)."""
    root = Path(root)
    form = format_named(fmt)
    form.check_libraries()
    source = curated_file(root, data)
    # Resolved: `--out .` has no name to stage beside, and a symlink's target is the export a user means
    # (replacing the link itself had left the target's older export in place, unsaid).
    out = (Path(out) if out is not None else root / "export" / form.name).resolve()
    check_output(out, [root, source], force)
    trajectories = iter_records(source, Trajectory)
    first = next(trajectories, None)  # the file is read as it is written out, a line at a time
    if first is None:
        raise WarmstartError(f"{source}: has no trajectories to export")
    dropped_path, costs_path = source.with_name(f"{data}.dropped.json"), root / "costs.json"
    dropped, costs = read_json(dropped_path), read_json(costs_path)
    check_dropped(dropped_path, dropped)  # what the card reads of them: checked before anything is written
    check_costs(costs_path, costs, dropped)
    tally = RowTally(think_in_content)
    with staged(out) as stage:  # a bad record further on removes what was staged: `out` is left as it was
        form.write(tallied(itertools.chain([first], trajectories), tally, think_in_content), stage)
        facts = CardFacts(
            title=f"warmstart {root.resolve().name}: {data}",  # resolved: `export .` names its directory
            source=f"curated/{source.name}",
            fmt=form,
            tally=tally,
            dropped=dropped,
            costs=costs,
            think_in_content=think_in_content,
            data_digest=file_digest(stage / form.data_file) if form.data_file else None,
        )
        (stage / "README.md").write_text(dataset_card(facts), encoding="utf-8")
    log.info("export: %d rows of %s as %s in %s", tally.rows, source, form.name, out)
    return out


def tallied(trajectories: Iterator[Trajectory], tally: RowTally, think_in_content: bool) -> Iterator[dict]:
    """Each trajectory as its exported row, counted into `tally` on the way to the writer."""
    for trajectory in trajectories:
        row = trajectory_row(trajectory, think_in_content)
        tally.add(row)
        yield row


def curated_file(root: Path, data: str) -> Path:
    """`root/curated/<data>.jsonl`, after checking that `root` is a run directory and the file exists."""
    if not (root / "manifest.json").is_file():
        raise WarmstartError(f"{root}: not a run directory (no manifest.json)")
    try:
        check_run_name(data)  # curate's output name: a plain name, as curate.output is
    except ValueError as exc:
        raise WarmstartError(f"--data: {exc}") from None
    source = root / "curated" / f"{data}.jsonl"
    if not source.is_file():
        names = sorted(p.stem for p in (root / "curated").glob("*.jsonl")) if (root / "curated").is_dir() else []
        here = f"curated data here: {', '.join(names)} (--data NAME)" if names else "no curated data here (run curate)"
        raise WarmstartError(f"--data {data}: {source} not found; {here}")
    check_last_curate(root, data, source)
    return source


def check_last_curate(root: Path, data: str, source: Path) -> None:
    """Refuse curated data whose last curate run failed, as `sft` does: the file is an earlier run's, kept
    when a later run kept nothing, made under another config (data the current recipe may call
    contaminated), and its dropped.json may be either run's."""
    if error := failed_last(read_manifest(root / "manifest.json"), f"curate:{data}"):
        raise WarmstartError(
            f"--data {data}: {source} is an earlier curate run's: the last one failed ({error}); "
            "rerun curate, or export other data"
        )
