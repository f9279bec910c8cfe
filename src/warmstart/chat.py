"""Rendering conversations with a student tokenizer's chat template, and the loss mask.

The mask is 1 exactly on tokens the assistant produced (its content and end-of-turn token) and 0 on
everything else. Two ways to find those tokens, tried in order:

1. each assistant turn is located by rendering the conversation up to it with the generation prompt
   and up to its end, and taking the text in between. The text is then tokenized piece by piece, so
   an assistant turn gets exactly the tokens it would have if the model had generated it after that
   prompt (tokenizing the whole text can merge the prompt's last newline into the reply's first
   token). This needs a template that renders every prefix of a conversation as a prefix of the
   whole, which is checked;
2. a template that is not prefix-consistent but marks assistant text with `{% generation %}` is
   used through transformers' `return_assistant_tokens_mask` (whole-text tokenization).

A template that can do neither (e.g. one that rewrites earlier turns and has no tags) is refused.

Reasoning is folded into the assistant content as `<think>...</think>` before rendering, so every
template sees it the same way, and `parse_completion` splits it back out of what a student generates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from .errors import WarmstartError
from .types import Message

THINK_RE = re.compile(r"^\s*<think>\n?(.*?)\n?</think>\n?", re.DOTALL)
GENERATION_TAG_RE = re.compile(r"{%-?\s*generation\s*-?%}")
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


@dataclass
class Rendered:
    input_ids: list[int]
    loss_mask: list[int]  # 1 on assistant-produced tokens


def template_messages(messages: list[Message]) -> list[dict]:
    """Messages as the dicts chat templates expect, with reasoning folded into content."""
    out = []
    for m in messages:
        content = m.content or ""
        if m.role == "assistant" and m.reasoning:
            content = f"<think>\n{m.reasoning}\n</think>\n{content}"
        out.append({"role": m.role, "content": content})
    return out


def parse_completion(text: str) -> Message:
    """A generated assistant turn as a Message, with a leading think block moved to `reasoning`."""
    match = THINK_RE.match(text)
    if match:
        return Message(role="assistant", reasoning=match.group(1), content=text[match.end():])
    if text.lstrip().startswith("<think>"):  # never closed its reasoning: there is no answer
        return Message(role="assistant", reasoning=text.lstrip()[len("<think>"):], content="")
    return Message(role="assistant", content=text)


def check_template(tokenizer: PreTrainedTokenizerBase, where: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise WarmstartError(f"{where}: the tokenizer has no chat template, so assistant turns cannot be marked")


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> str:
    return tokenizer.apply_chat_template(template_messages(messages), tokenize=False, add_generation_prompt=True)


def render_for_training(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> Rendered:
    check_template(tokenizer, "sft")
    dicts = template_messages(messages)
    spans = _assistant_spans(tokenizer, dicts)
    if spans is not None:
        rendered = _tokenize_pieces(tokenizer, tokenizer.apply_chat_template(dicts, tokenize=False), spans)
    elif GENERATION_TAG_RE.search(tokenizer.chat_template):
        rendered = _render_with_generation_tags(tokenizer, dicts)
    else:
        raise WarmstartError(
            "sft: the tokenizer's chat template cannot mark assistant turns (it has no {% generation %} "
            "tags and does not render conversations prefix-consistently)"
        )
    if any(m.role == "assistant" for m in messages) and not any(rendered.loss_mask):
        raise WarmstartError("sft: the chat template marked no assistant tokens in a conversation with an assistant turn")
    return rendered


def _assistant_spans(tokenizer, dicts: list[dict]) -> list[tuple[int, int]] | None:
    """Character spans of assistant turns in the full rendering, or None if prefixes don't line up."""
    full = tokenizer.apply_chat_template(dicts, tokenize=False)
    spans = []
    for i, d in enumerate(dicts):
        if d["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(dicts[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(dicts[: i + 1], tokenize=False)
        if not (through.startswith(before) and full.startswith(through)) or len(through) == len(before):
            return None
        spans.append((len(before), len(through)))
    return spans


def _tokenize_pieces(tokenizer, text: str, spans: list[tuple[int, int]]) -> Rendered:
    ids: list[int] = []
    mask: list[int] = []
    at = 0
    for start, end in [*spans, (len(text), len(text))]:
        for piece, is_assistant in ((text[at:start], 0), (text[start:end], 1)):
            if piece:
                piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids += piece_ids
                mask += [is_assistant] * len(piece_ids)
        at = end
    return Rendered(ids, mask)


def _render_with_generation_tags(tokenizer, dicts: list[dict]) -> Rendered:
    out = tokenizer.apply_chat_template(dicts, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return Rendered(list(out["input_ids"]), list(out["assistant_masks"]))


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, generation_eos) -> list[int]:
    """Token ids that end an assistant turn: the tokenizer's eos, known end-of-turn tokens, the model's eos."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    if generation_eos is not None:
        ids |= set(generation_eos if isinstance(generation_eos, list) else [generation_eos])
    return sorted(ids)
