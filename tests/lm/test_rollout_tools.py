"""Multi-turn tool use: the rollout loop's tokens and loss mask, tool-call parsing and its errors.

The policy here is a scripted stand-in for a model (`ScriptedModel`): it returns chosen token ids from
`generate`, so that the loop's bookkeeping can be checked token by token against what SFT renders.
Real models run the same loop in test_calculator.py.
"""

from __future__ import annotations

import random

import pytest
import torch

from warmstart.envs.calculator import Calculator
from warmstart.lm.chat import parse_completion, render_for_training, template_messages
from warmstart.lm.rollout import run_episodes
from warmstart.lm.tinymodel import train_tokenizer
from warmstart.lm.toolcalls import call_error, split_tool_calls
from warmstart.types import Message, Sampling, ToolCall, ToolFunction

ENV = Calculator()
TOOLS = list(ENV.tools)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["user assistant tool calculator expression Answer: <tool_call> </tool_call>"] * 4, 320)


class ScriptedModel:
    """Answers turn n of a conversation with `replies[user prompt][n]` (text), as token ids."""

    def __init__(self, tokenizer, replies: dict[str, list[str]]):
        self.tokenizer, self.replies = tokenizer, replies

    def parameters(self):  # where a real model's weights are: the CPU
        return iter([torch.zeros(1)])

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **_):
        rows = []
        for ids, keep in zip(input_ids.tolist(), attention_mask.tolist()):
            text = self.tokenizer.decode([t for t, k in zip(ids, keep) if k])
            turn = text.count("<|im_start|>assistant") - 1
            prompt = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
            reply = self.tokenizer(self.replies[prompt][turn] + "<|im_end|>", add_special_tokens=False)["input_ids"][
                :max_new_tokens
            ]
            rows.append(ids + reply + [pad_token_id] * (max_new_tokens - len(reply)))
        return torch.tensor(rows)


def episodes_for(tokenizer, tasks, replies, max_turns=4, max_new_tokens=200):
    model = ScriptedModel(tokenizer, replies)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return run_episodes(
        model,
        tokenizer,
        ENV,
        [(t, 0) for t in tasks],
        Sampling(1.0, 1.0, max_new_tokens),
        stop,
        seed=0,
        max_turns=max_turns,
    )


def assistant_texts(tokenizer, trajectory_messages) -> list[str]:
    """Each assistant turn as its template renders it, end-of-turn token included."""
    out = []
    for d in template_messages(trajectory_messages):
        if d["role"] == "assistant":
            one = tokenizer.apply_chat_template([d], tokenize=False)
            out.append(one.split("<|im_start|>assistant\n", 1)[1])
    return out


def masked_runs(tokenizer, ids: list[int], mask: list[int]) -> list[str]:
    runs, current = [], []
    for token, m in zip(ids + [None], mask + [0]):
        if m:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs


def test_a_multi_turn_teacher_conversation_is_masked_token_by_token(tokenizer):
    task = next(t for t in ENV.tasks("train", 50, 0) if t.meta["size"] == "large")
    trajectory = ENV.reference(task, random.Random(0))
    assert [m.role for m in trajectory.messages] == ["user", "assistant", "tool", "assistant"]
    rendered = render_for_training(tokenizer, trajectory.messages, TOOLS)
    # Every token is either the policy's (mask 1) or not; the masked runs are exactly the two assistant turns.
    assert masked_runs(tokenizer, rendered.input_ids, rendered.loss_mask) == assistant_texts(
        tokenizer, trajectory.messages
    )
    tool_result = trajectory.messages[2].content
    unmasked = tokenizer.decode([t for t, m in zip(rendered.input_ids, rendered.loss_mask) if not m])
    assert f"<|im_start|>tool\n{tool_result}<|im_end|>" in unmasked and task.prompt[0].content in unmasked


def test_rollout_tokens_and_mask_equal_what_sft_renders(tokenizer):
    tasks = ENV.tasks("train", 6, 0)
    references = {t.id: ENV.reference(t, random.Random(t.id)) for t in tasks}
    replies = {
        t.prompt[0].content: [
            d["content"] if "tool_calls" not in d else parse_back(tokenizer, d)
            for d in template_messages(references[t.id].messages)
            if d["role"] == "assistant"
        ]
        for t in tasks
    }
    for task, episode in zip(tasks, episodes_for(tokenizer, tasks, replies)):
        expected = references[task.id]
        assert episode.messages == expected.messages  # tool results came from the environment's step
        rendered = render_for_training(tokenizer, expected.messages, TOOLS)
        assert episode.ids == rendered.input_ids
        assert episode.policy_mask == rendered.loss_mask
        assert episode.finish_reason == "stop"
        assert len(episode.usage) == sum(m.role == "assistant" for m in expected.messages)


def test_a_groups_samples_of_one_task_each_keep_their_own_tokens(tokenizer):
    """A task given several times (a GRPO group) is rendered once; each sample's ids still grow alone."""
    task = next(t for t in ENV.tasks("train", 50, 0) if t.meta["size"] == "large")
    reference = ENV.reference(task, random.Random(0))
    replies = {
        task.prompt[0].content: [
            d["content"] if "tool_calls" not in d else parse_back(tokenizer, d)
            for d in template_messages(reference.messages)
            if d["role"] == "assistant"
        ]
    }
    model = ScriptedModel(tokenizer, replies)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    group = run_episodes(model, tokenizer, ENV, [(task, i) for i in range(3)], Sampling(1.0, 1.0, 200), stop, 0, 4)
    expected = render_for_training(tokenizer, reference.messages, TOOLS)
    assert len(reference.messages) == 4  # two policy turns: each sample's ids were appended to twice
    for episode in group:
        assert episode.ids == expected.input_ids
        assert episode.policy_mask == expected.loss_mask
    assert len({id(e.ids) for e in group}) == 3


def parse_back(tokenizer, assistant_dict) -> str:
    """The text a model would write for an assistant turn with a tool call (the template's rendering)."""
    return (
        tokenizer.apply_chat_template([assistant_dict], tokenize=False)
        .split("<|im_start|>assistant\n", 1)[1]
        .removesuffix("<|im_end|>")
    )


@pytest.mark.parametrize(
    ("first_turn", "error_start"),
    [
        ('<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+', "error: could not parse the tool call"),
        ("<tool_call>\nnot json\n</tool_call>", "error: could not parse the tool call"),
        ('<tool_call>\n{"name": "python", "arguments": {}}\n</tool_call>', "error: unknown tool 'python'"),
        (
            '<tool_call>\n{"name": "calculator", "arguments": [1]}\n</tool_call>',
            "error: the arguments of calculator must be a JSON object",
        ),
        (
            '<tool_call>\n{"name": "calculator", "arguments": {"expression": "__import__(1)"}}\n</tool_call>',
            "error: only integers",
        ),
        (
            '<tool_call>\n{"name": "calculator", "arguments": {"expr": "1+1"}}\n</tool_call>',
            'error: calculator needs {"expression"',
        ),
    ],
)
def test_a_bad_tool_call_becomes_an_error_the_policy_reads(tokenizer, first_turn, error_start):
    task = ENV.tasks("train", 1, 0)[0]
    answer = f"Answer: {task.hidden['answer']}"
    [episode] = episodes_for(tokenizer, [task], {task.prompt[0].content: [first_turn, answer]})
    assert [m.role for m in episode.messages] == ["user", "assistant", "tool", "assistant"]
    assert episode.messages[2].content.startswith(error_start)
    assert episode.messages[2].tool_call_id == episode.messages[1].tool_calls[0].id
    # The error text is in the tokens the second turn was conditioned on, and not trained on.
    unmasked = tokenizer.decode([t for t, m in zip(episode.ids, episode.policy_mask) if not m])
    assert episode.messages[2].content in unmasked
    assert masked_runs(tokenizer, episode.ids, episode.policy_mask)[-1] == answer + "<|im_end|>"
    assert ENV.verify(task, trajectory_of(episode)).passed


def trajectory_of(episode):
    from warmstart.train.rollouts import as_trajectory

    return as_trajectory(episode)


def test_the_turn_limit_ends_a_rollout_that_keeps_calling_tools(tokenizer):
    task = ENV.tasks("train", 1, 0)[0]
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1+1"}}\n</tool_call>'
    [episode] = episodes_for(tokenizer, [task], {task.prompt[0].content: [call] * 3}, max_turns=3)
    assert episode.finish_reason == "turns"
    assert [m.role for m in episode.messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert not ENV.verify(task, trajectory_of(episode)).passed


def test_a_turn_cut_by_the_token_limit_ends_the_rollout(tokenizer):
    task = ENV.tasks("train", 1, 0)[0]
    [episode] = episodes_for(tokenizer, [task], {task.prompt[0].content: ["Answer: " + "1" * 50]}, max_new_tokens=8)
    assert episode.finish_reason == "length" and len(episode.messages) == 2


def test_tool_call_parsing():
    content, calls = split_tool_calls(
        'Let me compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2*3"}}\n</tool_call>', "c"
    )
    assert content == "Let me compute." and calls[0].function.name == "calculator" and calls[0].id == "c-0"
    assert call_error(calls[0], TOOLS) is None
    _, two = split_tool_calls(
        '<tool_call>{"name": "a"}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>', "c"
    )
    assert [c.function.name for c in two] == ["a", "b"] and [c.id for c in two] == ["c-0", "c-1"]
    assert parse_completion("<tool_call>{}</tool_call>").tool_calls is None  # no tools: text stays text
    assert (
        parse_completion('<think>\nbig numbers\n</think>\n<tool_call>{"name": "calculator"}</tool_call>', "c").reasoning
        == "big numbers"
    )


def test_a_tool_call_renders_back_to_the_text_it_was_parsed_from(tokenizer):
    text = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12*34"}}\n</tool_call>'
    message = parse_completion(text, "call-0")
    assert parse_back(tokenizer, template_messages([message])[0]) == text
    with_content = parse_completion("Big numbers.\n" + text, "call-0")
    assert parse_back(tokenizer, template_messages([with_content])[0]) == "Big numbers.\n" + text


def test_the_calculator_tool_evaluates_only_integer_arithmetic():
    task = ENV.tasks("train", 1, 0)[0]

    def run(expression):
        return ENV.step(
            task,
            ToolCall(id="x", function=ToolFunction(name="calculator", arguments=f'{{"expression": "{expression}"}}')),
            task.prompt,
        )

    assert run("(12+3)*-4") == "-60"
    assert run("98765*4321") == str(98765 * 4321)
    for hostile in ["2**8", "open(1)", "1/2", "1.5+1", "(" * 300, "9" * 150 + "*" + "9" * 40, "x"]:
        assert run(hostile).startswith("error: "), hostile


def test_the_reference_calls_the_tool_exactly_for_large_numbers():
    tasks = ENV.tasks("train", 300, 0)
    sizes = {t.meta["size"] for t in tasks}
    assert sizes == {"small", "large"}
    rng = random.Random(0)
    for task in tasks:
        trajectory = ENV.reference(task, rng)
        verdict = ENV.verify(task, trajectory)
        assert verdict.details["tool_calls"] == (1 if task.meta["size"] == "large" else 0)
        if task.meta["size"] == "large":  # the tool never slips
            assert verdict.passed
    slipped = [
        t
        for t in tasks
        if t.meta["size"] == "small" and not ENV.verify(t, ENV.reference(t, random.Random(t.id))).passed
    ]
    assert slipped  # the head does
    train, eval_ = {t.id for t in ENV.tasks("train", 300, 1)}, {t.id for t in ENV.tasks("eval", 40, 1)}
    assert not train & eval_


def test_grpo_trains_only_on_the_policy_tokens_of_a_multi_turn_episode(tokenizer):
    from warmstart.config import GrpoConfig
    from warmstart.train.grpo import Group, batch_tensors

    tasks = [t for t in ENV.tasks("train", 30, 0) if t.meta["size"] == "large"][:2]
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1+1"}}\n</tool_call>'
    episodes = episodes_for(tokenizer, tasks, {t.prompt[0].content: [call, "Answer: 2"] for t in tasks})
    batch = batch_tensors([Group(episodes, [1.0, 0.0], [True, True])], GrpoConfig(), tokenizer.pad_token_id)
    for row, episode in enumerate(episodes):
        assert batch["loss_mask"][row, : len(episode.ids)].tolist() == episode.policy_mask
        assert batch["loss_mask"][row, len(episode.ids) :].sum() == 0
        assert "<|im_start|>tool\n2<|im_end|>" in tokenizer.decode(
            [t for t, m in zip(episode.ids, episode.policy_mask) if not m]
        )


def test_a_turn_ended_by_a_token_the_template_never_writes_is_a_clear_error(tokenizer):
    from warmstart.errors import WarmstartError
    from warmstart.lm.chat import continuation_ids

    call = ToolCall(id="call-0-0", function=ToolFunction(name="calculator", arguments='{"expression": "1+1"}'))
    messages = [
        Message(role="user", content="What is 1+1?"),
        Message(role="assistant", content="", tool_calls=[call]),
        Message(role="tool", tool_call_id="call-0-0", content="2"),
    ]
    continuation = continuation_ids(tokenizer, messages, "<|im_end|>", TOOLS)
    assert tokenizer.decode(continuation) == "<|im_start|>tool\n2<|im_end|><|im_start|>assistant\n"
    with pytest.raises(WarmstartError, match="never writes after a turn"):
        continuation_ids(tokenizer, messages, "<|endoftext|>", TOOLS)
