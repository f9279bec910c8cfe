"""A chat template that leaves `tools` out of the prompt (the tiny student's) is said at start, once: a
request's tool descriptions would not reach the model, and its client should not have to guess."""

from __future__ import annotations

import copy
import logging

import pytest

from warmstart.lm.chat import template_renders_tools
from warmstart.serve.request import ApiError, parse_chat_request
from warmstart.serve.server import ChatServer

SAYS = "chat template does not render tools"
TOOLS_TEMPLATE = (
    "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def started_server_says(model, tokenizer, caplog) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="warmstart.serve.server"):
        ChatServer(model, tokenizer, "tiny", 4)
    return [r.getMessage() for r in caplog.records if SAYS in r.getMessage()]


def test_a_template_without_tools_is_said_at_start_and_one_with_them_is_not(served_model, caplog):
    model, tokenizer = served_model
    assert template_renders_tools(tokenizer) is False
    [said] = started_server_says(model, tokenizer, caplog)
    assert said.startswith("serve: tiny's chat template does not render tools")
    rendering = copy.deepcopy(tokenizer)
    rendering.chat_template = TOOLS_TEMPLATE
    assert template_renders_tools(rendering) is True
    assert started_server_says(model, rendering, caplog) == []


def test_a_template_that_raises_on_the_probe_still_lets_the_server_start(served_model, caplog):
    # A template's own Python error (here a division by zero where it computes something) is not a
    # TemplateError: the probe had let it through and the server did not start.
    model, tokenizer = served_model
    failing = copy.deepcopy(tokenizer)
    failing.chat_template = "{% for m in messages %}{{ m['content'] }}{{ (1 // 0) if tools else '' }}{% endfor %}"
    assert template_renders_tools(failing) is None
    assert started_server_says(model, failing, caplog) == []


def test_a_template_that_fails_on_a_request_is_a_400_naming_its_error_not_a_500(served_model):
    """The template's own code failing on these messages (a missing key, a division by zero) is about the
    request and the model's template: it had been a 500, as if the server had failed."""
    model, tokenizer = served_model
    failing = copy.deepcopy(tokenizer)
    failing.chat_template = "{% for m in messages %}{{ m['content'] }}{{ 1 // (m['content'] | length) }}{% endfor %}"
    server = ChatServer(model, failing, "tiny", 4)
    request = parse_chat_request({"model": "tiny", "messages": [{"role": "user", "content": ""}]}, ["tiny"], 4)
    with pytest.raises(ApiError) as refused:
        server.encode_prompt(request)
    assert refused.value.status == 400
    assert "chat template failed on them (ZeroDivisionError: integer division or modulo by zero)" in str(refused.value)
