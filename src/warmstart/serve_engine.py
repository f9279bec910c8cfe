"""The model side of `warmstart serve`: one worker thread owns the model and runs batches.

HTTP handler threads submit a Job (one request: prompt ids, `n`, sampling settings) and wait on its
future. The worker takes whatever is pending, up to `max_batch` sequences, waiting a few ms for more to
arrive; groups jobs that can share one `generate` call (same temperature, top_p and max_tokens; a job
with a seed runs alone, so that its seed alone decides its output); expands `n` into rows; samples with
`generation.sample_ids`; and resolves the futures. Only this thread touches the model, so the global
torch RNG that `sample_ids` seeds is never raced.

Log-probs come from a second forward pass over prompt + completion, for the rows that asked: the model's
own distribution (raw logits: no temperature, no top-p), as OpenAI and vLLM report them.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from .generation import Sampled, left_padded, produced_ids, sample_ids
from .policies.base import Sampling

log = logging.getLogger(__name__)


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), most likely first


@dataclass
class Row:
    """One generated sequence."""

    completion_ids: list[int]  # up to and including the end-of-turn token, if one came
    stopped: bool  # False: cut by max_tokens
    logprobs: list[TokenLogprob] | None  # one per produced token (the end-of-turn token excluded)


@dataclass
class Job:
    prompt_ids: list[int]
    n: int
    sampling: Sampling
    seed: int | None
    top_logprobs: int | None  # None: no logprobs
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
        log.info("batch %d: %d sequences from %d requests in %.2fs", self.batches_run, len(rows), len(jobs), time.monotonic() - start)
        at = 0
        for job in jobs:
            job.future.set_result(rows[at : at + job.n])
            at += job.n

    def _generate(self, jobs: list[Job]) -> list[Row]:
        prompts = [job.prompt_ids for job in jobs for _ in range(job.n)]
        wanted = [job.top_logprobs for job in jobs for _ in range(job.n)]
        seed = jobs[0].seed if jobs[0].seed is not None else secrets.randbelow(2**31)
        sampled = sample_ids(self.model, self.pad_id, prompts, jobs[0].sampling, self.stop_ids, seed)
        logprobs = token_logprobs(self.model, self.pad_id, sampled, wanted)
        return [Row(s.completion_ids, s.stopped, lp) for s, lp in zip(sampled, logprobs)]


@torch.inference_mode()
def token_logprobs(model, pad_id: int, sampled: list[Sampled], wanted: list[int | None]) -> list[list[TokenLogprob] | None]:
    """Per produced token: its log-prob and the `k` best alternatives, for the rows where k is not None."""
    out: list[list[TokenLogprob] | None] = [None] * len(sampled)
    rows = [i for i, k in enumerate(wanted) if k is not None]
    if not rows:
        return out
    produced = [produced_ids(sampled[i].completion_ids, sampled[i].stopped) for i in rows]
    ids, attention = left_padded([sampled[i].prompt_ids + p for i, p in zip(rows, produced)], pad_id)
    # Left padding shifts positions; as generate() does, each row's tokens sit at 0, 1, ... (RoPE models do
    # not care about a shift, models with absolute position embeddings such as GPT-2 do).
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits  # [B, T, V]
    width = max(len(p) for p in produced)
    # Completions are right-aligned: the logits at T-width-1 .. T-2 predict the last `width` tokens.
    logp = torch.log_softmax(logits[:, ids.shape[1] - width - 1 : -1].float(), dim=-1)  # [B, width, V]
    for b, (i, p) in enumerate(zip(rows, produced)):
        out[i] = _row_logprobs(logp[b, width - len(p) :], p, wanted[i])
    return out


def _row_logprobs(logp: torch.Tensor, tokens: list[int], k: int) -> list[TokenLogprob]:
    """logp: [len(tokens), V] log-probs at the positions that produced `tokens`."""
    chosen = logp.gather(-1, torch.tensor(tokens, dtype=torch.long).unsqueeze(-1)).squeeze(-1).tolist()
    top_values, top_ids = logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long())
    return [
        TokenLogprob(token, value, list(zip(alt_ids, alt_values)))
        for token, value, alt_ids, alt_values in zip(tokens, chosen, top_ids.tolist(), top_values.tolist())
    ]
