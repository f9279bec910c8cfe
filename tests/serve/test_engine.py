"""The serve engine's continuous batching: a short request that arrives while long ones run joins at the
next slice and finishes first; long ones still get every token; seeded jobs stay reproducible."""

from __future__ import annotations

import time

import pytest
from transformers import AutoModelForCausalLM

from warmstart.serve.engine import SLICE_TOKENS, AdapterGone, BatchEngine, Control, Job
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
