"""`curate`: keep verified, distinct, uncontaminated trajectories of tasks of the wanted difficulty.

Drops, in this order, each trajectory counted under its first reason: policy errors, flagged replies
and failed verification; contamination (`curation.contamination`: the eval split's prompts and the files
of `curate.decontaminate_against`); tasks whose teacher pass rate lies outside `curate.teacher_pass_rate`;
exact duplicates; near-duplicate prompts (a task whose prompt nearly repeats a better one's: all its
samples) and near-duplicate trajectories (`curation.dedup`). Writes `curated/<output>.jsonl` and
`curated/<output>.dropped.json`: counts per reason, examples of near-duplicates, the contamination per
source with example task ids, and the tasks per teacher pass rate (docs/curation.md). Last, with
`curate.student_pass_rate`, tasks the student already solves (or cannot yet) by its own samples
(`student_rates.py`). Two switches exist for the demo's ablations: `require_passed = false`
keeps unverified data (what training without verification would see) and `strip_reasoning = true`
removes the chain.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from ..config import FINGERPRINT, CurateConfig, Recipe
from ..curation import difficulty
from ..curation.benchmarks import read_texts
from ..curation.contamination import Source, find_contamination
from ..curation.dedup import exact_duplicates, near_duplicate_reasons
from ..curation.text import checked_texts, prompt_messages, searched_texts
from ..envs import make_env
from ..errors import WarmstartError
from ..policies.spec import resolve
from ..runs.directory import RunDir, model_files
from ..runs.jsonl import JsonlAppender, read_records, write_json_atomic
from ..types import Trajectory
from .common import latest_attempts, load_tasks, prompt_key, tasks_read
from .student_rates import student_pass_rates

log = logging.getLogger(__name__)


class NothingKept(WarmstartError):
    """Every trajectory was dropped: nothing to train on (a result for a caller that expects it: study's E6)."""


EVAL_SPLIT = "eval split"  # the name the eval split's tasks are reported under as a contamination source

# Finish reasons that make a reply unusable as training data, whatever the verifier says.
FLAGGED_FINISH = {
    "length": "truncated",
    "refusal": "refused",
    "content_filter": "content filtered",
    "oversized": "oversized (longer than max_new_tokens allows)",
}
# How a usable reply ends: its end of turn, or an episode's turn limit (whose last turn the verifier judges).
# Anything else a server may say (vLLM's "abort" or "error", Anthropic's "pause_turn", "unknown" for a reply
# that named none) is a reply cut short for a reason of the server's: never training data.
COMPLETE_FINISH = {None, "stop", "turns"}


def drop_reason(t: Trajectory, require_passed: bool) -> str | None:
    if t.error is not None:
        return "policy error"
    flagged = FLAGGED_FINISH.get(t.finish_reason or "")
    if flagged:
        return flagged
    if t.finish_reason not in COMPLETE_FINISH:
        return f"unfinished (finish reason {t.finish_reason!r})"
    if t.verdict is None:  # kept where verification is not asked for (data of one's own may have no verdicts)
        return "not verified" if require_passed else None
    if t.verdict.infra_error is not None:
        return "verifier infra error"
    if require_passed and not t.verdict.passed:
        return f"failed verification ({t.verdict.details.get('reason', 'no reason given')})"
    return None


def strip_reasoning(t: Trajectory) -> Trajectory:
    messages = [m.model_copy(update={"reasoning": None}) if m.role == "assistant" else m for m in t.messages]
    return t.model_copy(update={"messages": messages})


def curate(
    trajectories: list[Trajectory], sources: list[Source] | None, cfg: CurateConfig, probe: int | None = None
) -> tuple[list[Trajectory], dict]:
    """The trajectories kept, and the report: counts per reason, near-duplicates, contamination (when
    `sources` are given), pass rates. `probe`: the teacher's pass rates read only each task's samples of
    index below it (`teacher_probe`)."""
    rates = difficulty.pass_rates(trajectories, probe)  # from every sample (of the probe), before any is dropped
    check_pass_rate_filter(rates, cfg, probe)
    if cfg.strip_reasoning:
        trajectories = [strip_reasoning(t) for t in trajectories]
    found, index = [None] * len(trajectories), None
    if sources is not None:
        texts = [searched_texts(t.messages) for t in trajectories]
        found, index = find_contamination(sources, texts, cfg.ngram, [t.task_id for t in trajectories])
    reasons, matched = item_reasons(trajectories, found, rates, cfg)
    if cfg.dedup:
        reasons |= exact_duplicates(trajectories, remaining(trajectories, reasons))
    near_report = None
    if cfg.near_dedup:
        near, near_report = near_duplicate_reasons(trajectories, remaining(trajectories, reasons), cfg)
        reasons |= near
    report = {"dropped": dict(Counter(reasons.values()))}
    if near_report is not None:
        report["near_duplicates"] = near_report
    if index is not None:
        report["contamination"] = index.report([(source, trajectories[i].task_id) for i, source in matched.items()])
    report["teacher_pass_rate"] = difficulty.summary(rates, cfg.teacher_pass_rate)
    if probe is not None:
        report["teacher_pass_rate"]["first_samples_of_each_task"] = probe
    return [t for i, t in enumerate(trajectories) if i not in reasons], report


def remaining(trajectories: list[Trajectory], reasons: dict[int, str]) -> list[int]:
    return [i for i in range(len(trajectories)) if i not in reasons]


def item_reasons(
    trajectories: list[Trajectory], contamination: list[str | None], rates: dict, cfg: CurateConfig
) -> tuple[dict[int, str], dict[int, str]]:
    """What each trajectory alone is dropped for (index -> reason), and the contamination source of those
    dropped for it (index -> source); `contamination` holds the source each trajectory repeats, or None."""
    reasons, matched = {}, {}
    for i, t in enumerate(trajectories):
        reason = drop_reason(t, cfg.require_passed)
        if reason is None and (source := contamination[i]) is not None:
            reason, matched[i] = f"contaminated ({source})", source
        if reason is None and cfg.teacher_pass_rate is not None:
            reason = difficulty.outside_reason(rates.get(t.task_id), cfg.teacher_pass_rate)
        if reason:
            reasons[i] = reason
    return reasons, matched


def check_pass_rate_filter(rates: dict, cfg: CurateConfig, probe: int | None = None) -> None:
    if cfg.teacher_pass_rate is not None and rates and max(r.judged for r in rates.values()) == 1:
        if probe is not None:
            raise WarmstartError(
                f"curate.teacher_pass_rate: generate.stop_after_verified stops a task at its first pass, so only "
                f"its first {probe} sample(s) measure it and every rate is 0 or 1; set generate.stop_after_verified "
                ">= 2 (or generate.adaptive with samples_per_task >= 2), or leave teacher_pass_rate out"
            )
        raise WarmstartError(
            "curate.teacher_pass_rate: every task has one judged sample, so every rate is 0 or 1; "
            "generate several per task (generate.samples_per_task > 1)"
        )


def teacher_probe(recipe: Recipe) -> int | None:
    """How many first samples of each task measure the teacher's pass rate, where generate stopped asking by
    outcome (`generate.stop_after_verified`), for the recipe's own trajectories (curate.input is
    generate.output); None: every sample does.

    A task is asked until k of its samples passed: one solved at its first try has one judged sample and a rate
    of 1.00, one solved at its third has 1/3, so a task the teacher solves half the time reads as too easy
    half the time and rates pile at the top (the stopping rule decides the sample count from the outcomes).
    The samples asked before any outcome was known are a fixed-size sample of every task: the first round,
    `stop_after_verified` samples (`samples_per_task`, the probe, with `adaptive`; sampling_plan.py), of
    indexes 0.. in order. Their share passed is the unbiased rate; later samples are read for everything else.
    `adaptive` alone stops by the probe's outcome only (all passed or none): its later samples are a fixed
    number of every task that goes on, and all are read, as before."""
    gen = recipe.generate
    if recipe.curate.teacher_pass_rate is None or gen.stop_after_verified is None or recipe.curate.input != gen.output:
        return None
    return gen.samples_per_task if gen.adaptive else gen.stop_after_verified


def student_fingerprint(recipe: Recipe) -> tuple[dict, list[Path]]:
    """What `curate.student_pass_rate` measures with, for the stage's fingerprint: the student it resolves to
    (`base` is sft.student, `student` models/<sft.output>), how it samples (eval's settings, the seed), and
    its model files' digests (another model at the same path, or one trained again, is another measurement)."""
    spec = resolve(recipe.curate.student, recipe)
    sampling = recipe.eval.model_dump(include={"temperature", "top_p", "max_new_tokens", "batch_size"})
    config = {"student": spec.identity, "sampling": sampling, "seed": recipe.run.seed}
    return config, model_files(Path(spec.name)) if spec.is_local_model else []


def benchmark_files(cfg: CurateConfig) -> dict[str, Path]:
    """The files of `curate.decontaminate_against` (name as listed -> path); each must exist."""
    if not cfg.decontaminate:
        if cfg.decontaminate_against:
            log.warning("curate.decontaminate_against is not read: curate.decontaminate is false")
        return {}
    files = {name: Path(name).expanduser() for name in cfg.decontaminate_against}
    for name, path in files.items():
        if path.is_dir():  # a `save_to_disk` dataset, say
            raise WarmstartError(f"curate.decontaminate_against: {name} is a directory, not a JSONL or parquet file")
        if not path.is_file():
            raise WarmstartError(f"curate.decontaminate_against: {name} does not exist")
    return files


def contamination_sources(recipe: Recipe, files: dict[str, Path]) -> list[Source]:
    """The eval split's prompts (their user turns), then each benchmark file's items."""
    eval_tasks = load_tasks(recipe, make_env(recipe.env), "eval")
    sources = [Source(EVAL_SPLIT, ["\n".join(checked_texts(task.prompt)) for task in eval_tasks])]
    return sources + [Source(name, read_texts(path, recipe.curate.decontaminate_field)) for name, path in files.items()]


def run(recipe: Recipe) -> Path:
    cfg, run_dir = recipe.curate, RunDir(recipe)
    source, out, report = run_dir.trajectories(cfg.input), run_dir.curated(cfg.output), run_dir.dropped(cfg.output)
    if not source.exists():
        raise WarmstartError(f"curate.input: {source} does not exist (run generate first)")
    files = benchmark_files(cfg)
    tasks, task_files = tasks_read(recipe, ("eval",) if cfg.decontaminate else ())
    inputs = [source, *files.values(), *task_files]  # a changed benchmark file reruns curate, so does the eval split
    config = {
        "curate": cfg.model_dump(context=FINGERPRINT),
        "env": recipe.env.model_dump(context=FINGERPRINT),
        "tasks": tasks,
    }
    probe = teacher_probe(recipe)
    if probe is not None:  # only then: the fingerprints of runs without it stay as they were
        config["teacher_rates_from_first_samples"] = probe
    if cfg.student_pass_rate is not None:  # likewise
        config["student_pass_rate"], student_files = student_fingerprint(recipe)
        inputs += student_files
    with run_dir.stage(f"curate:{cfg.output}", config, inputs, [out, report]) as stage:
        if stage.done:
            return out
        records = read_records(source, Trajectory)
        if not records:
            raise WarmstartError(f"{source}: has no trajectories to curate")
        trajectories = latest_attempts(records)  # an attempt a rerun of generate replaced is not data
        warn_of_shared_keys(source, records, trajectories)
        check_one_prompt_per_task(source, trajectories)
        sources = contamination_sources(recipe, files) if cfg.decontaminate else None
        kept, found = curate(trajectories, sources, cfg, probe)
        if cfg.student_pass_rate is not None:
            kept = drop_by_student_rate(recipe, kept, found)
        dropped = found["dropped"]
        log.info("%s: kept %d of %d; dropped %s", stage.name, len(kept), len(trajectories), dropped or "none")
        if not kept:  # before anything is written: an earlier run's curated data stays as it was, but the
            # manifest says this run failed, so sft does not train on that data as if it were this recipe's
            stage.summary = {"source": cfg.input, "input": len(trajectories), "kept": 0, **found}
            raise NothingKept(f"curate: every trajectory of {source} was dropped ({dropped})")
        write_records(out, kept)
        stage.summary = {"source": cfg.input, "input": len(trajectories), "kept": len(kept), **found}
        if len(records) > len(trajectories):
            stage.summary["superseded_attempts"] = len(records) - len(trajectories)
        write_json_atomic(report, stage.summary)
    return out


def check_one_prompt_per_task(source: Path, trajectories: list[Trajectory]) -> None:
    """Refuse samples of one task id that were asked different prompts: curation reads a task's prompt,
    difficulty and near-duplicates by its id (distinct problems under one id of one's own data would be
    judged as one, and some dropped as near-duplicates of each other)."""
    prompts: dict[str, set[str]] = {}
    for t in trajectories:
        prompts.setdefault(t.task_id, set()).add(prompt_key(prompt_messages(t.messages)))
    mixed = [task for task, keys in prompts.items() if len(keys) > 1]
    if mixed:
        raise WarmstartError(
            f"{source}: task id {mixed[0]!r} has samples asked different prompts ({len(mixed)} task id(s) do); "
            "give each problem its own task_id"
        )


def warn_of_shared_keys(source: Path, records: list[Trajectory], latest: list[Trajectory]) -> None:
    """Say so where records were set aside as earlier attempts though none of them had failed: distinct
    samples given one task id and sample index (their own data's, or two files joined) look like that."""
    kept = {id(t) for t in latest}
    superseded = [t for t in records if id(t) not in kept and t.error is None]
    if superseded:
        log.warning(
            "%s: %d record(s) share a task id and sample index with a later one and were set aside (only the "
            "newest attempt of a sample stands; first: %s#%d); give distinct samples distinct sample_index values",
            source,
            len(superseded),
            superseded[0].task_id,
            superseded[0].sample_index,
        )


def drop_by_student_rate(recipe: Recipe, kept: list[Trajectory], found: dict) -> list[Trajectory]:
    """`kept` less the trajectories of tasks whose student pass rate lies outside `curate.student_pass_rate`
    (counted in `found`, with the rates' summary); the student answers only the tasks still kept."""
    bounds = recipe.curate.student_pass_rate
    rates, samples, cost = student_pass_rates(recipe, {t.task_id for t in kept})
    if cost["api"]:  # an API student was paid for: the stage's costs.json entry counts it
        found["api_cost"] = cost
    reasons = {t.task_id: difficulty.outside_reason(rates.get(t.task_id), bounds, "student") for t in kept}
    dropped = Counter(reasons[t.task_id] for t in kept if reasons[t.task_id])
    found["dropped"] = dict(Counter(found["dropped"]) + dropped)
    unmeasured = sorted({t.task_id for t in kept} - set(rates))
    found["student_pass_rate"] = difficulty.summary(rates, bounds, "student") | {
        "samples": len(samples),
        "tasks_not_measured": len(unmeasured),
    }
    if unmeasured:  # kept: nothing says where they lie
        log.warning(
            "curate.student_pass_rate: %d task(s) kept unmeasured: not tasks of the train split, or no sample of "
            "the student's was judged (first: %s)",
            len(unmeasured),
            unmeasured[0],
        )
    return [t for t in kept if not reasons[t.task_id]]


def write_records(path: Path, records: list[Trajectory]) -> None:
    """`path` holds exactly `records`, replaced whole (a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with JsonlAppender(tmp) as writer:
        for record in records:
            writer.append(record)
    os.replace(tmp, path)
