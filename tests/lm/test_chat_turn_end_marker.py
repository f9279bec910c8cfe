"""A chat template's end-of-turn marker must be one token: sampling stops only at a single stop token, so a
marker the tokenizer splits would be trained as text and never end a rollout."""

from __future__ import annotations

import pytest

from warmstart.errors import WarmstartError
from warmstart.lm.chat import check_template, stop_token_ids
from warmstart.lm.tinymodel import train_tokenizer

# ChatML's shape with Phi-3's marker, which the tiny tokenizer has no token for.
SPLIT_MARKER_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture
def tokenizer():
    return train_tokenizer(["user\nWhat is 1+1?", "assistant\nAnswer: 2"] * 10, 300)


def test_a_marker_the_tokenizer_splits_is_refused_naming_it_and_the_fix(tokenizer):
    tokenizer.chat_template = SPLIT_MARKER_TEMPLATE
    with pytest.raises(WarmstartError) as refused:
        check_template(tokenizer, "sft.student")
    message = str(refused.value)
    assert message.startswith("sft.student: ") and "'<|end|>'" in message and "\n" not in message
    assert "add_special_tokens" in message and "resize_token_embeddings" in message


def test_the_same_marker_added_as_a_special_token_passes_and_stops_sampling(tokenizer):
    tokenizer.chat_template = SPLIT_MARKER_TEMPLATE
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    check_template(tokenizer, "sft.student")
    assert tokenizer.convert_tokens_to_ids("<|end|>") in stop_token_ids(tokenizer, None)


def test_the_tiny_students_chatml_passes(tokenizer):
    check_template(tokenizer, "grpo.init")


def test_no_template_is_refused_with_a_reason_that_fits_every_stage(tokenizer):
    tokenizer.chat_template = None
    for where in ("sft.student", "grpo.init", "eval.policies.nt"):
        with pytest.raises(WarmstartError, match=f"^{where}: the tokenizer has no chat template, so conversations"):
            check_template(tokenizer, where)
