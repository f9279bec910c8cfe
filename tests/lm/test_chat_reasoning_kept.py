"""A chat template that drops an assistant turn's reasoning (keeps only what follows </think>, as
DeepSeek-R1-Distill's first template did) is refused like one that drops tool calls: the student would be
trained to answer without its chain of thought."""

from __future__ import annotations

import pytest

from warmstart.errors import WarmstartError
from warmstart.lm.chat import render_for_training
from warmstart.lm.tinymodel import train_tokenizer
from warmstart.train.data import tokenize
from warmstart.types import Message, Provenance, Trajectory

DROPS_REASONING = (
    "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'].split('</think>')[-1] + "
    "'<|im_end|>' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["user\nWhat is 12+3?", "assistant\n2+3=5 carry 0\nAnswer: 15"] * 20, 300)


def trajectory(reasoning: str | None) -> Trajectory:
    messages = [
        Message(role="user", content="What is 12+3?"),
        Message(role="assistant", reasoning=reasoning, content="Answer: 15"),
    ]
    return Trajectory(
        task_id="t", policy="p", messages=messages, provenance=Provenance(provider="p", model="m", created=0)
    )


def test_a_template_that_drops_reasoning_is_one_error_naming_the_record(tokenizer):
    tokenizer.chat_template = DROPS_REASONING
    with pytest.raises(WarmstartError, match=r"^sft: record t#0: .*leaves out the assistant's reasoning"):
        tokenize(tokenizer, [trajectory("2+3=5 carry 0\n1+1=1")], 512)


def test_the_same_template_trains_turns_without_reasoning(tokenizer):
    tokenizer.chat_template = DROPS_REASONING
    examples, dropped, _ = tokenize(tokenizer, [trajectory(None)], 512)
    assert len(examples) == 1 and not dropped


def test_a_template_that_keeps_reasoning_trains_it(tokenizer):
    from warmstart.lm.tinymodel import CHAT_TEMPLATE

    tokenizer.chat_template = CHAT_TEMPLATE
    rendered = render_for_training(tokenizer, trajectory("2+3=5 carry 0").messages)
    trained = tokenizer.decode([i for i, m in zip(rendered.input_ids, rendered.loss_mask) if m])
    assert "2+3=5 carry 0" in trained
