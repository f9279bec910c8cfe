"""Prompt log-probs: `warmstart serve`'s legacy /v1/completions (echo + logprobs) and the RemoteScorer client.

A real server process over a real tiny model; every log-prob is checked against a forward pass of the
same model in this process.
"""

from __future__ import annotations

import socket
from dataclasses import replace

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from fake_api import FakeAPI
from warmstart.config import ApiConfig, PolicySpec
from warmstart.errors import WarmstartError
from warmstart.lm.chat import stop_token_ids
from warmstart.policies.openai_scoring import RemoteScorer, connect_scorer
from warmstart.serve.completions import (
    MAX_LOGPROB_ENTRIES,
    MAX_REQUEST_TOKENS,
    CompletionRequest,
    check_request_size,
)
from warmstart.serve.request import ApiError
from warmstart.types import Sampling

SENTENCE = "what is 3 plus 4? the answer is 7."


@pytest.fixture(scope="module")
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()


@pytest.fixture(scope="module")
def ids(model, tokenizer):
    """A sentence, a special token (a token-id prompt may hold any id of the vocabulary), and last the
    model's most likely next token, so that at least one token is sure to be among the top alternatives."""
    prefix = (
        tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
        + [tokenizer.eos_token_id]
        + tokenizer("7", add_special_tokens=False)["input_ids"]
    )
    with torch.no_grad():
        return prefix + [int(model(torch.tensor([prefix])).logits[0, -1].argmax())]


def direct_logprobs(model, ids: list[int]) -> torch.Tensor:
    """[len(ids) - 1, V]: row t-1 is the distribution of token t given the tokens before it."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), dim=-1)


def greedy(model, tokenizer, ids: list[int], steps: int) -> tuple[list[int], bool]:
    """What the server generates at temperature 0: (tokens before any stop token, stopped)."""
    stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    out: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            token = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
        if token in stops:
            return out, True
        out.append(token)
    return out, False


def test_echo_scores_every_prompt_token_in_one_request(client, model, tokenizer, ids):
    response = client.completions.create(model="tiny", prompt=ids, max_tokens=0, echo=True, logprobs=3)
    assert response.object == "text_completion" and response.id.startswith("cmpl-") and response.model == "tiny"
    [choice] = response.choices
    assert choice.text == tokenizer.decode(ids) and choice.finish_reason == "length"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (
        len(ids),
        0,
        len(ids),
    )
    lp = choice.logprobs
    assert lp.tokens == [tokenizer.decode([i]) for i in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    expected = direct_logprobs(model, ids)
    chosen = expected.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
    assert lp.token_logprobs[1:] == pytest.approx(chosen.tolist(), abs=1e-4)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(ids))]
    in_top = distinct = 0
    for t, top in enumerate(lp.top_logprobs[1:]):
        values, top_ids = expected[t].topk(3)
        # The 3 best, most likely first; two ids with one text (halves of a character, both U+FFFD) are one key.
        want: dict[str, float] = {}
        for i, value in zip(top_ids.tolist(), values.tolist()):
            want.setdefault(tokenizer.decode([i]), value)
        assert list(top) == list(want) and list(top.values()) == pytest.approx(list(want.values()), abs=1e-4)
        distinct += len(top) == 3
        if ids[t + 1] in top_ids.tolist():
            in_top += 1
            assert top[lp.tokens[t + 1]] >= lp.token_logprobs[t + 1] - 1e-5  # equal, unless a likelier id has its text
    assert in_top >= 1 and distinct >= len(ids) // 2
    assert next(iter(lp.top_logprobs[-1])) == lp.tokens[-1]  # the last token is the most likely one


def test_logprobs_0_lists_the_tokens_without_alternatives(client, ids):
    lp = client.completions.create(model="tiny", prompt=[ids], max_tokens=0, echo=True, logprobs=0).choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) and lp.token_logprobs[0] is None
    assert lp.top_logprobs == [None] + [{}] * (len(ids) - 1)


def test_a_string_prompt_scores_as_its_token_ids(client, tokenizer):
    by_text = client.completions.create(model="tiny", prompt=SENTENCE, max_tokens=0, echo=True, logprobs=1)
    by_ids = client.completions.create(
        model="tiny",
        prompt=tokenizer(SENTENCE, add_special_tokens=False)["input_ids"],
        max_tokens=0,
        echo=True,
        logprobs=1,
    )
    assert by_text.choices[0].text == SENTENCE
    assert by_text.choices[0].logprobs.tokens == by_ids.choices[0].logprobs.tokens
    assert by_text.choices[0].logprobs.token_logprobs == by_ids.choices[0].logprobs.token_logprobs
    assert by_text.usage.prompt_tokens == by_ids.usage.prompt_tokens


def test_generation_after_the_prompt_with_and_without_echo(client, model, tokenizer, ids):
    generated, stopped = greedy(model, tokenizer, ids, 6)
    assert generated, "greedy decoding should write at least one token before stopping"
    echoed = client.completions.create(model="tiny", prompt=ids, max_tokens=6, echo=True, logprobs=2, temperature=0)
    plain = client.completions.create(model="tiny", prompt=ids, max_tokens=6, logprobs=2, temperature=0)
    text = tokenizer.decode(generated, skip_special_tokens=True)
    assert plain.choices[0].text == text
    assert echoed.choices[0].text == tokenizer.decode(ids) + text
    assert plain.choices[0].finish_reason == echoed.choices[0].finish_reason == ("stop" if stopped else "length")
    assert plain.usage.completion_tokens == len(generated) + stopped
    expected = direct_logprobs(model, ids + generated)
    whole = expected.gather(-1, torch.tensor(ids[1:] + generated).unsqueeze(-1)).squeeze(-1).tolist()
    assert echoed.choices[0].logprobs.tokens == [tokenizer.decode([i]) for i in ids + generated]
    assert echoed.choices[0].logprobs.token_logprobs[1:] == pytest.approx(whole, abs=1e-4)
    assert plain.choices[0].logprobs.tokens == [tokenizer.decode([i]) for i in generated]
    assert plain.choices[0].logprobs.token_logprobs == pytest.approx(whole[len(ids) - 1 :], abs=1e-4)
    assert all(top is not None and len(top) == 2 for top in plain.choices[0].logprobs.top_logprobs)
    no_logprobs = client.completions.create(model="tiny", prompt=ids, max_tokens=6, echo=True, temperature=0)
    assert no_logprobs.choices[0].logprobs is None and no_logprobs.choices[0].text == echoed.choices[0].text


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_tokens": 0}, "max_tokens"),  # 0 only with echo
        ({"prompt": [5, 300]}, "prompt"),  # the tiny vocabulary has 300 ids
        ({"prompt": [-1]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": [[5, 6], [7, 300]]}, "prompt[1]"),  # several prompts: the bad one named
        ({"prompt": [[5, 6], []]}, "prompt[1]"),
        ({"n": 2}, "n"),
        ({"logprobs": 21}, "logprobs"),
        ({"suffix": "x"}, "suffix"),
        ({"logit_bias": {"5": 1}}, "logit_bias"),
    ],
)
def test_bad_requests_are_400_naming_the_parameter(client, options, named):
    request = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 1, **options}
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(**request)
    assert caught.value.param == named and named in caught.value.message


def test_remote_scorer_matches_a_forward_pass_in_order(base_url, model, tokenizer):
    sequences = [
        tokenizer(f"what is {a} plus {b}? the answer is {a + b}." * (1 + a % 3), add_special_tokens=False)["input_ids"]
        for a, b in [(1, 2), (9, 9), (4, 0), (12, 3), (2, 2)]
    ]
    assert len({len(s) for s in sequences}) >= 3
    scorer = connect_scorer(
        PolicySpec.parse(f"openai:tiny@{base_url}"),
        ApiConfig(concurrency=3, timeout_s=60, max_retries=0),
        "distill.teacher",
    )
    try:
        scored = scorer.score(sequences)
    finally:
        scorer.close()
    assert len(scored) == len(sequences)
    for ids, result in zip(sequences, scored):
        assert result.tokens == [tokenizer.decode([i]) for i in ids]
        assert result.logprobs[0] is None
        chosen = direct_logprobs(model, ids).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
        assert result.logprobs[1:] == pytest.approx(chosen.tolist(), abs=1e-4)


def test_connect_scorer_refuses_a_model_the_server_does_not_serve(base_url):
    with pytest.raises(WarmstartError, match="distill.teacher: .* does not serve model 'gpt-9'"):
        connect_scorer(PolicySpec.parse(f"openai:gpt-9@{base_url}"), ApiConfig(), "distill.teacher")


def test_a_server_without_prompt_logprobs_is_one_clear_error():
    with FakeAPI() as api:
        scorer = RemoteScorer("fake-model", f"{api.url}/v1", "x", timeout_s=10, concurrency=2, max_retries=0)
        with pytest.raises(WarmstartError) as caught:
            scorer.score([[1, 2, 3], [4, 5]])
        sent = api.log[0]["body"]
    message = str(caught.value)
    assert "\n" not in message
    assert "openai:fake-model" in message and api.url in message
    assert "does not return prompt logprobs (echo + logprobs on /v1/completions)" in message
    assert (sent["echo"], sent["logprobs"], sent["max_tokens"], sent["temperature"]) == (True, 0, 1, 0)
    assert sent["prompt"] in ([1, 2, 3], [4, 5])


def test_http_and_connection_failures_after_retries_are_one_line_errors():
    with FakeAPI() as api:
        api.faults = ["500", "500"]
        scorer = RemoteScorer("fake-model", f"{api.url}/v1", "x", timeout_s=10, concurrency=1, max_retries=1)
        with pytest.raises(WarmstartError, match=r"^openai:fake-model: HTTP 500 from .*fault 500") as caught:
            scorer.score([[1, 2, 3]])
        assert len(api.log) == 2  # the SDK retried once
    assert "\n" not in str(caught.value)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    scorer = RemoteScorer("fake-model", f"http://127.0.0.1:{port}/v1", "x", timeout_s=5, concurrency=1, max_retries=0)
    with pytest.raises(
        WarmstartError,
        match=r"^openai:fake-model: no usable answer from http://127\.0\.0\.1:\d+/v1: APIConnectionError",
    ):
        scorer.score([[1, 2]])


def test_a_served_teacher_scores_a_grpo_batch_as_the_local_teacher_does(base_url, model_dir, tokenizer):
    from warmstart.config import load_recipe
    from warmstart.distill.teacher import LocalTeacher, make_teacher

    recipe = load_recipe(None, [])
    remote = make_teacher(PolicySpec.parse(f"openai:tiny@{base_url}"), "grpo.teacher", recipe, tokenizer)
    local = LocalTeacher(str(model_dir), "grpo.teacher", tokenizer)
    rows = [
        tokenizer(text, add_special_tokens=False)["input_ids"] for text in (SENTENCE, "7 plus 8", "the answer is 15.")
    ]
    ids = torch.full((3, max(map(len, rows))), tokenizer.pad_token_id)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
    batch = {"input_ids": ids}
    got, want = remote.logprobs(batch, list(map(len, rows))), local.logprobs(batch, list(map(len, rows)))
    for r, row in enumerate(rows):  # the positions past a row's end are padding: neither is read there
        assert got[r, : len(row) - 1].tolist() == pytest.approx(want[r, : len(row) - 1].tolist(), abs=1e-4)


def test_on_policy_distillation_through_a_served_teacher(base_url, model_dir, tmp_path):
    """The student is the served model itself: every advantage is ~0 and the reverse KL ~0, through HTTP."""
    from warmstart.config import load_recipe
    from warmstart.runs.directory import RunDir
    from warmstart.stages import grpo

    recipe = load_recipe(
        None,
        [
            f"run.dir='{tmp_path}'",
            "tasks.train=20",
            f"grpo.init='{model_dir}'",
            f"grpo.teacher='openai:tiny@{base_url}'",
            "grpo.reward_weight=0",
            "grpo.steps=2",
            "grpo.tasks_per_step=2",
            "grpo.group_size=2",
            "grpo.max_new_tokens=12",
        ],
    )
    grpo.run(recipe)
    history = RunDir(recipe).manifest()["stages"]["grpo:student-grpo"]["history"]
    assert all(h["teacher_tokens"] > 0 and abs(h["reverse_kl"]) < 1e-4 for h in history)


def test_a_served_teacher_with_another_tokenizer_is_refused(base_url, tmp_path):
    from warmstart.config import load_recipe
    from warmstart.distill.teacher import make_teacher
    from warmstart.lm.tinymodel import train_tokenizer

    other = train_tokenizer(["zebra quartz " * 30], 300)
    remote = make_teacher(PolicySpec.parse(f"openai:tiny@{base_url}"), "grpo.teacher", load_recipe(None, []), other)
    ids = other("zebra quartz zebra", add_special_tokens=False)["input_ids"]
    with pytest.raises(WarmstartError, match="the server reads token id .* the student's tokenizer on both sides"):
        remote.logprobs({"input_ids": torch.tensor([ids])}, [len(ids)])


def test_several_prompts_in_one_request_answer_as_each_alone(client):
    prompts = [[5, 6, 7], [9, 10], [11, 12, 13, 14]]
    options = {"model": "tiny", "max_tokens": 5, "temperature": 0, "logprobs": 0}
    together = client.completions.create(prompt=prompts, **options)
    alone = [client.completions.create(prompt=p, **options) for p in prompts]
    assert [c.index for c in together.choices] == [0, 1, 2]
    for choice, single in zip(together.choices, alone):
        assert choice.text == single.choices[0].text
        assert choice.logprobs.token_logprobs == pytest.approx(single.choices[0].logprobs.token_logprobs, abs=1e-4)
    assert together.usage.prompt_tokens == sum(len(p) for p in prompts)
    assert together.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)


def test_a_request_past_the_answer_bound_is_a_400_naming_the_limit(client):
    # 100 echoed prompts of 500 ids with 20 alternatives: 1,050,000 log-probs, ~150 MB of Python objects for
    # one 200 KB body (1024 such prompts asked for 1.5 GB); now refused before anything is queued.
    prompts = [[5 + (i + j) % 200 for j in range(500)] for i in range(100)]
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="tiny", prompt=prompts, max_tokens=0, echo=True, logprobs=20)
    assert refused.value.param == "logprobs" and f"at most {MAX_LOGPROB_ENTRIES}" in refused.value.message
    # the same prompts with fewer alternatives are within it
    answer = client.completions.create(model="tiny", prompt=prompts[:2], max_tokens=0, echo=True, logprobs=20)
    assert len(answer.choices) == 2


def test_the_tokens_one_request_may_queue_are_bounded():
    request = CompletionRequest([[1] * 100] * 2, Sampling(max_new_tokens=MAX_REQUEST_TOKENS), False, None, [], None)
    with pytest.raises(ApiError, match=f"at most {MAX_REQUEST_TOKENS} in one request"):
        check_request_size(request, request.prompts)
    check_request_size(
        replace(request, sampling=Sampling(max_new_tokens=MAX_REQUEST_TOKENS // 2 - 100)), request.prompts
    )
