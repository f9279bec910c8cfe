"""`warmstart serve --request-timeout`: a request not answered within its time, counted from when it is
queued, is answered 504 (code "timeout"), whether its time ran out in the queue or while it generated, and
leaves nothing behind in the engine.

No clock is raced: the timeout (1 ms) is shorter than the engine's wait for a batch to gather (5 ms) before
it admits anything, so every request's time has run out when the engine first sees it. That a running
request past its time leaves the batch while the others go on is tested on the engine (test_engine.py),
where its clock can be set rather than raced.
"""

from __future__ import annotations

import json

import openai
import pytest
from serve_helpers import greedy, http, metric, running_server, scrape
from transformers import AutoModelForCausalLM

from warmstart.serve.engine import SLICE_TOKENS

SENTENCE = "what is 3 plus 4? the answer is"


@pytest.fixture(scope="module")
def base_url(model_dir, tmp_path_factory):
    with running_server(model_dir, tmp_path_factory.mktemp("serve-timeout-log"), "--request-timeout", "0.001") as url:
        yield url


def ask(client, prompt: list[int], max_tokens: int, **options):
    return client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0, **options)


def test_every_request_past_its_time_is_a_504_short_ones_included(client, base_url, model_dir, tokenizer):
    # A short request (8 tokens, one slice) was served: its time was checked only between its slices, so
    # the time it waited to be admitted never counted, and under load that was any length.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    long_tokens = 3 * SLICE_TOKENS
    assert len(greedy(model, tokenizer, prompt, long_tokens)) == long_tokens  # it never stops early
    timed_out = metric(scrape(base_url), "warmstart_requests_total", endpoint="/v1/completions", status="504")
    for max_tokens, options in [(long_tokens, {}), (long_tokens, {"seed": 5}), (8, {}), (8, {"seed": 5})]:
        with pytest.raises(openai.APIStatusError) as caught:
            ask(client, prompt, max_tokens, **options)
        assert caught.value.status_code == 504 and caught.value.code == "timeout"
        assert caught.value.body["type"] == "server_error" and "--request-timeout" in caught.value.message
    samples = scrape(base_url)
    assert metric(samples, "warmstart_rows_running") == 0 and metric(samples, "warmstart_queue_depth") == 0
    assert metric(samples, "warmstart_requests_total", endpoint="/v1/completions", status="504") - timed_out == 4


def test_a_request_of_many_prompts_times_out_once_not_once_per_prompt(client, base_url, tokenizer):
    # 200 prompts, each needing 3 slices: the first of them to time out fails the request. The handler used
    # to wait for every prompt's job to spend a slice and time out in turn, 13 slices of work for nobody;
    # with a timeout of seconds that was minutes before the 504 came (measured: 52 s for
    # --request-timeout 2) and every other request queued behind them.
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    health = base_url.removesuffix("/v1") + "/health"
    before = json.loads(http("GET", health)[2])["batches"]
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, [prompt] * 200, 3 * SLICE_TOKENS)
    assert caught.value.status_code == 504 and caught.value.code == "timeout"
    slices = json.loads(http("GET", health)[2])["batches"] - before
    assert slices <= 5, f"{slices} slices run for a request that timed out"
    samples = scrape(base_url)
    assert metric(samples, "warmstart_rows_running") == 0 and metric(samples, "warmstart_queue_depth") == 0
