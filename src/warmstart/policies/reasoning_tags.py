"""Reasoning a model writes into its answer text, moved to `Message.reasoning` where it belongs.

Open reasoning models served behind an OpenAI-compatible endpoint without a reasoning parser (vLLM or
`transformers serve` with default flags, llama.cpp) send their chain inside the content as
`<think>…</think>` (DeepSeek-R1, Qwen3) or `<reasoning>…</reasoning>`. Kept as answer text, the chain
could not be stripped (the answer-only ablation) or masked, and the verifier would read it as the
answer. Only a leading block is taken (text before it is whitespace): a tag inside the answer, in code
say, is content. Some chat templates open the block in the prompt, so the reply starts mid-chain and
holds only the closing tag: everything before a closing tag that ends its line, with no opening tag
before it, is reasoning too. Signed reasoning (Anthropic's thinking) must go back exactly as it was signed:
its signature is kept in the form that holds the signed text apart (`anthropic_format.signed_apart`), and
the chain taken from the text is added after it, unsigned.
"""

from __future__ import annotations

import re

from ..types import Message
from .anthropic_format import THINKING_SEPARATOR, signed_apart
from .backend import Reply

OPENED = re.compile(r"\A\s*<(think|reasoning)>(.*?)</\1>\s*", re.DOTALL)
# No opening tag before it, and the closing tag ends its line (`a</think>` inside code is not a chain's end).
CLOSE_ONLY = re.compile(r"\A((?:(?!<(?:think|reasoning)>).)*?)</(think|reasoning)>(?:\s*\n|\s*\Z)\s*", re.DOTALL)


def split_reasoning(message: Message) -> Message:
    """The message with a leading reasoning block of its content moved to `reasoning` (appended to any
    reasoning the server already separated); unchanged when there is none."""
    text = message.content or ""
    match = OPENED.match(text) or CLOSE_ONLY.match(text)
    if match is None:
        return message
    chain = match.group(2) if match.re is OPENED else match.group(1)
    reasoning = THINKING_SEPARATOR.join(part for part in (message.reasoning, chain.strip()) if part)
    update = {"content": text[match.end() :], "reasoning": reasoning or None}
    return message.model_copy(update=update | {"reasoning_signature": signed_apart(message)})


def split_reasoning_tags(reply: Reply) -> Reply:
    message = split_reasoning(reply.message)
    return reply if message is reply.message else reply.model_copy(update={"message": message})
