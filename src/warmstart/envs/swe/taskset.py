"""A mined task set on disk, and reading it back.

One directory per repository (what `warmstart tasks mine-bugs PATH --out DIR` writes):

    DIR/manifest.json   the repository's name, where it came from, the interpreter it was mined with,
                        the numbers of the mining (tests, mutations tried and accepted, seconds), the
                        tests' collection order (`ids`) and `test_paths` (the collected test files and
                        folders of tests, `dir/`: what the grader never takes from the agent)
    DIR/snapshot.json   the original repository, once: {relative path: text}
    DIR/tasks.jsonl     one task a line: id, repo, file, broken (the mutated file's whole text),
                        mutation, problem (issue-style), fail_to_pass, pass_to_pass (node ids)

The reference fix of a task is the snapshot's own `file`. `load_task_sets(DIR)` reads one such
directory, or every such directory directly inside DIR (a bundle of several repositories); two sets of
one name, or one task id in two sets, are refused (the env keys snapshots by name: one set would be
graded against the other's snapshot, and one mutation could land in both splits under two ids). A
directory is written under a temporary name and renamed into place, so it is whole or absent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import WarmstartError

FORMAT = 1


@dataclass
class TaskSet:
    manifest: dict
    snapshot: dict[str, str]
    tasks: list[dict]
    directory: Path | None = None  # where it was read from (errors name it)


def write_task_set(out: Path, manifest: dict, snapshot: dict[str, str], tasks: list[dict], force: bool) -> None:
    occupied = any(out.iterdir()) if out.is_dir() else out.exists()
    if occupied and not force:
        raise WarmstartError(f"{out}: already exists and is not empty (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (staging / "manifest.json").write_text(json.dumps({"format": FORMAT, **manifest}, indent=2) + "\n")
        (staging / "snapshot.json").write_text(json.dumps(snapshot))
        (staging / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
        os.chmod(staging, 0o755)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_dir(new: Path, out: Path) -> None:
    """`new` renamed to `out`; an old `out` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def read_task_set(directory: Path) -> TaskSet:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        snapshot = json.loads((directory / "snapshot.json").read_text())
        lines = (directory / "tasks.jsonl").read_text(encoding="utf-8").split("\n")  # JSON Lines: "\n" only
        tasks = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise WarmstartError(f"{directory}: not a mined task set ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise WarmstartError(f"{directory}: task set format {manifest.get('format')!r}, expected {FORMAT}")
    return TaskSet(manifest, snapshot, tasks, directory)


def load_task_sets(path: Path) -> list[TaskSet]:
    if not path.is_dir():
        raise WarmstartError(f"env.options.tasks_dir: {path} is not a directory")
    if (path / "manifest.json").is_file():
        return [read_task_set(path)]
    directories = [d for d in sorted(path.iterdir()) if (d / "manifest.json").is_file()]
    sets = [read_task_set(d) for d in directories]
    if not sets:
        raise WarmstartError(f"env.options.tasks_dir: {path} holds no mined task set (no manifest.json)")
    check_unique(list(zip(directories, sets)))
    return sets


def check_unique(sets: list[tuple[Path, TaskSet]]) -> None:
    """One error naming both directories when two sets share a name or a task id."""
    names: dict[str, Path] = {}
    ids: dict[str, Path] = {}
    for directory, task_set in sets:
        name = task_set.manifest.get("name")
        if name in names:
            raise WarmstartError(
                f"env.options.tasks_dir: {names[name]} and {directory} are both task sets named {name!r}; "
                "mine one again with another --name"
            )
        names[name] = directory
        for task in task_set.tasks:
            if task["id"] in ids:
                raise WarmstartError(
                    f"env.options.tasks_dir: {ids[task['id']]} and {directory} both hold task {task['id']!r}"
                )
            ids[task["id"]] = directory
