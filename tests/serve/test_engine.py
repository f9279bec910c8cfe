"""The serve engine's continuous batching: a short request that arrives while long ones run joins at the
next slice and finishes first; long ones still get every token; seeded jobs stay reproducible."""

from __future__ import annotations

import time

import pytest
from transformers import AutoModelForCausalLM

from warmstart.serve.engine import SLICE_TOKENS, AdapterGone, BatchEngine, Control, Job, RequestTimeout
from warmstart.types import Sampling

GREEDY_LONG = Sampling(temperature=0.0, max_new_tokens=5 * SLICE_TOKENS)


@pytest.fixture(scope="module")
def engine(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    # A stop token greedy decoding of this untrained model never produces (the long job checks it).
    running = BatchEngine(model, pad_id=0, stop_ids=[3], max_batch=4)
    running.start()
    yield running
    running.stop()


def wait_for_a_slice(engine: BatchEngine) -> None:
    before, deadline = engine.batches_run, time.monotonic() + 60
    while engine.batches_run == before and time.monotonic() < deadline:
        time.sleep(0.001)


def test_a_short_request_joins_running_long_ones_and_finishes_first(engine):
    long = engine.submit(Job([5, 6, 7, 8], 2, GREEDY_LONG, None, None))
    deadline = time.monotonic() + 60
    while engine.batches_run == 0 and time.monotonic() < deadline:  # the long rows are under way
        time.sleep(0.001)
    slices_before = engine.batches_run
    short = engine.submit(Job([9, 10], 1, Sampling(max_new_tokens=4), None, None))
    rows = short.result(timeout=120)
    assert not long.done(), "the short request waited for the long ones"
    assert len(rows) == 1 and 1 <= len(rows[0].completion_ids) <= 4
    assert engine.batches_run - slices_before <= 3  # it joined within a slice or two
    long_rows = long.result(timeout=300)
    assert [len(r.completion_ids) for r in long_rows] == [GREEDY_LONG.max_new_tokens] * 2
    assert long_rows[0].completion_ids == long_rows[1].completion_ids  # greedy: both rows alike


def test_sliced_greedy_equals_one_uninterrupted_generation(engine):
    """Generating in slices re-reads the tokens so far: greedy output is the same as in one call."""
    from warmstart.lm.generation import sample_ids

    sliced = engine.submit(Job([5, 6, 7, 8], 1, GREEDY_LONG, None, None)).result(timeout=300)[0]
    whole = sample_ids(engine.model, 0, [[5, 6, 7, 8]], GREEDY_LONG, [3], seed=0)[0]
    assert sliced.completion_ids == whole.completion_ids


def test_more_rows_than_max_batch_and_seeded_jobs(engine):
    many = engine.submit(Job([1, 2], 6, Sampling(max_new_tokens=8), None, None)).result(timeout=120)
    assert len(many) == 6
    first, again = (engine.submit(Job([1, 2], 2, Sampling(max_new_tokens=8), 11, None)) for _ in range(2))
    assert [r.completion_ids for r in first.result(timeout=120)] == [
        r.completion_ids for r in again.result(timeout=120)
    ]


def test_controls_run_between_slices_once_the_rows_they_wait_for_are_done(engine):
    """A control that waits for every running row runs after the long job; one that waits for none runs
    at the next slice boundary, while the long job goes on; jobs queued after a control run after it."""
    long = engine.submit(Job([5, 6, 7, 8], 1, GREEDY_LONG, None, None))
    deadline = time.monotonic() + 60
    while engine.batches_run == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    at_once = engine.submit(Control(lambda: long.done()))
    after_all = engine.submit(Control(lambda: long.done(), blocks=lambda job: True))
    behind = engine.submit(Job([9, 10], 1, Sampling(max_new_tokens=2), None, None))
    assert at_once.result(timeout=300) is False
    assert after_all.result(timeout=300) is True
    assert len(behind.result(timeout=120)[0].completion_ids) <= 2
    failing = engine.submit(Control(lambda: 1 / 0))
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=120)
    assert len(engine.submit(Job([9], 1, Sampling(max_new_tokens=1), None, None)).result(timeout=120)) == 1


def test_a_job_for_an_adapter_not_loaded_fails_alone(engine):
    with pytest.raises(AdapterGone):
        engine.submit(Job([5, 6], 1, Sampling(max_new_tokens=2), None, None, adapter="nope")).result(timeout=120)


def test_a_job_whose_time_ran_out_while_queued_fails_without_running(engine):
    # Its time counts from when it was queued: here, long before the worker saw it (no clock is raced).
    late = Job([5, 6], 1, Sampling(max_new_tokens=4), None, None, timeout_s=5.0)
    late.queued -= 10.0
    slices = engine.batches_run
    with pytest.raises(RequestTimeout, match="waited in the queue past 5.0 s"):
        engine.submit(late).result(timeout=120)
    assert engine.batches_run == slices and engine.queued() == 0


def test_jobs_queued_behind_a_full_batch_time_out_there_and_free_their_places(engine):
    # The long job fills the batch for 5 slices; the jobs behind it can only wait. Their 1 ms runs out
    # before the next slice ends, and they are answered then, not once the batch has room.
    long = engine.submit(Job([5, 6, 7, 8], engine.max_batch, GREEDY_LONG, None, None))
    wait_for_a_slice(engine)
    queued = [engine.submit(Job([9, 10], 1, Sampling(max_new_tokens=2), None, None, timeout_s=0.001)) for _ in range(3)]
    for future in queued:
        with pytest.raises(RequestTimeout, match="waited in the queue"):
            future.result(timeout=120)
    assert not long.done(), "the queued jobs were answered only once the batch had room"
    assert engine.queued() == 0
    assert [len(r.completion_ids) for r in long.result(timeout=300)] == [GREEDY_LONG.max_new_tokens] * engine.max_batch


def test_a_running_job_past_its_time_leaves_the_batch_and_the_others_go_on(engine):
    # The job's clock is moved back once it runs, rather than raced: its next slice boundary is past its time.
    kept = engine.submit(Job([5, 6, 7, 8], 1, GREEDY_LONG, None, None))
    ended = Job([5, 6, 7, 8], 1, GREEDY_LONG, None, None, timeout_s=1000.0)
    engine.submit(ended)
    wait_for_a_slice(engine)
    ended.queued -= 2000.0
    with pytest.raises(RequestTimeout, match="generation ran past 1000.0 s"):
        ended.future.result(timeout=120)
    assert not kept.done()
    assert len(kept.result(timeout=300)[0].completion_ids) == GREEDY_LONG.max_new_tokens
    assert not engine.live and engine.queued() == 0


def test_a_short_request_does_not_shorten_the_slices_of_long_rows(engine):
    # The slice was min(remaining) of its group: with max_tokens 1 requests arriving all along, a long row
    # advanced one token per slice, its prompt re-read for each (the reviewer counted 85-192 slices for 6).
    long = engine.submit(Job([5, 6, 7, 8], 1, GREEDY_LONG, None, None))
    wait_for_a_slice(engine)
    slices_before, shorts = engine.batches_run, []
    while not long.done():
        shorts.append(engine.submit(Job([9, 10, len(shorts) % 50 + 11], 1, Sampling(0.0, 1.0, 1), None, None)))
        shorts[-1].result(timeout=120)
    assert engine.batches_run - slices_before <= GREEDY_LONG.max_new_tokens // SLICE_TOKENS + 1
    whole = long.result()[0].completion_ids
    assert len(whole) == GREEDY_LONG.max_new_tokens
    for short in shorts:  # each cut at its own max_tokens, from a slice generated for the long row
        [row] = short.result()
        assert len(row.completion_ids) == 1 and row.stopped == (row.completion_ids[0] == 3)


def test_a_stop_token_past_a_rows_max_tokens_is_not_a_stop(engine):
    from warmstart.lm.generation import Sampled

    engine = BatchEngine(engine.model, pad_id=0, stop_ids=[3], max_batch=4)  # its worker not started
    # The long row makes the slice 3 tokens; the short one (max_tokens 2) gets 3 with the stop third.
    replies = {(1,): Sampled([1], [4, 5, 3], True), (2,): Sampled([2], [6, 7, 8], False)}
    engine._slice = lambda prompts, step, seed: [replies[tuple(p)] for p in prompts]
    short = Job([1], 1, Sampling(0.0, 1.0, 2), None, None)
    long = Job([2], 1, Sampling(0.0, 1.0, 3), None, None)
    engine._finish = lambda job, sampled: job.future.set_result(sampled)
    for job in (short, long):
        engine.waiting.append(job)
    engine._admit()
    engine._advance()
    [cut] = short.future.result(timeout=1)
    assert cut.completion_ids == [4, 5] and cut.stopped is False
    assert long.future.result(timeout=1)[0].completion_ids == [6, 7, 8]


SAMPLED_LONG = Sampling(temperature=1.0, max_new_tokens=4 * SLICE_TOKENS)


def test_a_long_seeded_job_takes_turns_and_its_seed_alone_decides_its_tokens(engine):
    """A seeded job had run alone for its whole generation, every other request waiting behind it; it now
    takes its turn slice by slice, and its tokens are still those of its seed, whatever runs beside it."""
    alone = engine.submit(Job([5, 6, 7, 8], 2, SAMPLED_LONG, 7, None)).result(timeout=300)
    seeded = engine.submit(Job([5, 6, 7, 8], 2, SAMPLED_LONG, 7, None))
    wait_for_a_slice(engine)
    beside = engine.submit(Job([5, 6, 7, 8], 2, SAMPLED_LONG, None, None))  # same settings, no seed
    short = engine.submit(Job([9, 10], 1, Sampling(max_new_tokens=4), None, None))
    assert len(short.result(timeout=120)[0].completion_ids) <= 4
    assert not seeded.done(), "the short request waited for the whole seeded job"
    assert [r.completion_ids for r in seeded.result(timeout=300)] == [r.completion_ids for r in alone]
    assert len(beside.result(timeout=300)) == 2


def test_a_seeded_job_of_more_rows_than_max_batch_gives_the_same_tokens_every_time(engine):
    rows = engine.max_batch + 2
    first, again = (
        engine.submit(Job([1, 2], rows, Sampling(max_new_tokens=SLICE_TOKENS + 8), 5, None)) for _ in range(2)
    )
    assert [r.completion_ids for r in first.result(timeout=300)] == [
        r.completion_ids for r in again.result(timeout=300)
    ]
