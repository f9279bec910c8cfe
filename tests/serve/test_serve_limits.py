"""`warmstart serve` admission: requests that cannot fit the model's context, or are too large to read, are
refused at once by a real server process (the tiny model: a context of 512 tokens), which keeps serving.

The one timed assertion is a safety bound (5 s) far above the real figure (tens of ms), so that a loaded
machine does not fail it; what it guards against is the minutes an over-long prompt used to take.
"""

from __future__ import annotations

import http.client
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import openai
import pytest

from warmstart.serve.admission import ContextLimit, context_window

CONTEXT = 512  # TinyModelConfig.max_positions, the tests' tiny model
QUESTION = [{"role": "user", "content": "what is 2 plus 3?"}]
SAFETY_BOUND_S = 5.0


def _ask(client, messages=QUESTION, **options):
    return client.chat.completions.create(model="tiny", messages=messages, **options)


def _refusal(call) -> tuple[openai.APIStatusError, float]:
    start = time.perf_counter()
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value, time.perf_counter() - start


def test_over_long_prompt_is_refused_at_once_and_the_server_keeps_serving(client):
    # ~3 MB of text: under the body limit, thousands of times the context, and minutes of work for the engine.
    huge = [{"role": "user", "content": "what is 3 plus 4? " * 170_000}]
    error, seconds = _refusal(lambda: _ask(client, huge, max_tokens=16))
    print(f"over-long prompt refused in {seconds * 1000:.0f} ms")
    assert isinstance(error, openai.BadRequestError) and seconds < SAFETY_BOUND_S
    assert error.code == "context_length_exceeded"
    assert error.body["param"] == "messages" and error.body["type"] == "invalid_request_error"
    assert str(CONTEXT) in error.body["message"]
    assert _ask(client, max_tokens=4).usage.completion_tokens <= 4


def test_prompt_just_over_the_context_names_both_numbers(client, tokenizer):
    # Short enough to be tokenized: refused by its token count, which the message gives with the context.
    long = [{"role": "user", "content": "what is 3 plus 4? " * 60}]
    error, _ = _refusal(lambda: _ask(client, long, max_tokens=400))
    assert isinstance(error, openai.BadRequestError) and error.code == "context_length_exceeded"
    message = error.body["message"]
    assert f"context length is {CONTEXT} tokens" in message and "400 for the completion" in message
    asked = int(message.split("asks for ")[1].split(" tokens")[0])
    assert asked > CONTEXT


def test_max_tokens_beyond_the_context_is_refused(client):
    error, _ = _refusal(lambda: _ask(client, max_tokens=CONTEXT + 1))
    assert isinstance(error, openai.BadRequestError)
    assert error.code == "context_length_exceeded" and error.body["param"] == "max_tokens"
    assert f"{CONTEXT + 1}" in error.body["message"] and f"{CONTEXT} tokens" in error.body["message"]


def test_n_beyond_the_batch_is_refused(client):
    error, _ = _refusal(lambda: _ask(client, n=10_000, max_tokens=4))
    assert isinstance(error, openai.BadRequestError) and error.body["param"] == "n"


def test_default_max_tokens_is_fitted_to_the_room_left(client, tokenizer):
    # ~440 prompt tokens leave less room than the default 256: the completion is cut there, not refused.
    prompt = [{"role": "user", "content": "what is 3 plus 4? " * 48}]
    response = _ask(client, prompt, temperature=0)
    assert response.usage.total_tokens <= CONTEXT
    assert response.usage.prompt_tokens > CONTEXT - 256


def test_legacy_completion_prompt_beyond_the_context_is_refused(client):
    error, _ = _refusal(lambda: client.completions.create(model="tiny", prompt=[5] * CONTEXT, max_tokens=1))
    assert isinstance(error, openai.BadRequestError)
    assert error.code == "context_length_exceeded" and error.body["param"] == "prompt"


def test_body_over_the_byte_limit_is_413_through_the_sdk(client):
    # ~5 MB: over the 4 MiB default. The server reads and drops it, so the SDK sees the 413, not a reset.
    huge = [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]
    error, _ = _refusal(lambda: _ask(client, huge, max_tokens=4))
    assert error.status_code == 413 and error.code == "request_too_large"
    assert _ask(client, max_tokens=2).usage.completion_tokens <= 2


def test_body_over_the_byte_limit_is_refused_before_it_is_sent(base_url):
    # A declared length alone decides: the server answers without waiting for the body.
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/chat/completions")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(10**9))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and b"request_too_large" in response.read()
    finally:
        connection.close()


def test_context_window_prefers_the_models_config():
    tokenizer = SimpleNamespace(model_max_length=2048)
    assert context_window(SimpleNamespace(max_position_embeddings=512), tokenizer) == 512
    assert context_window(SimpleNamespace(), tokenizer) == 2048
    assert context_window(SimpleNamespace(), SimpleNamespace(model_max_length=int(1e30))) is None


def test_character_bound_refuses_only_texts_no_tokenization_could_fit():
    limit = ContextLimit(tokens=10, chars_per_token=4)
    limit.check_chars(40, "messages")  # 10 tokens of 4 characters could spell it
    with pytest.raises(Exception, match="context length is 10 tokens"):
        limit.check_chars(41, "messages")
