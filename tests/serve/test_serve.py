"""`warmstart serve`: a real server process over a real tiny model, spoken to with the official `openai` SDK.

The tiny model is untrained, so its text is noise; the tests check what the server promises about that
text (counts, cuts, seeds, log-probs, batching, errors), not what it says.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from transformers import AutoModelForCausalLM

from warmstart.lm.chat import render_prompt
from warmstart.serve.request import parse_messages
from warmstart.serve.response import Completion, response_json, stream_chunks
from warmstart.types import Message

QUESTION = [{"role": "user", "content": "what is 2 plus 3?"}]
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}
CALL_TEXT = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1+2"}}\n</tool_call>'


def _ask(client, **options):
    return client.chat.completions.create(model="tiny", messages=QUESTION, **options)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_models_lists_the_directory_name(client):
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_usage_counts_match_the_tokenizer_and_max_tokens_cuts(client, tokenizer):
    response = _ask(client, max_tokens=5, seed=1)
    prompt = render_prompt(tokenizer, [Message(role="user", content=QUESTION[0]["content"])])
    assert response.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + 5
    assert response.object == "chat.completion" and response.model == "tiny"


def test_n_choices_each_counted(client):
    response = _ask(client, n=3, max_tokens=6, seed=2, logprobs=True)
    assert [c.index for c in response.choices] == [0, 1, 2]
    # Every generated token is counted: the listed ones, plus the end-of-turn token where the turn ended.
    counted = sum(len(c.logprobs.content) + (c.finish_reason == "stop") for c in response.choices)
    assert response.usage.completion_tokens == counted
    assert all(c.logprobs.content[0].top_logprobs == [] for c in response.choices if c.logprobs.content)


def test_stop_string_cuts_the_text(client):
    full = _ask(client, max_tokens=24, seed=3)
    text = full.choices[0].message.content
    assert len(text) >= 6, "the seed should give a text long enough to cut"
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = _ask(client, max_tokens=24, seed=3, stop=[stop, "never-written"])
    assert cut.choices[0].message.content == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < full.usage.completion_tokens


def test_logprobs_top_alternatives_and_seed(client):
    first = _ask(client, max_tokens=12, seed=4, logprobs=True, top_logprobs=3)
    again = _ask(client, max_tokens=12, seed=4, logprobs=True, top_logprobs=3)
    assert first.choices[0].message.content == again.choices[0].message.content
    tokens = first.choices[0].logprobs.content
    assert tokens
    for token in tokens:
        alternatives = [a.logprob for a in token.top_logprobs]
        assert token.logprob <= 0
        assert 1 <= len(alternatives) <= 3
        assert alternatives == sorted(alternatives, reverse=True)
        assert token.logprob <= alternatives[0] + 1e-5
        # the token's own bytes (a part of a character among them reads as U+FFFD in its text)
        assert bytes(token.bytes).decode("utf-8", errors="replace") == token.token


def test_greedy_tokens_are_the_top_alternatives(client):
    response = _ask(client, max_tokens=10, temperature=0, logprobs=True, top_logprobs=2)
    for token in response.choices[0].logprobs.content:
        assert token.token == token.top_logprobs[0].token
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob, abs=1e-4)


def _first_token_top(model, tokenizer, question: str, k: int) -> list[float]:
    """The k best log-probs of the first reply token, from a forward pass in this process."""
    prompt = render_prompt(tokenizer, [Message(role="user", content=question)])
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return torch.log_softmax(model(ids).logits[0, -1], dim=-1).topk(k).values.tolist()


def test_stream_reassembles_to_the_same_text(client):
    whole = _ask(client, max_tokens=16, seed=5)
    chunks = list(_ask(client, max_tokens=16, seed=5, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        whole.choices[0].finish_reason
    ]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_concurrent_requests_are_batched(client, base_url, model_dir, tokenizer):
    # Prompts of different lengths share batches, so rows are left-padded: their log-probs must still be
    # those of each prompt alone (this fails if the padding shifted positions or the log-probs were read
    # one token off).
    questions = [f"what is {i} plus {'1' * i}?" for i in range(8)]

    def ask(question: str):
        # Greedy: deterministic (an untrained model sometimes ends at once when sampling, leaving no token to check).
        return client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": question}],
            max_tokens=8,
            temperature=0,
            logprobs=True,
            top_logprobs=3,
        )

    before = _get_json(base_url.removesuffix("/v1") + "/health")
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(ask, questions))
    after = _get_json(base_url.removesuffix("/v1") + "/health")
    assert after["requests"] - before["requests"] == 8
    assert after["batches"] - before["batches"] < 8
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    checked = [
        (q, r) for q, r in zip(questions, responses) if r.choices[0].logprobs.content
    ]  # an answer that ended at once lists no token
    assert len(checked) >= 4
    for question, response in checked:
        first = response.choices[0].logprobs.content[0]
        assert [a.logprob for a in first.top_logprobs] == pytest.approx(
            _first_token_top(model, tokenizer, question, 3), abs=1e-4
        )


def test_tool_conversation_renders_as_warmstart_renders_it(client, tokenizer):
    messages = [
        {"role": "user", "content": "what is 1+2?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "1+2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
    ]
    response = client.chat.completions.create(model="tiny", messages=messages, tools=[CALCULATOR], max_tokens=4, seed=6)
    prompt = render_prompt(tokenizer, parse_messages(messages), [CALCULATOR])
    assert "<tool_call>" in prompt and "calculator" in prompt
    assert response.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_generated_tool_call_becomes_an_openai_tool_call():
    text = f"<think>\nadd them\n</think>\n{CALL_TEXT}"
    response = ChatCompletion.model_validate(
        response_json("tiny", [Completion(text, 30, "stop", None)], 10, tools_given=True)
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.model_extra["reasoning_content"] == "add them"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "calculator" and json.loads(call.function.arguments) == {"expression": "1+2"}
    # Round trip: the call, sent back as a conversation, renders as the text the model wrote.
    back = parse_messages([{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]}])
    assert CALL_TEXT + "<|im_end|>" in template_text(back)


def template_text(messages) -> str:
    from warmstart.lm.chat import template_messages
    from warmstart.lm.tinymodel import train_tokenizer

    return train_tokenizer(["x"], 300).apply_chat_template(template_messages(messages), tokenize=False)


def test_tool_calls_only_with_tools_and_only_when_they_parse():
    without_tools = response_json("tiny", [Completion(CALL_TEXT, 30, "stop", None)], 10, tools_given=False)["choices"][
        0
    ]
    assert without_tools["message"]["content"] == CALL_TEXT and without_tools["finish_reason"] == "stop"
    broken = '<tool_call>\n{"name": "calculator", "arguments": \n</tool_call>'
    unparsed = response_json("tiny", [Completion(broken, 30, "stop", None)], 10, tools_given=True)["choices"][0]
    assert unparsed["message"]["content"] == broken and "tool_calls" not in unparsed["message"]


def test_stream_chunks_accumulate_to_the_response():
    # The SDK's own accumulator (behind `client.chat.completions.stream`) must rebuild every part.
    text = f"<think>\nadd them\n</think>\nsure, {CALL_TEXT}"
    logprobs = [
        {
            "token": "s",
            "logprob": -1.5,
            "bytes": [115],
            "top_logprobs": [{"token": "s", "logprob": -1.5, "bytes": [115]}],
        }
    ]
    response = response_json("tiny", [Completion(text, 30, "stop", logprobs)], 10, tools_given=True)
    state = ChatCompletionStreamState()
    for chunk in stream_chunks(response, include_usage=True):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    rebuilt, expected = state.get_final_completion(), ChatCompletion.model_validate(response)
    assert rebuilt.usage == expected.usage
    [choice], [want] = rebuilt.choices, expected.choices
    assert (
        (choice.finish_reason, choice.message.content)
        == (want.finish_reason, want.message.content)
        == ("tool_calls", "sure,")
    )
    assert choice.message.model_extra["reasoning_content"] == "add them"
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        (c.id, c.function.name, c.function.arguments) for c in want.message.tool_calls
    ]
    assert choice.logprobs == want.logprobs


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=QUESTION)
    assert caught.value.code == "model_not_found"


def test_bad_requests_are_400_and_the_server_lives_on(client, base_url):
    request = urllib.request.Request(
        f"{base_url}/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert "not valid JSON" in json.loads(caught.value.read())["error"]["message"]
    # What the SDK never sends but other clients do: a lone surrogate (JSON's \ud800 escape), a body nested
    # deeper than any parser goes. A 400 each, never a 500 with a traceback in the server's log.
    surrogate = b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800 abc"}], "max_tokens": 2}'
    deep = b'{"model": "tiny", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for path, body, why in [
        ("chat/completions", surrogate, "not valid Unicode"),
        (
            "completions",
            surrogate.replace(b'"messages": [{"role": "user", "content": ', b'"prompt": ').replace(b"}], ", b", "),
            "not valid Unicode",
        ),
        ("chat/completions", deep, "nested too deeply"),
    ]:
        request = urllib.request.Request(f"{base_url}/{path}", data=body, headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code == 400 and why in json.loads(caught.value.read())["error"]["message"], path
    for options, named in [
        ({"temperature": 3}, "temperature"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ]:
        with pytest.raises(openai.BadRequestError, match=named):
            _ask(client, **options)
    assert _ask(client, max_tokens=2).usage.completion_tokens <= 2


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-6])
def test_a_temperature_too_small_to_divide_by_samples_greedily(client, temperature):
    # The logits divided by 1e-300 overflow float32: the softmax was NaN and the text whatever a NaN
    # distribution draws. As vLLM does, a temperature under 1e-5 is greedy, the limit it tends to.
    greedy = _ask(client, temperature=0, max_tokens=16, logprobs=True)
    tiny = _ask(client, temperature=temperature, max_tokens=16, logprobs=True)
    assert [t.token for t in tiny.choices[0].logprobs.content] == [t.token for t in greedy.choices[0].logprobs.content]


def test_tool_choice_null_is_the_default(client):
    # What clients that write every field send when the caller gave none; only "auto" used to pass.
    answer = _ask(client, max_tokens=2, extra_body={"tool_choice": None})
    assert answer.usage.completion_tokens <= 2
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        _ask(client, max_tokens=2, tool_choice="required")


def test_missing_model_dir_is_one_error_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "serve", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: serve: no model directory or .gguf file at {tmp_path / 'absent'}"
    ]


def test_a_generate_stage_with_this_server_as_the_teacher(base_url, tmp_path, caplog):
    """The whole path a user takes: `openai:MODEL@URL` of a `warmstart serve` process as the teacher."""
    from helpers import small_recipe
    from warmstart.runs.jsonl import read_records
    from warmstart.stages import generate
    from warmstart.types import Trajectory

    def served_requests() -> int:
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health") as response:
            return json.loads(response.read())["requests"]

    recipe = small_recipe(
        tmp_path,
        f"generate.teacher='openai:tiny@{base_url}'",
        "generate.max_new_tokens=16",
        "api.send_seed=false",
        train=6,
    )
    before = served_requests()
    with caplog.at_level("INFO"):
        out = generate.run(recipe)
    # The backend could give top-k log-probs for sparse KD; nobody asked, and the stage says so.
    assert "can return top-k log-probs but api.top_logprobs = 0" in caplog.text
    records = read_records(out, Trajectory)
    assert len(records) == 6 and all(r.error is None and r.verdict is not None for r in records)
    assert all(r.usage[0].tokens_in > 0 and r.provenance.provider == "openai" for r in records)
    costs = json.loads((tmp_path / "costs.json").read_text())
    first = costs["stages"]["generate:teacher"]["api"]
    assert first["requests_sent"] == 6 + first["retries"] and served_requests() - before == first["requests_sent"]
    assert costs["total"]["usd"] is None and costs["total"]["unknown_price_models"] == ["tiny"]  # flagged, not free
    out.unlink()
    (tmp_path / "manifest.json").unlink()
    sent_before_rerun = served_requests()
    generate.run(recipe)  # replies that stopped cleanly come from the cache; cut ones are asked again
    cut = sum(r.finish_reason == "length" for r in records)
    rerun = json.loads((tmp_path / "costs.json").read_text())["stages"]["generate:teacher"]["api"]
    # (a re-asked reply the tiny model ends at once is refused as empty and asked again: a retry, counted)
    assert rerun["cache_hits"] == 6 - cut and rerun["requests_sent"] == cut + rerun["retries"]
    assert served_requests() - sent_before_rerun == rerun["requests_sent"]
