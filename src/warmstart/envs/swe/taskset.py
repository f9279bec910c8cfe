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
    """The set in `directory`, its shape checked: a hand-written or damaged set is one error naming the
    file and the line (a task's missing field had raised a KeyError out of the environment; a task whose
    broken file is the original scored 1 with no change at all)."""
    texts = {}
    for name in ("manifest.json", "snapshot.json", "tasks.jsonl"):
        try:
            texts[name] = (directory / name).read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:
            raise WarmstartError(f"{directory}: not a mined task set ({exc})") from None
    manifest = parsed(directory / "manifest.json", texts["manifest.json"])
    snapshot = parsed(directory / "snapshot.json", texts["snapshot.json"])
    if not isinstance(manifest, dict):
        raise WarmstartError(f"{directory / 'manifest.json'}: not a JSON object")
    if manifest.get("format") != FORMAT:
        raise WarmstartError(f"{directory}: task set format {manifest.get('format')!r}, expected {FORMAT}")
    problem = manifest_problem(manifest)
    if problem:
        raise WarmstartError(f"{directory / 'manifest.json'}: {problem}")
    if not isinstance(snapshot, dict) or not all(isinstance(v, str) for v in snapshot.values()):
        raise WarmstartError(f"{directory / 'snapshot.json'}: not an object of {{path: text}}")
    tasks = []
    lines = texts["tasks.jsonl"].split("\n")  # JSON Lines: "\n" only
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{directory / 'tasks.jsonl'} line {number}"
        task = parsed(Path(where), line)
        problem = task_problem(task, manifest["name"], snapshot)
        if problem:
            raise WarmstartError(f"{where}: {problem}")
        tasks.append(task)
    return TaskSet(manifest, snapshot, tasks, directory)


def parsed(where: Path, text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WarmstartError(f"{where}: not JSON ({str(exc)[:200]})") from None


def strings(value, empty_ok: bool = True) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value) and (empty_ok or bool(value))


def manifest_problem(manifest: dict) -> str | None:
    """What is wrong with a manifest's fields the environment reads, or None."""
    if not isinstance(manifest.get("name"), str) or not manifest["name"]:
        return "`name` must be a non-empty string"
    if manifest.get("python") is not None and not isinstance(manifest["python"], str):
        return "`python` must be a string (the interpreter's path)"
    for key in ("ids", "test_paths"):
        if manifest.get(key) is not None and not strings(manifest[key]):
            return f"`{key}` must be a list of strings"
    return None


def task_problem(task, name: str, snapshot: dict[str, str]) -> str | None:
    """What is wrong with one task of the set `name`, or None."""
    if not isinstance(task, dict):
        return "a task must be a JSON object"
    for key in ("id", "repo", "file", "broken", "problem"):
        if not isinstance(task.get(key), str) or (key != "broken" and not task[key]):
            return f"`{key}` must be a non-empty string" if key in task else f"no `{key}`"
    if task.get("mutation") is not None and not isinstance(task["mutation"], str):
        return "`mutation` must be a string"
    if not strings(task.get("fail_to_pass"), empty_ok=False):
        return "`fail_to_pass` must be a non-empty list of test ids"
    if not strings(task.get("pass_to_pass")):
        return "`pass_to_pass` must be a list of test ids"
    if task["repo"] != name:
        return f"task {task['id']!r}: `repo` is {task['repo']!r}, but the set is named {name!r}"
    if task["file"] not in snapshot:
        return f"task {task['id']!r}: `file` {task['file']!r} is not in snapshot.json"
    if task["broken"] == snapshot[task["file"]]:
        return f"task {task['id']!r}: `broken` is the original file (nothing to fix: the empty patch would pass)"
    return None


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
