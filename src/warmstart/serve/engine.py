"""The model side of `warmstart serve`: one worker thread owns the model and runs batches.

HTTP handler threads submit a Job (one request: prompt ids, `n`, sampling settings) and wait on its
future. The worker takes whatever is pending, up to `max_batch` sequences, waiting a few ms for more to
arrive; groups jobs that can share one `generate` call (same temperature, top_p and max_tokens; a job
with a seed runs alone, so that its seed alone decides its output); expands `n` into rows; samples with
`lm.generation.sample_ids`; and resolves the futures. Only this thread touches the model, so the global
torch RNG that `sample_ids` seeds is never raced.

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


def group_jobs(jobs: list[Job], max_batch: int) -> list[list[Job]]:
    """Jobs that can share one generate call: same sampling settings, at most `max_batch` rows, a seeded job alone."""
    batches: list[list[Job]] = []
    open_batch: dict[Sampling, list[Job]] = {}
    for job in jobs:
        if job.seed is not None:
            batches.append([job])
            continue
        batch = open_batch.get(job.sampling)
        if batch is None or sum(j.n for j in batch) + job.n > max_batch:
            batch = open_batch[job.sampling] = []
            batches.append(batch)
        batch.append(job)
    return batches


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
        while (jobs := self._take()) is not None:
            for batch in group_jobs(jobs, self.max_batch):
                self._run(batch)

    def _take(self) -> list[Job] | None:
        """The jobs pending now, or arriving within `wait_s`, up to `max_batch` rows; None when stopped."""
        first = self.pending.get()
        if first is None:
            return None
        jobs, rows = [first], first.n
        deadline = time.monotonic() + self.wait_s
        while rows < self.max_batch:
            try:
                job = self.pending.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if job is None:
                self.pending.put(None)  # finish what was taken, then stop
                break
            jobs.append(job)
            rows += job.n
        return jobs

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
