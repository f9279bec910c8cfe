"""Training scalars where users watch them: `metrics.jsonl` in the run directory always, and TensorBoard,
trackio or Weights & Biases where `[log] to` asks for them.

One set of names everywhere (`SCALARS`): a stage logs `{"loss": ..., "tokens_per_s": ...}` at a step and
every backend gets the same names. Each stage is a run of its own in the backends (TensorBoard: a
directory `tensorboard/<stage>` under the run directory, so `tensorboard --logdir runs/NAME/tensorboard`
shows the stages side by side; trackio and W&B: a run named after the stage, in project `log.project`).
The backends are optional extras, imported only when asked; one that is asked for and not installed is
one error naming the extra. W&B runs offline unless `WANDB_API_KEY` is set (or `WANDB_MODE` says).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import time
from pathlib import Path

from ..errors import WarmstartError
from .jsonl import end_cleanly

log = logging.getLogger(__name__)

SCALARS = {
    "loss": "training loss of the step (SFT: per target token; GRPO: the clipped objective)",
    "lr": "learning rate of the step",
    "tokens_per_s": "tokens trained per second over the step",
    "kl": "KL to the teacher's distribution per scored token (logit distillation)",
    "reward": "mean verifier reward of the step's samples (GRPO)",
    "flat_groups": "share of GRPO groups whose rewards were all equal (no learning signal)",
    "reverse_kl": "student-teacher reverse KL per token (on-policy distillation)",
    "rollouts": "sequences the GRPO step sampled for training (refills included)",
    "filter_rollouts": "sequences the learnable-task filter sampled at this step (0 between refreshes)",
    "filter_learnable": "share of the filter's candidate tasks with 0 < pass rate < 1 (steps that refresh it)",
    "filter_pass_rate": "the filter's mean estimated pass rate over its candidates (steps that refresh it)",
    "pass@1": "held-out pass@1 (eval, one value per policy: `pass@1/<policy>`)",
    "mismatch_abs_logp": "mean |trainer - sampler log-prob| per policy token (GRPO: train/mismatch.py)",
    "is_ratio_p05": "5th percentile of the policy tokens' trainer/sampler probability ratios",
    "is_ratio_p50": "their median",
    "is_ratio_p95": "their 95th percentile",
    "is_ratio_max": "the largest of them (over every token, not a sample)",
    "tis_capped_fraction": "share of policy tokens whose ratio the truncated importance sampling cap cut",
    "policy_version": "the rollout server's policy version the step's samples came from",
}
EXTRAS = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}


class Tracker:
    """The scalars of one stage. Use as a context manager; `log(step, {name: value})` per step."""

    def __init__(self, root: Path, stage: str, to: list[str], project: str, config: dict):
        self.root, self.stage = Path(root), stage
        self.path = self.root / "metrics.jsonl"
        end_cleanly(self.path)  # a line a kill cut short would become a bad middle line
        self.backends: dict[str, object] = {}
        try:
            for name in (name for name in to if name != "jsonl"):
                self.backends[name] = open_backend(name, self.root, stage, project, config)
        except BaseException:
            self.close()  # those that did start
            raise

    def log(self, step: int, scalars: dict[str, float | None]) -> None:
        values = {name: float(v) for name, v in scalars.items() if v is not None}
        # NaN and infinity as null: JSON has neither (json.dumps would write `NaN`, which jq and browsers refuse)
        written = {name: v if math.isfinite(v) else None for name, v in values.items()}
        line = json.dumps({"stage": self.stage, "step": step, "time": round(time.time(), 3), **written})
        with self.path.open("a", encoding="utf-8") as f:  # a few lines a second at most: open per line
            f.write(line + "\n")
        for name, backend in list(self.backends.items()):
            self.guarded(name, lambda: backend.log(step, values), f"step {step}")

    def close(self) -> None:
        for name, backend in list(self.backends.items()):
            self.guarded(name, backend.close, "closing")

    def guarded(self, name: str, call, when: str) -> None:
        """A backend that fails once it has started (its service gone, a full disk) is said once and left
        out from then on: metrics.jsonl, always written, keeps every scalar, and a long training run is not
        stopped for a dashboard."""
        try:
            call()
        except Exception as error:
            self.backends.pop(name, None)
            log.warning(
                "%s: log.to %s failed (%s: %s) and is left out from here on; metrics.jsonl has every scalar",
                self.stage,
                name,
                when,
                first_line(error),
            )

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(root: Path) -> list[dict]:
    """Every line of a run's metrics.jsonl. A torn last line (a kill mid-write) is left out; a bad line
    before it is corruption, one error naming the file and the line."""
    path = Path(root) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            if problem := metrics_problem(row):
                raise WarmstartError(f"{path}:{number}: {problem}")
            rows.append(row)
        elif number < len(lines):  # not the last piece: complete lines end with a newline
            raise WarmstartError(f"{path}:{number}: not a metrics record (a JSON object)")
    return rows


def metrics_problem(row: dict) -> str | None:
    """What makes a metrics record other than `Tracker.log` writes them (a hand-edited file), or None: a step's
    record names its stage in text and its step as an integer, and every other value is a number or null."""
    if "step" in row and not isinstance(row.get("stage"), str):
        return f"a step's record without its stage's name (stage: {row.get('stage')!r})"
    if "step" in row and (isinstance(row["step"], bool) or not isinstance(row["step"], int)):
        return f"a step that is not an integer (step: {row['step']!r})"
    for name, value in row.items():
        if (
            name not in ("stage", "step")
            and value is not None
            and (isinstance(value, bool) or not isinstance(value, (int, float)))
        ):
            return f"{name!r} is not a number ({value!r})"
    return None


def stage_dir_name(stage: str) -> str:
    """The stage's TensorBoard directory: `sft:student` is `sft-student`. A name with other characters has
    them replaced and its digest added: cleaned alone, `学生` and `助手` were both `sft-` and `student v2`
    and `student-v2` one directory, where each run's session start dropped the other's curves."""
    name = stage.replace(":", "-", 1)  # a stage's kind has no "-": the kind and the output stay apart
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    if clean == name:
        return name
    return f"{clean}-{hashlib.blake2b(stage.encode(), digest_size=4).hexdigest()}"


def check_installed(names: list[str]) -> None:
    """Refuse a backend that is not installed before any stage works (a stage opens its tracker once it has
    something to log: eval, after sampling everything)."""
    for name in names:
        if name in EXTRAS and importlib.util.find_spec(name) is None:
            raise WarmstartError(not_installed(name))


def not_installed(name: str) -> str:
    return f"log.to: {name} is not installed; pip install -c constraints-cpu.txt -e '.[{EXTRAS[name]}]'"


def open_backend(name: str, root: Path, stage: str, project: str, config: dict):
    try:
        if name == "tensorboard":
            return TensorBoard(root / "tensorboard" / stage_dir_name(stage))
        if name == "trackio":
            return Trackio(project, stage, config)
        return WandB(project, stage, config, root)
    except ImportError:
        raise WarmstartError(not_installed(name)) from None
    except Exception as error:  # installed, but cannot start: W&B online without a key, a directory not writable
        raise WarmstartError(f"log.to: {name} could not start for {stage}: {first_line(error)}") from error


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class TensorBoard:
    """Event files written with the tensorboard package's own writer (no torch needed to log a scalar).

    A stage run again (resumed from a checkpoint, or trained anew) writes another event file into the same
    directory; its first event is a session START at its first step, by which TensorBoard leaves out what
    earlier files logged from that step on (its `purge_orphaned_data`): the curve is the last run's, not
    steps 1..32 then 21..60 of a killed run and its resume."""

    def __init__(self, directory: Path):
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.event, self.summary, self.session_log = Event, Summary, SessionLog
        self.writer = EventFileWriter(str(directory))
        self.started = False

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.started:
            start = self.session_log(status=self.session_log.START)
            self.writer.add_event(self.event(session_log=start, step=step, wall_time=time.time()))
            self.started = True
        scalars = [self.summary.Value(tag=name, simple_value=value) for name, value in values.items()]
        self.writer.add_event(self.event(summary=self.summary(value=scalars), step=step, wall_time=time.time()))

    def close(self) -> None:
        self.writer.close()


class Trackio:
    def __init__(self, project: str, stage: str, config: dict):
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=project, name=stage, config=config)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.trackio.log(values, step=step)

    def close(self) -> None:
        self.trackio.finish()


class WandB:
    def __init__(self, project: str, stage: str, config: dict, root: Path):
        import wandb

        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(project=project, name=stage, config=config, dir=str(root), mode=mode, reinit=True)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()
