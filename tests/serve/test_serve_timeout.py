"""`warmstart serve --request-timeout`: a request still generating after a slice that ends past its time
is answered 504 (code "timeout") and its rows leave the batch; the others are served as if it never came.

No clock is raced: the timeout (1 ms) is shorter than any slice, and it is checked between slices only,
so a request that finishes in its first slice is always served and one that needs more never is.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

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


def test_long_requests_time_out_and_short_ones_beside_them_are_served(client, base_url, model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    long_tokens = 3 * SLICE_TOKENS
    assert len(greedy(model, tokenizer, prompt, long_tokens)) == long_tokens  # it never stops early
    timed_out = metric(scrape(base_url), "warmstart_requests_total", endpoint="/v1/completions", status="504")
    with ThreadPoolExecutor(6) as pool:
        long = [pool.submit(ask, client, prompt, long_tokens) for _ in range(3)]
        seeded = pool.submit(ask, client, prompt, long_tokens, seed=5)  # runs alone, also in slices
        short = [pool.submit(ask, client, prompt, 8) for _ in range(2)]
        for future in [*long, seeded]:
            with pytest.raises(openai.APIStatusError) as caught:
                future.result()
            assert caught.value.status_code == 504 and caught.value.code == "timeout"
            assert "--request-timeout" in caught.value.message
        expected = tokenizer.decode(greedy(model, tokenizer, prompt, 8), skip_special_tokens=True)
        assert [f.result().choices[0].text for f in short] == [expected] * 2
    samples = scrape(base_url)
    assert metric(samples, "warmstart_rows_running") == 0 and metric(samples, "warmstart_queue_depth") == 0
    assert metric(samples, "warmstart_requests_total", endpoint="/v1/completions", status="504") - timed_out == 4
    assert ask(client, prompt, 4).choices[0].text == tokenizer.decode(greedy(model, tokenizer, prompt, 4))


def test_a_request_of_many_prompts_times_out_once_not_once_per_prompt(client, base_url, tokenizer):
    # 200 prompts, each needing 3 slices: its first slice (16 rows) times out, and with it the request.
    # The handler used to wait for every prompt's job to spend a slice and time out in turn, 13 slices of
    # work for nobody; with a timeout of seconds that was minutes before the 504 came (measured: 52 s for
    # --request-timeout 2) and every other request queued behind them.
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    health = base_url.removesuffix("/v1") + "/health"
    before = json.loads(http("GET", health)[2])["batches"]
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, [prompt] * 200, 3 * SLICE_TOKENS)
    assert caught.value.status_code == 504 and caught.value.code == "timeout"
    assert ask(client, prompt, 4).choices[0].text  # served after it: the abandoned prompts hold nothing up
    slices = json.loads(http("GET", health)[2])["batches"] - before
    assert slices <= 5, f"{slices} slices run for a request that timed out in its first (and one more request)"
    samples = scrape(base_url)
    assert metric(samples, "warmstart_rows_running") == 0 and metric(samples, "warmstart_queue_depth") == 0
