"""The model side of `warmstart serve`: one worker thread owns the model and runs batches.

HTTP handler threads submit a Job (one request: prompt ids, `n`, sampling settings) and wait on its
future. The worker keeps the rows it is generating (`Live`, `n` per job) and advances them in slices of
at most `SLICE_TOKENS` new tokens: each slice is one `lm.generation.sample_ids` call over up to `max_batch`
rows that share temperature and top_p, and between slices the worker admits what has arrived. So a short
request that comes while long ones run joins at the next slice instead of waiting for them to finish
(continuous batching at the granularity of a slice; each slice re-reads its rows' prompt + tokens so far,
the price of not keeping a KV cache across slices). Groups of other settings take turns. A job with a seed
still runs alone, to its end, so that its seed alone decides its output. Only this thread touches the
model, so the global torch RNG that `sample_ids` seeds is never raced.

Log-probs come from a second forward pass over prompt + completion, for the rows that asked: the model's
own distribution (raw logits: no temperature, no top-p), as OpenAI and vLLM report them. A job with
`echo` (the legacy completions endpoint) has its prompt tokens scored in the same pass, and one with
max_tokens 0 is that pass alone, with no generation: how a teacher scores a student's tokens.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..lm.generation import Sampled, produced_ids, sample_ids
from ..lm.scoring import TokenLogprob, score_tokens
from ..types import Sampling

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One generated sequence."""

    completion_ids: list[int]  # up to and including the end-of-turn token, if one came
    stopped: bool  # False: cut by max_tokens
    logprobs: list[TokenLogprob] | None  # one per produced token (the end-of-turn token excluded)
    prompt_logprobs: list[TokenLogprob] | None = None  # with echo: one per prompt token from the second on


@dataclass
class Job:
    prompt_ids: list[int]
    n: int
    sampling: Sampling
    seed: int | None
    top_logprobs: int | None  # None: no logprobs
    echo: bool = False  # score the prompt's tokens too (with top_logprobs not None)
    future: Future = field(default_factory=Future)  # resolves to list[Row], n of them


SLICE_TOKENS = 64  # new tokens per row per slice: the longest a newly arrived request waits to join


@dataclass
class Live:
    """One row being generated: its job, the tokens so far, and whether it has finished."""

    job: Job
    completion: list[int] = field(default_factory=list)
    stopped: bool = False
    done: bool = False
    siblings: list[Live] = field(default_factory=list)  # the job's n rows, this one included

    @property
    def remaining(self) -> int:
        return self.job.sampling.max_new_tokens - len(self.completion)


class BatchEngine:
    def __init__(self, model, pad_id: int, stop_ids: list[int], max_batch: int, wait_s: float = 0.005):
        self.model, self.pad_id, self.stop_ids = model, pad_id, stop_ids
        self.max_batch, self.wait_s = max_batch, wait_s
        self.pending: queue.Queue[Job | None] = queue.Queue()  # None: stop the worker
        self.batches_run = self.jobs_done = self.rows_done = 0  # written by the worker only
        self.worker = threading.Thread(target=self._loop, name="serve-worker", daemon=True)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.pending.put(None)
        self.worker.join()

    def submit(self, job: Job) -> Future:
        self.pending.put(job)
        return job.future

    def _loop(self) -> None:
        live: list[Live] = []
        stopping = False
        while not (stopping and not live):
            jobs, stopping = self._take(wait=not live, room=self.max_batch - len(live), stopping=stopping)
            for job in jobs:
                if job.seed is not None or job.sampling.max_new_tokens == 0:
                    self._run([job])  # alone and whole: its seed alone decides its output
                else:
                    rows = [Live(job) for _ in range(job.n)]
                    for row in rows:
                        row.siblings = rows
                    live += rows
            if live:
                live = self._advance(live)

    def _take(self, wait: bool, room: int, stopping: bool) -> tuple[list[Job], bool]:
        """The jobs pending now, up to `room` rows (with `wait`: blocking for the first, then a few ms for
        more to batch with it); and whether the worker was asked to stop (it finishes its rows first)."""
        if stopping:
            return [], True
        jobs: list[Job] = []
        if wait:
            first = self.pending.get()
            if first is None:
                return [], True
            jobs.append(first)
        deadline = time.monotonic() + (self.wait_s if wait else 0.0)
        while sum(job.n for job in jobs) < room:
            try:
                job = (
                    self.pending.get(timeout=max(deadline - time.monotonic(), 0)) if wait else self.pending.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _advance(self, live: list[Live]) -> list[Live]:
        """One slice for the oldest rows' settings (up to max_batch rows); finished jobs resolved. The rows
        advanced go to the back, so that other settings take turns."""
        sampling = live[0].job.sampling
        group = [r for r in live if r.job.sampling == sampling][: self.max_batch]
        new_tokens = min(SLICE_TOKENS, min(r.remaining for r in group))
        prompts = [r.job.prompt_ids + r.completion for r in group]
        step = Sampling(sampling.temperature, sampling.top_p, new_tokens)
        try:
            sampled = sample_ids(self.model, self.pad_id, prompts, step, self.stop_ids, secrets.randbelow(2**31))
        except Exception as exc:  # a failed slice fails its requests (500), never the worker
            log.exception("a slice of %d sequences failed", len(group))
            failed = {id(r.job) for r in group}
            for job in {id(r.job): r.job for r in group}.values():
                job.future.set_exception(exc)
            return [r for r in live if id(r.job) not in failed]
        self.batches_run += 1
        for row, s in zip(group, sampled):
            row.completion += s.completion_ids
            row.stopped = s.stopped
            row.done = s.stopped or row.remaining <= 0
        self._resolve_finished(group)
        advanced = {id(r) for r in group}
        return [r for r in live if not r.done and id(r) not in advanced] + [r for r in group if not r.done]

    def _resolve_finished(self, advanced: list[Live]) -> None:
        """Every job of these rows whose rows are all done: its log-probs scored, its future resolved."""
        jobs = {id(r.job): r.siblings for r in advanced if all(s.done for s in r.siblings)}
        for rows in jobs.values():
            job = rows[0].job
            sampled = [Sampled(list(job.prompt_ids), r.completion, r.stopped) for r in rows]
            try:
                scored = requested_logprobs(
                    self.model, self.pad_id, sampled, [job.top_logprobs] * job.n, [job.echo] * job.n
                )
            except Exception as exc:
                log.exception("scoring a request failed")
                job.future.set_exception(exc)
                continue
            self.jobs_done += 1
            self.rows_done += job.n
            job.future.set_result([_row(s, lp, job.echo) for s, lp in zip(sampled, scored)])

    def _run(self, jobs: list[Job]) -> None:
        start = time.monotonic()
        try:
            rows = self._generate(jobs)
        except Exception as exc:  # a failed batch fails its requests (500), never the worker
            log.exception("batch of %d requests failed", len(jobs))
            for job in jobs:
                job.future.set_exception(exc)
            return
        # Counted before the futures resolve, so a client that saw its answer also sees its batch counted.
        self.batches_run += 1
        self.jobs_done += len(jobs)
        self.rows_done += len(rows)
        log.info(
            "batch %d: %d sequences from %d requests in %.2fs",
            self.batches_run,
            len(rows),
            len(jobs),
            time.monotonic() - start,
        )
        at = 0
        for job in jobs:
            job.future.set_result(rows[at : at + job.n])
            at += job.n

    def _generate(self, jobs: list[Job]) -> list[Row]:
        prompts = [job.prompt_ids for job in jobs for _ in range(job.n)]
        wanted = [job.top_logprobs for job in jobs for _ in range(job.n)]
        echo = [job.echo for job in jobs for _ in range(job.n)]
        sampling = jobs[0].sampling
        if sampling.max_new_tokens == 0:  # scoring only (legacy completions with echo)
            sampled = [Sampled(list(p), [], False) for p in prompts]
        else:
            seed = jobs[0].seed if jobs[0].seed is not None else secrets.randbelow(2**31)
            sampled = sample_ids(self.model, self.pad_id, prompts, sampling, self.stop_ids, seed)
        logprobs = requested_logprobs(self.model, self.pad_id, sampled, wanted, echo)
        return [_row(s, lp, e) for s, lp, e in zip(sampled, logprobs, echo)]


def _row(sampled: Sampled, scored: list[TokenLogprob] | None, echo: bool) -> Row:
    """`scored` starts at the second prompt token with echo, else at the first produced token."""
    if scored is None or not echo:
        return Row(sampled.completion_ids, sampled.stopped, scored)
    cut = len(sampled.prompt_ids) - 1
    return Row(sampled.completion_ids, sampled.stopped, scored[cut:], scored[:cut])


def requested_logprobs(
    model, pad_id: int, sampled: list[Sampled], wanted: list[int | None], echo: list[bool]
) -> list[list[TokenLogprob] | None]:
    """For the rows where k is not None: each produced token's log-prob and its k best alternatives,
    preceded, where `echo`, by those of the prompt's tokens from the second on (nothing predicts the first)."""
    out: list[list[TokenLogprob] | None] = [None] * len(sampled)
    rows = [i for i, k in enumerate(wanted) if k is not None]
    if not rows:
        return out
    sequences = [sampled[i].prompt_ids + produced_ids(sampled[i].completion_ids, sampled[i].stopped) for i in rows]
    starts = [1 if echo[i] else len(sampled[i].prompt_ids) for i in rows]
    for i, scored in zip(rows, score_tokens(model, pad_id, sequences, starts, [wanted[i] for i in rows])):
        out[i] = scored
    return out
