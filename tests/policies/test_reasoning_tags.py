"""A reasoning model's chain written into its answer text becomes the message's reasoning; nothing else moves."""

from __future__ import annotations

import pytest

from warmstart.policies.reasoning_tags import split_reasoning
from warmstart.types import Message


@pytest.mark.parametrize(
    ("content", "reasoning", "answer"),
    [
        ("<think>a\nb</think>\nAnswer: 4", "a\nb", "Answer: 4"),
        ("  <reasoning>r</reasoning>Answer: 1", "r", "Answer: 1"),
        ("the template opened it</think>\n\nAnswer: 5", "the template opened it", "Answer: 5"),  # closing tag only
        ("only a chain</think>", "only a chain", ""),
    ],
)
def test_a_leading_reasoning_block_is_moved(content, reasoning, answer):
    message = split_reasoning(Message(role="assistant", content=content))
    assert (message.reasoning, message.content) == (reasoning, answer)


@pytest.mark.parametrize(
    "content",
    [
        "plain answer",
        "Answer: <think>x</think>",  # a tag inside the answer is content
        "print('a</think>')",  # a closing tag that does not end its line: code, not a chain's end
        "<think>never closed",
    ],
)
def test_text_without_a_leading_block_is_left_alone(content):
    message = split_reasoning(Message(role="assistant", content=content))
    assert message.content == content and message.reasoning is None


def test_reasoning_the_server_separated_is_kept_first():
    message = split_reasoning(Message(role="assistant", content="<think>more</think>ok", reasoning="field"))
    assert message.reasoning == "field\n\nmore" and message.content == "ok"
