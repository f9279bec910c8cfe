"""api.deadline_s counts a request's own time, not its waits for a free slot (api.concurrency) or the rate
limits, as docs/teachers.md says: a retry queued behind a slow request was sent with what little was left of
the deadline, abandoned at once (the provider may still bill it), and the error named api.timeout_s, which
had not ended it."""

from __future__ import annotations

import re
import time

from scripted_api import Scripted
from test_api_faults import recipe_for, rollouts


def test_a_retry_queued_behind_a_slow_request_is_sent_with_its_time_whole(tmp_path):
    def busy_then_slow(path: str, body: dict, n: int):
        if n == 0:
            return {"status": 503, "body": {"error": {"message": "busy"}}}
        time.sleep(2.8 if n == 1 else 0.5)  # the other task holds the only slot; then a normal answer
        return None

    settings = ["api.timeout_s=10", "api.concurrency=1", "api.backoff_s=0.01", "api.deadline_s=3"]
    with Scripted(busy_then_slow) as api:
        first, second = rollouts(recipe_for(tmp_path, api, *settings), n=2)
    assert first.error is None and second.error is None and len(api.log) == 3


def test_a_try_the_deadline_ended_names_the_deadline_not_api_timeout_s(tmp_path):
    def busy_then_too_slow(path: str, body: dict, n: int):
        if n == 0:
            return {"status": 503, "body": {"error": {"message": "busy"}}}
        time.sleep(4)
        return None

    settings = ["api.timeout_s=10", "api.backoff_s=0.01", "api.deadline_s=2.5"]
    with Scripted(busy_then_too_slow) as api:
        [failed] = rollouts(recipe_for(tmp_path, api, *settings))
    assert re.search(r"no answer within the 2\.\d s left before api\.deadline_s=2\.5", failed.error), failed.error
    assert "api.timeout_s" not in failed.error and len(api.log) == 2
