"""The run directory: every stage reads and writes files here (layout in ARCHITECTURE.md).

`manifest.json` records, per stage, a fingerprint of its config and inputs, its outputs and timings.
A stage whose fingerprint matches a finished entry and whose outputs exist is skipped: a rerun of a
finished stage does no work. `RunDir.stage` is that sequence, written once for every stage (`Stage`).

A stage that starts work first writes a start record (`running`: its start time, pid and host) that its
finished or failed record replaces (or, for a training run stopped part-way beside a finished run's record,
its entry in that record's `stopped_runs`): one killed (SIGKILL, the OOM killer, a power loss: no
exception, so no failed record) leaves it behind, and the report says so. Each record takes the next `sequence` number
of the manifest, so the order of stages is known without comparing clocks (a run copied to a machine
whose clock differs); a finished stage records the digests of the model directories it wrote
(`output_files`), which the eval's results compare with the files each row scored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

from ..config import Recipe, recipe_toml
from ..errors import PEER_FAILED, WarmstartError, first_line, peer_failed
from .costs import failed_seconds, unfinished_seconds, write_costs
from .jsonl import read_json, write_json_atomic, write_text_atomic
from .lock import RunLock
from .tracking import Tracker

log = logging.getLogger(__name__)
RUN_LABEL = "<run>"  # the run directory, in the label of an input inside it (`input_label`)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def input_digests(inputs: list[Path], root: Path | None = None) -> list[tuple[str, str | None]]:
    """(label, digest) of each input, in order (a path twice stays twice); None for a directory. The label
    of a file in the run directory `root` is its place in it (`input_label`)."""
    return [(input_label(path, root), file_digest(path) if Path(path).is_file() else None) for path in inputs]


def input_label(path: Path, root: Path | None) -> str:
    """How an input is named in a fingerprint: a file in the run directory `root` by its place in it
    ("<run>/curated/train.jsonl"), so a run moved or copied elsewhere (to a bigger machine) finds its
    finished stages and its checkpoints its own; any other file by its path, as given."""
    if root is not None:
        inside = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
        if inside != os.pardir and not inside.startswith(os.pardir + os.sep):
            return f"{RUN_LABEL}/{Path(inside).as_posix()}"
    return str(path)


def relabelled(config, root: Path):
    """`config` with the run directory's path, where a value names a file in it (eval's policy "student"
    resolved to hf:RUN/models/student), written as in `input_label`: moved, the run keeps its fingerprints."""
    places = sorted({f"{os.path.abspath(root)}{os.sep}", f"{root}{os.sep}"}, key=len, reverse=True)
    if isinstance(config, str):
        for place in places:  # the absolute one first: the path as given may be the end of it
            config = config.replace(place, f"{RUN_LABEL}/")
        return config
    if isinstance(config, dict):
        return {key: relabelled(value, root) for key, value in config.items()}
    if isinstance(config, (list, tuple)):
        return [relabelled(value, root) for value in config]
    return config


def fingerprint_of(config: dict, digests: list[tuple[str, str | None]]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for path, digest in digests:
        h.update(path.encode())
        h.update(digest.encode() if digest is not None else b"<dir>")
    return h.hexdigest()[:16]


def directory_digests(path: Path) -> dict[str, str]:
    """The digest of each file of a model directory (or of a .gguf file), by file name: which model it is."""
    return {p.name: file_digest(p) for p in model_files(path)}


def next_sequence(manifest: dict) -> int:
    """The number of the manifest's next record: one more than any record's, start records and stopped runs
    included. One process at a time writes the manifest (runs/lock.py), so it orders the stages as they ran,
    whatever the clocks of the machines they ran on said."""
    entries = [e for e in manifest["stages"].values() if isinstance(e, dict)]
    stopped = [run for e in entries if isinstance(e.get("stopped_runs"), list) for run in e["stopped_runs"]]
    records = [*entries, *stopped, *(manifest.get("running") or {}).values()]
    numbers = [r.get(key) for r in records if isinstance(r, dict) for key in ("sequence", "started_sequence")]
    return 1 + max((n for n in numbers if isinstance(n, int)), default=0)


def failed_last(manifest: dict, stage: str) -> str | None:
    """The error of `stage`'s last run where that run failed (its record says so), else None."""
    entry = manifest["stages"].get(stage)
    if isinstance(entry, dict) and entry.get("status") == "failed":
        return str(entry.get("error") or "no error recorded")
    return None


def read_manifest(path: Path) -> dict:
    """A run's manifest.json (no file: no stage yet); one error naming it where it is not one."""
    manifest = read_json(path)
    if manifest is None:
        return {"stages": {}}
    if not isinstance(manifest.get("stages"), dict):
        raise WarmstartError(f"{path}: holds no stages (not a manifest warmstart wrote)")
    return manifest


def model_files(path: Path) -> list[Path]:
    """The files whose content decides a model's answers, for a fingerprint: every file of a model directory
    (weights whole or in shards, .bin or .safetensors, the tokenizer, its chat template, the config), or the
    file itself (a .gguf); none where nothing is there yet."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path] if path.is_file() else []


class RunDir:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.root = Path(recipe.run.dir)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WarmstartError(f"run.dir: {self.root} cannot be the run directory ({exc.strerror})") from None

    def trajectories(self, name: str) -> Path:
        return self.root / "trajectories" / f"{name}.jsonl"

    def curated(self, name: str) -> Path:
        return self.root / "curated" / f"{name}.jsonl"

    def dropped(self, name: str) -> Path:
        return self.root / "curated" / f"{name}.dropped.json"

    def model(self, name: str) -> Path:
        return self.root / "models" / name

    def checkpoints(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    @property
    def eval_results(self) -> Path:
        return self.root / "eval" / "results.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict:
        return read_manifest(self.manifest_path)

    def write_recipe(self) -> None:
        write_text_atomic(self.root / "recipe.toml", recipe_toml(self.recipe))

    def tracker(self, stage: str) -> Tracker:
        """Where stage `stage` logs its training scalars (`[log]`: metrics.jsonl and the backends asked for)."""
        log_cfg = self.recipe.log
        return Tracker(self.root, stage, log_cfg.to, log_cfg.project, self.recipe.model_dump(mode="json"))

    def stage(self, name: str, config: dict, inputs: list[Path], outputs: list[Path], finished=None) -> Stage:
        """The bookkeeping of stage `name`, whose work depends on `config` and the files `inputs` and
        writes `outputs`: see `Stage`. `finished(entry)`, where given, may still find a recorded run
        unfinished (generate: some rollouts ended in an error, which a rerun asks for again)."""
        return Stage(self, name, config, inputs, outputs, finished)

    def is_done(self, stage: str, fingerprints: set[str], outputs: list[Path]) -> bool:
        """Whether `stage` has a finished record of one of `fingerprints` (`Stage.accepted`) and its outputs."""
        entry = self.manifest()["stages"].get(stage)
        return (
            bool(entry)
            and entry.get("status", "done") == "done"
            and entry["fingerprint"] in fingerprints
            and all(Path(p).exists() for p in outputs)
        )

    def mark_done(
        self, stage: str, fingerprint: str, outputs: list[Path], started: float, extra: dict | None = None
    ) -> None:
        """Record a finished stage (or, with `extra["status"] = "failed"`, one that ended in an error after it
        had spent something worth recording), then rebuild costs.json."""
        manifest = self.manifest()
        # The wall seconds of failed runs this entry replaces, and of unfinished ones (a pilot): spent, so kept
        # in the totals (costs.py).
        failed_before = failed_seconds(manifest["stages"].get(stage))
        unfinished_before = unfinished_seconds(manifest["stages"].get(stage))
        sequence = next_sequence(manifest)
        start = pop_running(manifest, stage)  # this record replaces the stage's start record
        done = (extra or {}).get("status", "done") == "done"
        manifest["stages"][stage] = {
            "fingerprint": fingerprint,
            "outputs": [str(Path(p).relative_to(self.root)) for p in outputs],
            "seconds": round(time.time() - started, 3),
            "finished": time.time(),
            "sequence": sequence,
            **({"started_sequence": start["sequence"]} if start and "sequence" in start else {}),
            **({"output_files": self.output_files(outputs)} if done else {}),
            "versions": {name: version(name) for name in ("warmstart", "torch", "transformers")},
            **({"seconds_failed_before": failed_before} if failed_before else {}),
            **({"seconds_before": unfinished_before} if unfinished_before else {}),
            **(extra or {}),
        }
        write_json_atomic(self.manifest_path, manifest)
        write_costs(self.root, manifest)  # costs.json follows the manifest: money and seconds per stage

    def is_finished(self, stage: str) -> bool:
        """Whether `stage` has the record of a finished run (of whatever fingerprint)."""
        entry = self.manifest()["stages"].get(stage)
        return bool(entry) and entry.get("status", "done") == "done"

    def add_stopped_run(self, stage: str, started: float, error: str, this_run: dict | None = None) -> None:
        """Record a run of `stage` that stopped part-way before it wrote its outputs (Ctrl-C, a divergence)
        beside the finished run's record, which still describes those outputs and is kept: its wall seconds
        (spent: costs.json counts them), error and own training seconds and FLOPs (`this_run`) in the entry's
        `stopped_runs`; it replaces the start record."""
        manifest = self.manifest()
        sequence = next_sequence(manifest)
        start = pop_running(manifest, stage)
        now = time.time()
        manifest["stages"][stage].setdefault("stopped_runs", []).append(
            {
                "started": started,
                "finished": now,
                "seconds": round(now - started, 3),
                "error": error,
                **({"this_run": this_run} if this_run else {}),
                "sequence": sequence,
                **({"started_sequence": start["sequence"]} if start and "sequence" in start else {}),
            }
        )
        write_json_atomic(self.manifest_path, manifest)
        write_costs(self.root, manifest)

    def output_files(self, outputs: list[Path]) -> dict[str, dict[str, str]]:
        """The file digests of each output that is a directory (a model): which model this record is of."""
        return {str(Path(p).relative_to(self.root)): directory_digests(Path(p)) for p in outputs if Path(p).is_dir()}

    def mark_running(self, stage: str) -> int:
        """Write the start record of `stage`, which its finished or failed record replaces; its sequence number."""
        manifest = self.manifest()
        sequence = next_sequence(manifest)
        manifest.setdefault("running", {})[stage] = {
            "started": time.time(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "sequence": sequence,
        }
        write_json_atomic(self.manifest_path, manifest)
        return sequence

    def clear_running(self, stage: str, manifest_before: bytes | None) -> None:
        """Remove the start record of `stage`, which stopped with an error and records nothing: the manifest is
        as the stage found it (and absent where it was: `recipe_when_worked` tells a refused command by that)."""
        manifest = self.manifest()
        if pop_running(manifest, stage) is None:
            return
        if manifest_before is None and manifest == {"stages": {}}:
            self.manifest_path.unlink()
        else:
            write_json_atomic(self.manifest_path, manifest)


def pop_running(manifest: dict, stage: str) -> dict | None:
    """Take the start record of `stage` out of `manifest` (the section gone with its last record)."""
    running = manifest.get("running") or {}
    start = running.pop(stage, None)
    if not running:
        manifest.pop("running", None)
    return start if isinstance(start, dict) else None


def sample_paths(root: Path, names: list[str]) -> dict[str, Path]:
    """eval/<name>.jsonl per eval row: every sample with its verdict. The name made a file name, kept
    distinct where two names would slug alike."""
    paths: dict[str, Path] = {}
    for name in names:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:100] or "policy"  # a file name's length
        while any(p.stem == slug for p in paths.values()):
            slug += "-"
        paths[name] = Path(root) / "eval" / f"{slug}.jsonl"
    return paths


class Stage:
    """One stage's run-dir bookkeeping, the same for every stage:

        with run_dir.stage("curate:train", config, inputs=[source], outputs=[out]) as stage:
            if stage.done:  # a finished entry with this fingerprint, outputs present: nothing to do
                return out
            ...             # the work
            stage.summary = {"kept": ...}  # recorded in the manifest beside fingerprint, outputs, seconds

    Leaving the block normally marks a stage that was not done as done (manifest.json, then costs.json).
    An exception marks nothing done, so the next run does the work again (resuming where the stage can);
    a stage that set a summary before it failed (what it spent, say) has it recorded with status
    "failed", so costs.json counts it. While in the block the stage holds the run directory's lock
    (`lock.RunLock`): a second process running a stage there is refused.
    """

    def __init__(
        self, run_dir: RunDir, name: str, config: dict, inputs: list[Path], outputs: list[Path], finished=None
    ):
        self.started = time.time()  # the stage's seconds include hashing its inputs
        self.run_dir, self.name, self.outputs, self.finished = run_dir, name, outputs, finished
        # Kept by label: eval records the digests of the model files each row scored (no second read of them).
        digests = input_digests(inputs, run_dir.root)
        self.input_digests = dict(digests)
        self.fingerprint = fingerprint_of(relabelled(config, run_dir.root), digests)
        # What a record or checkpoint written here may carry: this fingerprint, or the one a warmstart that named
        # every file by its path gave the same work (a run begun before, in the same place, goes on).
        self.accepted = {self.fingerprint, fingerprint_of(config, [(str(p), d) for p, (_, d) in zip(inputs, digests)])}
        self.lock = RunLock(run_dir.root)
        self.done = False
        self.summary: dict = {}
        # What a training run stopped part-way (an exception before it wrote its outputs) spent: `_record_failed`.
        self.stopped: dict = {}

    def __enter__(self) -> Stage:
        self.lock.acquire(self.name)
        self.done = self.run_dir.is_done(self.name, self.accepted, self.outputs)
        if self.done and self.finished is not None:
            self.done = self.finished(self.run_dir.manifest()["stages"][self.name])
        if self.done:
            log.info("%s: already done, nothing to do", self.name)
        else:
            self.manifest_before = manifest_bytes(self.run_dir)
            self.run_dir.mark_running(self.name)
        return self

    def record_unfinished(self, status: str) -> None:
        """Record the stage's summary with `status` (not "done": a later run does the work) and leave the block
        without marking it done: `warmstart estimate`'s paid pilot, which costs.json must count."""
        self.run_dir.mark_done(
            self.name, self.fingerprint, self.outputs, self.started, {**self.summary, "status": status}
        )
        self.done = True  # nothing more to record on the way out

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None and not self.done:
                self.run_dir.mark_done(self.name, self.fingerprint, self.outputs, self.started, self.summary)
            elif exc_type is not None and (self.summary or self.stopped):
                self._record_failed(exc_type, exc)
            elif exc_type is not None and not self.done:
                self._clear_running()
        finally:
            self.lock.release()

    def _clear_running(self) -> None:
        """A stage stopped by an exception that records nothing (a refusal, a Ctrl-C before any training step)
        was not killed: its start record goes, where the disk lets us (the error that stopped it is the one to
        say)."""
        try:
            self.run_dir.clear_running(self.name, self.manifest_before)
        except (WarmstartError, OSError) as also:
            log.warning("%s: could not remove the stage's start record: %s", self.name, also)

    def _record_failed(self, exc_type, exc) -> None:
        """Record the failed stage's summary, where the disk lets us: the error that stopped the stage (a full
        disk's, naming the file it could not write) is the one the user must see, not a second one met while
        recording it."""
        failed = {**(self.summary or self.stopped), "status": "failed", "error": error_line(exc_type, exc)}
        try:
            if not self.summary and self.run_dir.is_finished(self.name):
                # Stopped before it wrote its outputs: the finished run's record still describes them.
                self.run_dir.add_stopped_run(self.name, self.started, failed["error"], failed.get("this_run"))
            else:
                self.run_dir.mark_done(self.name, self.fingerprint, self.outputs, self.started, failed)
        except (WarmstartError, OSError) as also:
            log.warning("%s: could not record the failed stage: %s", self.name, also)


def error_line(exc_type, exc) -> str:
    """What stopped a stage, on one line: its error's first line, or what it was."""
    if issubclass(exc_type, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt: Ctrl-C, or a SIGTERM generate takes as one)"
    if peer_failed(exc):  # gloo's "Connection closed by peer ... GLHF!" had been the record of what failed
        return f"{PEER_FAILED} ({first_line(exc, 120)})"
    return str(exc).splitlines()[0] if str(exc) else exc_type.__name__


@contextmanager
def recipe_when_worked(recipe: Recipe) -> Iterator[None]:
    """The command's resolved recipe as the run's recipe.toml once a stage has done work (the manifest
    changed), a failed one included, never for a command refused before any stage began (another config,
    a bad task file): the run's recipe keeps saying what its data was made with."""
    run_dir = RunDir(recipe)
    before = recorded_work(run_dir)
    try:
        yield
    except BaseException:
        # The command's own error is the one to say: a recipe that cannot be written too (a full disk) is a warning.
        try:
            write_recipe_if_worked(run_dir, before)
        except (WarmstartError, OSError) as also:
            log.warning("%s: %s", run_dir.root / "recipe.toml", also)
        raise
    write_recipe_if_worked(run_dir, before)


def write_recipe_if_worked(run_dir: RunDir, work_before: str | None) -> None:
    if os.environ.get("RANK", "0") == "0" and recorded_work(run_dir) != work_before:  # torchrun: the main one
        run_dir.write_recipe()


def recorded_work(run_dir: RunDir) -> str | None:
    """The manifest but for the runs stopped part-way beside a finished record and the start records: a
    stopped run wrote nothing the finished record does not describe (and takes a killed run's start record
    away), so the recipe that made the stage's outputs stays the run's recipe."""
    raw = manifest_bytes(run_dir)
    if raw is None:
        return None
    try:
        manifest = json.loads(raw)
    except ValueError:  # not one warmstart wrote: the stage that reads it says so; compared as it is
        return raw.decode("latin-1")
    if isinstance(manifest, dict):
        manifest.pop("running", None)
    stages = manifest.get("stages") if isinstance(manifest, dict) else None
    for entry in (stages or {}).values():
        if isinstance(entry, dict):
            entry.pop("stopped_runs", None)
    return json.dumps(manifest, sort_keys=True)


def manifest_bytes(run_dir: RunDir) -> bytes | None:
    return run_dir.manifest_path.read_bytes() if run_dir.manifest_path.exists() else None
