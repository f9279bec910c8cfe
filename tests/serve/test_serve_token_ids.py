"""`return_token_ids` (vLLM's extension) on /v1/completions and /v1/chat/completions, through the `openai`
SDK (`extra_body`; the extra fields read from `model_extra`): the ids decode to the text, and with
`logprobs` there is one log-prob per id, the end-of-turn token included, equal to a forward pass here."""

from __future__ import annotations

import pytest
from serve_helpers import chosen_logprobs, greedy
from transformers import AutoModelForCausalLM

from warmstart.lm.chat import parse_completion, stop_token_ids

SENTENCE = "what is 3 plus 4? the answer is"
IDS = {"return_token_ids": True}


@pytest.fixture(scope="module")
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()


@pytest.fixture(scope="module")
def stops(model, tokenizer) -> list[int]:
    return stop_token_ids(tokenizer, model.generation_config.eos_token_id)


def test_completion_token_ids_decode_to_the_text_and_match_greedy(client, model, tokenizer):
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    response = client.completions.create(
        model="tiny", prompt=SENTENCE, max_tokens=12, temperature=0, logprobs=2, extra_body=IDS
    )
    [choice] = response.choices
    token_ids, prompt_ids = choice.model_extra["token_ids"], choice.model_extra["prompt_token_ids"]
    assert prompt_ids == prompt and token_ids == greedy(model, tokenizer, prompt, 12)
    assert tokenizer.decode(token_ids, skip_special_tokens=True) == choice.text
    assert response.usage.completion_tokens == len(token_ids)
    lp = choice.logprobs
    assert lp.tokens == [tokenizer.decode([t]) for t in token_ids]
    assert lp.token_logprobs == pytest.approx(chosen_logprobs(model, prompt + token_ids, len(prompt)), abs=1e-4)


def test_the_end_of_turn_token_is_listed_and_scored(client, model, tokenizer, stops):
    # The tiny model's greedy continuation of its end-of-turn token is that token again: generation stops
    # on its first token, which is listed, scored, and left out of the text.
    prompt = [stops[0]]
    assert greedy(model, tokenizer, prompt, 4) == [stops[0]]
    with_ids = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=4, temperature=0, logprobs=0, extra_body=IDS
    ).choices[0]
    assert with_ids.model_extra["token_ids"] == [stops[0]] and with_ids.finish_reason == "stop"
    assert with_ids.text == ""
    assert with_ids.logprobs.token_logprobs == pytest.approx(chosen_logprobs(model, prompt * 2, 1), abs=1e-4)
    # Without the flag nothing changes: the end-of-turn token has no log-prob entry, and no ids are returned.
    plain = client.completions.create(model="tiny", prompt=prompt, max_tokens=4, temperature=0, logprobs=0).choices[0]
    assert plain.logprobs.token_logprobs == [] and "token_ids" not in (plain.model_extra or {})


def test_chat_token_ids_with_sampled_turns_that_end(client, model, tokenizer, stops):
    # Sampled (seeded) turns long enough that most end on the end-of-turn token; each is checked whole.
    response = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "what is 2 plus 3?"}],
        n=8,
        max_tokens=400,
        seed=7,
        logprobs=True,
        extra_body=IDS,
    )
    prompt = response.model_extra["prompt_token_ids"]
    assert response.usage.prompt_tokens == len(prompt)
    ended = 0
    for choice in response.choices:
        token_ids = choice.model_extra["token_ids"]
        ended += choice.finish_reason == "stop"
        assert (token_ids[-1] in stops) == (choice.finish_reason == "stop")
        text = tokenizer.decode(token_ids, skip_special_tokens=True)
        assert choice.message.content == parse_completion(text).content
        entries = choice.logprobs.content
        assert [e.token for e in entries] == [tokenizer.decode([t]) for t in token_ids]
        expected = chosen_logprobs(model, prompt + token_ids, len(prompt))
        assert [e.logprob for e in entries] == pytest.approx(expected, abs=1e-4)
    assert ended >= 1, "no sampled turn ended: the end-of-turn case went unchecked"
    assert response.usage.completion_tokens == sum(len(c.model_extra["token_ids"]) for c in response.choices)


def test_chat_without_the_flag_has_no_ids(client):
    response = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, logprobs=True
    )
    assert "prompt_token_ids" not in (response.model_extra or {})
    assert "token_ids" not in (response.choices[0].model_extra or {})
