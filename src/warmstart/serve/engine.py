"""The model side of `warmstart serve`: one worker thread owns the model and runs batches.

HTTP handler threads submit a Job (one request: prompt ids, `n`, sampling settings, adapter) and wait on
its future. The worker keeps the rows it is generating (`Live`, `n` per job) and advances them in slices of
at most `SLICE_TOKENS` new tokens: each slice is one `lm.generation.sample_ids_pruned` call over up to `max_batch`
rows that share temperature, top_p and LoRA adapter, and between slices the worker admits what has
arrived. So a short request that comes while long ones run joins at the next slice instead of waiting for
them to finish (continuous batching at the granularity of a slice; each slice re-reads its rows' prompt +
tokens so far, the price of not keeping a KV cache across slices). Groups of other settings take turns. A
job with a seed is a group of its own (its n rows, each slice's seed drawn from the job's), so that its seed
alone decides its output; it takes its turn slice by slice like any group, so a long seeded request no
longer holds every other request for its whole generation. Only this thread touches the model.

Work on the model itself (an adapter loaded or unloaded, new weights) is a `Control` on the same queue: the
worker runs it between slices, once no running row depends on what it changes; the jobs queued after it
wait for it, so every request sees the model as it was when it was queued or later, never half of each.

A job's timeout counts from when it is queued, so the time it waits for its turn counts too. Between slices
the worker fails with `RequestTimeout` every job past its time, running or still queued: a running job's
rows are dropped, a queued one leaves the queue without ever running, and the others go on. A job whose
client has gone away (`abandoned`, set by its handler thread) is dropped the same way before its next
slice, or from the queue: no slice is spent on an answer nobody will read.

Log-probs come from a second forward pass over prompt + completion, for the rows that asked: the model's
own distribution (raw logits: no temperature, no top-p) under the job's adapter, as OpenAI and vLLM report
them. A job with `echo` (the legacy completions endpoint) has its prompt tokens scored in the same pass,
and one with max_tokens 0 is that pass alone, with no generation: how a teacher scores a student's tokens.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..lm.generation import Sampled, produced_ids, row_seed, sample_ids_pruned
from ..lm.scoring import TokenLogprob, score_tokens
from ..types import Sampling
from .lora import LoraSet

log = logging.getLogger(__name__)


class RequestTimeout(Exception):
    """A job still generating when its time ran out."""


class AdapterGone(Exception):
    """A job for an adapter that was unloaded before the job began."""


class ClientGone(Exception):
    """A job dropped because its client went away."""


@dataclass
class Row:
    """One generated sequence."""

    completion_ids: list[int]  # up to and including the end-of-turn token, if one came
    stopped: bool  # False: cut by max_tokens
    # One per produced token; the end-of-turn token is excluded unless the job asked `score_stop`.
    logprobs: list[TokenLogprob] | None
    prompt_logprobs: list[TokenLogprob] | None = None  # with echo: one per prompt token from the second on


@dataclass
class Job:
    prompt_ids: list[int]
    n: int
    sampling: Sampling
    seed: int | None
    top_logprobs: int | None  # None: no logprobs
    echo: bool = False  # score the prompt's tokens too (with top_logprobs not None)
    adapter: str | None = None  # a loaded LoRA adapter's name; None: the base model
    score_stop: bool = False  # list the end-of-turn token's log-prob too (return_token_ids)
    timeout_s: float | None = None  # from `queued`: failed at the first slice boundary past it, queued or running
    future: Future = field(default_factory=Future)  # resolves to list[Row], n of them
    queued: float = field(default_factory=time.monotonic)
    abandoned: bool = False  # set by the handler thread once its client is gone; read by the worker
    slices_run: int = 0  # the slices its rows took so far (worker only): a seeded job's next slice seed

    @property
    def next_slice_seed(self) -> int:
        """A seeded job's seed for its next slice: the seed itself for the first (one slice is all most
        requests need), then one drawn from it per slice, so the same seed still gives the same tokens."""
        assert self.seed is not None
        return self.seed if self.slices_run == 0 else row_seed(self.seed, f"slice {self.slices_run}")

    @property
    def expired(self) -> bool:
        return self.timeout_s is not None and time.monotonic() - self.queued > self.timeout_s

    @property
    def batch_key(self) -> tuple:
        """Rows share a slice only with rows of equal key: one adapter and one way of sampling per call; a
        seeded job's rows only with each other (others in its batch would change its output's numerics)."""
        alone = ("seeded", id(self)) if self.seed is not None else ()
        return (self.sampling.temperature, self.sampling.top_p, self.adapter, *alone)


def never(job: Job) -> bool:
    return False


@dataclass
class Control:
    """Work on the model, run by the worker between slices once no running row's job `blocks` it."""

    action: Callable[[], object]
    blocks: Callable[[Job], bool] = never
    future: Future = field(default_factory=Future)  # resolves to what `action` returns, or its exception


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
    def __init__(
        self,
        model,
        pad_id: int,
        stop_ids: list[int],
        max_batch: int,
        wait_s: float = 0.005,
        on_slice: Callable[[int], None] = lambda rows: None,
    ):
        self.model, self.pad_id, self.stop_ids = model, pad_id, stop_ids
        self.max_batch, self.wait_s, self.on_slice = max_batch, wait_s, on_slice
        self.adapters = LoraSet(model)  # changed by Controls only, so by the worker only
        self.pending: queue.Queue[Job | Control | None] = queue.Queue()  # None: stop the worker
        self.waiting: deque[Job | Control] = deque()  # taken from `pending`, not yet admitted (worker only)
        self.live: list[Live] = []  # the rows being generated (worker only; others read its length)
        self.batches_run = self.jobs_done = self.rows_done = 0  # written by the worker only
        self.worker = threading.Thread(target=self._loop, name="serve-worker", daemon=True)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.pending.put(None)
        self.worker.join()

    def submit(self, item: Job | Control) -> Future:
        self.pending.put(item)
        return item.future

    def queued(self) -> int:
        """Jobs and controls waiting to be admitted (read from any thread: a moment's count)."""
        return self.pending.qsize() + len(self.waiting)

    def _loop(self) -> None:
        stopping = False
        while not stopping or self.live or self.waiting:
            if not stopping:
                stopping = self._pull(block=not self.live and not self.waiting)
            self._admit()
            if self.live:
                self._advance()

    def _pull(self, block: bool) -> bool:
        """Move what has arrived to `waiting` (with `block`: wait for the first, then a few ms for more to
        batch with it). True when the worker is asked to stop (it finishes what it holds first)."""
        deadline = None
        while True:
            try:
                if not block:
                    item = self.pending.get_nowait()
                elif deadline is None:
                    item = self.pending.get()
                else:
                    item = self.pending.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                return False
            if item is None:
                return True
            self.waiting.append(item)
            deadline = deadline or time.monotonic() + self.wait_s

    def _admit(self) -> None:
        """Admit waiting jobs in order, up to `max_batch` rows, running a control when its turn comes and
        nothing running depends on it; a control that must wait holds the jobs behind it."""
        self._clear_queue()
        admitted, room = 0, self.max_batch - len(self.live)
        while self.waiting:
            item = self.waiting[0]
            if isinstance(item, Control):
                if any(item.blocks(r.job) for r in self.live):
                    return
                self.waiting.popleft()
                _settle(item.future, item.action)
                continue
            if admitted >= room:
                return
            self.waiting.popleft()
            if item.abandoned:
                item.future.set_exception(ClientGone())
            elif item.adapter is not None and item.adapter not in self.adapters.loaded:
                item.future.set_exception(AdapterGone(item.adapter))
            elif item.sampling.max_new_tokens == 0:
                self._score_only(item)  # one forward pass, no slices
                return  # the queue is cleared of expired jobs again first
            else:
                rows = [Live(item) for _ in range(item.n)]
                for row in rows:
                    row.siblings = rows
                self.live += rows
                admitted += item.n

    def _clear_queue(self) -> None:
        """Take out of the queue the jobs nobody will read (abandoned) and those whose time ran out while they
        waited: each is answered now, wherever it stands in the queue, and its place goes to those behind it."""
        kept: deque[Job | Control] = deque()
        for item in self.waiting:
            if isinstance(item, Control):
                kept.append(item)
            elif item.abandoned:
                item.future.set_exception(ClientGone())
            elif item.expired:
                item.future.set_exception(RequestTimeout(f"it waited in the queue past {item.timeout_s} s"))
            else:
                kept.append(item)
        self.waiting = kept

    def _advance(self) -> None:
        """One slice for the oldest rows' settings (up to max_batch rows); finished jobs resolved, expired
        ones dropped. The rows advanced go to the back, so that other settings take turns."""
        self._drop({id(r.job): r.job for r in self.live if r.job.abandoned}, ClientGone())
        if not self.live:
            return
        first = self.live[0].job
        group = [r for r in self.live if r.job.batch_key == first.batch_key]
        # A seeded job's n rows take every slice together whatever max_batch, as they would alone.
        group = group if first.seed is not None else group[: self.max_batch]
        # The longest remaining, not the shortest: a row of max_tokens 1 had every long row of its group advance
        # one token per slice (each slice re-reading its whole prompt). A shorter row is cut at its own end.
        new_tokens = min(SLICE_TOKENS, max(r.remaining for r in group))
        prompts = [r.job.prompt_ids + r.completion for r in group]
        step = Sampling(first.sampling.temperature, first.sampling.top_p, new_tokens)
        seed = first.next_slice_seed if first.seed is not None else secrets.randbelow(2**31)
        first.slices_run += 1
        try:
            with self.adapters.using(first.adapter):
                sampled = self._slice(prompts, step, seed)
        except Exception as exc:  # a failed slice fails its requests (500), never the worker
            log.exception("a slice of %d sequences failed", len(group))
            self._drop({id(r.job): r.job for r in group}, exc)
            return
        for row, s in zip(group, sampled):
            kept = s.completion_ids[: row.remaining]
            # A stop token is its row's last: past the row's max_tokens it was cut off, and the row was not stopped.
            row.stopped = s.stopped and len(kept) == len(s.completion_ids)
            row.completion += kept
            row.done = row.stopped or row.remaining <= 0
        advanced = {id(r) for r in group}
        # The batch is updated before any future resolves: a client that has its answer sees its rows gone.
        self.live = [r for r in self.live if not r.done and id(r) not in advanced] + [r for r in group if not r.done]
        self._resolve_finished(group)
        # Every unfinished job is checked, not only those advanced: one of other settings, waiting for its
        # group's turn, would otherwise overrun its time by a slice per group.
        self._drop({id(r.job): r.job for r in self.live if r.job.expired}, None)

    def _slice(self, prompts: list[list[int]], step: Sampling, seed: int) -> list[Sampled]:
        # The pruned loop (one stream per row, each row dropped from the batch and its KV cache once it
        # stops) rather than `generate`, which steps finished rows to the slice's end: ~1.6x faster on a
        # batch of rollouts (bench/grpo_rollout_server.py); same distribution, greedy output equal.
        sampled = sample_ids_pruned(self.model, self.pad_id, prompts, step, self.stop_ids, seed)
        # Counted before any future resolves, so a client that saw its answer also sees its slice counted.
        self.batches_run += 1
        self.on_slice(len(prompts))
        return sampled

    def _drop(self, jobs: dict[int, Job], exc: Exception | None) -> None:
        """Fail these jobs (with `exc`, or a timeout) and take their rows out of the batch."""
        self.live = [r for r in self.live if id(r.job) not in jobs]
        for job in jobs.values():
            job.future.set_exception(exc or RequestTimeout(f"generation ran past {job.timeout_s} s"))

    def _resolve_finished(self, advanced: list[Live]) -> None:
        """Every job of these rows whose rows are all done: its log-probs scored, its future resolved."""
        jobs = {id(r.job): r.siblings for r in advanced if all(s.done for s in r.siblings)}
        for rows in jobs.values():
            job = rows[0].job
            sampled = [Sampled(list(job.prompt_ids), r.completion, r.stopped) for r in rows]
            try:
                self._finish(job, sampled)
            except Exception as exc:
                log.exception("scoring a request failed")
                job.future.set_exception(exc)

    def _finish(self, job: Job, sampled: list[Sampled]) -> None:
        with self.adapters.using(job.adapter):
            scored = requested_logprobs(
                self.model, self.pad_id, sampled, [job.top_logprobs] * job.n, [job.echo] * job.n, job.score_stop
            )
        self.jobs_done += 1
        self.rows_done += job.n
        job.future.set_result([_row(s, lp, job.echo) for s, lp in zip(sampled, scored)])

    def _score_only(self, job: Job) -> None:
        """A job of max_tokens 0: its prompt scored (echo), nothing generated."""
        try:
            self._finish(job, [Sampled(list(job.prompt_ids), [], False) for _ in range(job.n)])
        except Exception as exc:  # a failed pass fails its request (500), never the worker
            log.exception("scoring a request failed")
            job.future.set_exception(exc)


def _settle(future: Future, action: Callable[[], object]) -> None:
    try:
        future.set_result(action())
    except Exception as exc:  # the control's caller gets it; the worker goes on
        future.set_exception(exc)


def _row(sampled: Sampled, scored: list[TokenLogprob] | None, echo: bool) -> Row:
    """`scored` starts at the second prompt token with echo, else at the first produced token."""
    if scored is None or not echo:
        return Row(sampled.completion_ids, sampled.stopped, scored)
    cut = len(sampled.prompt_ids) - 1
    return Row(sampled.completion_ids, sampled.stopped, scored[cut:], scored[:cut])


def requested_logprobs(
    model, pad_id: int, sampled: list[Sampled], wanted: list[int | None], echo: list[bool], score_stop: bool = False
) -> list[list[TokenLogprob] | None]:
    """For the rows where k is not None: each produced token's log-prob and its k best alternatives (the
    end-of-turn token too with `score_stop`), preceded, where `echo`, by those of the prompt's tokens from
    the second on (nothing predicts the first)."""
    out: list[list[TokenLogprob] | None] = [None] * len(sampled)
    rows = [i for i, k in enumerate(wanted) if k is not None]
    if not rows:
        return out

    def scored_part(s: Sampled) -> list[int]:
        return s.completion_ids if score_stop else produced_ids(s.completion_ids, s.stopped)

    sequences = [sampled[i].prompt_ids + scored_part(sampled[i]) for i in rows]
    starts = [1 if echo[i] else len(sampled[i].prompt_ids) for i in rows]
    for i, scored in zip(rows, score_tokens(model, pad_id, sequences, starts, [wanted[i] for i in rows])):
        out[i] = scored
    return out
