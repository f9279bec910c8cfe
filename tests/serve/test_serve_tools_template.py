"""A chat template that leaves `tools` out of the prompt (the tiny student's) is said at start, once: a
request's tool descriptions would not reach the model, and its client should not have to guess."""

from __future__ import annotations

import copy
import logging

from warmstart.lm.chat import template_renders_tools
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
