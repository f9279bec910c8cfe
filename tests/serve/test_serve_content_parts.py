"""A message's content as OpenAI content parts is served as the text training data holds for it
(types.text_of_parts): a model is prompted as it was trained."""

from __future__ import annotations

import pytest

from warmstart.serve.request import ApiError, parse_chat_request
from warmstart.types import Message

PARTS = [{"type": "text", "text": "Solve:"}, {"type": "text", "text": "2+2"}]


def asked(content) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}]}


def test_text_parts_are_joined_as_training_data_joins_them():
    request = parse_chat_request(asked(PARTS), ["tiny"], 4)
    assert request.messages[0].content == Message(role="user", content=PARTS).content == "Solve:\n2+2"


@pytest.mark.parametrize(
    "content",
    [[{"type": "image_url", "image_url": {"url": "data:,"}}], [{"type": "text", "text": 3}], ["Solve"], {"a": 1}],
)
def test_parts_that_are_not_text_are_a_400_naming_the_content(content):
    with pytest.raises(ApiError) as refused:
        parse_chat_request(asked(content), ["tiny"], 4)
    assert refused.value.status == 400 and "messages[0].content" in str(refused.value)
