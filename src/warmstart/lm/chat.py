"""Rendering conversations with a student tokenizer's chat template, and the loss mask.

The mask is 1 exactly on tokens the assistant produced (its content and end-of-turn token) and 0 on
everything else. Two ways to find those tokens, tried in order:

1. each assistant turn is located by rendering the conversation up to it with the generation prompt
   and up to its end, and taking the text in between, up to its last end-of-turn token (text a template
   writes after it, ChatML's newline, is not the model's: it stops at that token). The text is then
   tokenized piece by piece, so an assistant turn gets exactly the tokens it would have if the model had
   generated it after that prompt (tokenizing the whole text can merge the prompt's last newline into
   the reply's first token): each piece as it follows the text before it, its ids those of the text
   through it past those of the text before it (a window of it), where these extend them (a SentencePiece tokenizer, Llama
   2's or Mistral's, tokenizing a piece alone writes a "▁" before it, a space the model never generates
   after the prompt), else the piece alone. This needs a template that renders every prefix of a
   conversation as a prefix of the whole, which is checked;
2. a template that is not prefix-consistent but marks assistant text with `{% generation %}` is
   used through transformers' `return_assistant_tokens_mask` (whole-text tokenization).

A template that can do neither (e.g. one that rewrites earlier turns and has no tags) is refused.

Reasoning is folded into the assistant content as `<think>...</think>` before rendering, so every
template sees it the same way, and `parse_completion` splits it back out of what a student generates.
Tool calls and tool results are passed to the template in the OpenAI shape (`toolcalls.py` parses
calls back out of generated text); environment tools are passed as `tools=`.

Multi-turn rollouts never re-tokenize what the policy produced: after a policy turn, only the text the
template adds after it (tool results, the next generation prompt) is rendered and tokenized as it follows
the conversation's text (`continuation_ids`), so the token ids of a rollout are exactly what the policy saw
and sampled, and those SFT renders for the same conversation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from ..errors import WarmstartError
from ..types import Message
from .toolcalls import split_tool_calls, template_tool_calls

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
        d = {"role": m.role, "content": content}
        if m.tool_calls:
            d["tool_calls"] = template_tool_calls(m.tool_calls)
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def parse_completion(text: str, tool_call_prefix: str | None = None) -> Message:
    """A generated assistant turn as a Message: a leading think block moved to `reasoning`, and, when
    `tool_call_prefix` is given (the environment has tools), tool calls parsed out with ids from it."""
    match = THINK_RE.match(text)
    if match:
        reasoning, content = match.group(1), text[match.end() :]
    elif text.lstrip().startswith("<think>"):  # never closed its reasoning: there is no answer
        reasoning, content = text.lstrip()[len("<think>") :], ""
    else:
        reasoning, content = None, text
    calls = None
    if tool_call_prefix is not None:
        content, calls = split_tool_calls(content, tool_call_prefix)
    return Message(role="assistant", reasoning=reasoning, content=content, tool_calls=calls or None)


def check_template(tokenizer: PreTrainedTokenizerBase, where: str) -> None:
    """Refuse a tokenizer without a chat template, or whose template ends an assistant turn with a marker
    that is not one token (`check_turn_end_marker`)."""
    check_has_template(tokenizer, where)
    check_turn_end_marker(tokenizer, where)


def check_has_template(tokenizer: PreTrainedTokenizerBase, where: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise WarmstartError(f"{where}: the tokenizer has no chat template, so conversations cannot be rendered")


PROBE_CONVERSATION = [Message(role="user", content="hello"), Message(role="assistant", content="x")]


def check_turn_end_marker(tokenizer: PreTrainedTokenizerBase, where: str) -> None:
    """Refuse a template whose end-of-turn marker the tokenizer splits into several tokens (a ChatML template
    given to GPT-2, whose vocabulary has no <|im_end|>): SFT would train the marker as text, but sampling
    stops only at a single stop token (`stop_token_ids`), so every rollout would run to its token limit and
    end in the marker's pieces, which a verifier does not accept. A template that cannot render the probe,
    or renders turns in a way the spans cannot follow, is left to the checks that render real conversations."""
    dicts = template_messages(PROBE_CONVERSATION)
    try:
        spans = _assistant_spans(tokenizer, dicts, None)
        text = _render(tokenizer, dicts, None)
    except Exception:  # any error of the template: cannot tell here (template_renders_tools says why)
        return
    if not spans:
        return
    start, end = spans[0]
    marker = turn_end_marker(tokenizer, text[start:end])
    if marker is None:
        return
    ids = following_ids(tokenizer, text, end - len(marker), end)
    if len(ids) > 1:
        raise WarmstartError(
            f"{where}: the chat template ends an assistant turn with {marker!r}, which the tokenizer splits into "
            f"{len(ids)} tokens, so sampling would never stop at it; add it as a special token "
            f"(tokenizer.add_special_tokens({{'additional_special_tokens': [{marker!r}]}}) and "
            "model.resize_token_embeddings(len(tokenizer)), then save both) or use a template whose markers are tokens"
        )


def _render(tokenizer, dicts: list[dict], tools: list[dict] | None, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        dicts, tools=tools or None, tokenize=False, add_generation_prompt=generation_prompt
    )


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[Message], tools: list[dict] | None = None) -> str:
    return _render(tokenizer, template_messages(messages), tools, generation_prompt=True)


PROBE_TOOL = {"type": "function", "function": {"name": "probe_tool", "description": "a probe", "parameters": {}}}


def template_renders_tools(tokenizer: PreTrainedTokenizerBase) -> bool | None:
    """Whether the chat template puts `tools` in the prompt (a template may leave them out without a word);
    None where it cannot render a one-message conversation at all.

    Any error of the template counts as "cannot tell": a template is a program that may raise whatever its
    Python raises (a division by zero, a missing key), and this probe must not stop a server from starting;
    a request that trips the same error is answered with it."""
    asked = [Message(role="user", content="hello")]
    try:
        return render_prompt(tokenizer, asked, [PROBE_TOOL]) != render_prompt(tokenizer, asked)
    except Exception:  # any error of the template: cannot tell (above)
        return None


def continuation_ids(
    tokenizer, messages: list[Message], end_of_turn: str, tools: list[dict] | None = None
) -> list[int]:
    """The ids of the text the template puts between the end of the last policy turn and the next generation.

    `messages` ends with tool results (or any non-assistant turns) after the policy's last turn, whose
    generated text ended with `end_of_turn`. Anything the template writes after that token (e.g. a
    newline) belongs to the continuation, since the policy never produced it. Its ids are those that follow
    the conversation before it (`following_ids`): tokenized alone, a SentencePiece tokenizer
    (LlamaTokenizer, as Llama 2 and Mistral load) writes a "▁" before it that neither the whole
    conversation's tokens nor SFT's have.
    """
    full, start = _continuation(tokenizer, messages, end_of_turn, tools)
    return following_ids(tokenizer, full, start, len(full))


def _continuation(tokenizer, messages: list[Message], end_of_turn: str, tools: list[dict] | None) -> tuple[str, int]:
    """The whole conversation's text with the next generation prompt, and where its continuation starts."""
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    dicts = template_messages(messages)
    through = _render(tokenizer, dicts[: last + 1], tools)
    full = _render(tokenizer, dicts, tools, generation_prompt=True)
    if not full.startswith(through):
        raise WarmstartError(
            "the tokenizer's chat template does not render a conversation's turns as prefixes of the whole, "
            "so a multi-turn rollout cannot keep the policy's own tokens"
        )
    end = through.rfind(end_of_turn)
    if end < 0:
        raise WarmstartError(
            f"the policy ended its turn with {end_of_turn!r}, which its chat template never writes after a turn"
        )
    return full, end + len(end_of_turn)


def render_for_training(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], tools: list[dict] | None = None
) -> Rendered:
    check_has_template(tokenizer, "sft")
    dicts = template_messages(messages)
    spans = _assistant_spans(tokenizer, dicts, tools)
    if spans is not None:
        text = _render(tokenizer, dicts, tools)
        _check_tool_calls_rendered(text, spans, dicts)
        _check_reasoning_rendered(text, spans, messages)
        rendered = _tokenize_pieces(tokenizer, text, spans)
    elif GENERATION_TAG_RE.search(tokenizer.chat_template):
        rendered = _render_with_generation_tags(tokenizer, dicts, tools)
    else:
        raise WarmstartError(
            "sft: the tokenizer's chat template cannot mark assistant turns (it has no {% generation %} "
            "tags and does not render conversations prefix-consistently)"
        )
    if any(m.role == "assistant" for m in messages) and not any(rendered.loss_mask):
        raise WarmstartError(
            "sft: the chat template marked no assistant tokens in a conversation with an assistant turn"
        )
    return rendered


def _check_tool_calls_rendered(text: str, spans: list[tuple[int, int]], dicts: list[dict]) -> None:
    """Refuse a template that leaves an assistant turn's tool calls out of its text (one written for plain
    chat): the turn would be trained without them, teaching the student to end it where it called a tool.
    A call's function name must appear in its own turn's span. ValueError: the caller names the record."""
    turns = [d for d in dicts if d["role"] == "assistant"]
    for (start, end), turn in zip(spans, turns):
        for call in turn.get("tool_calls") or []:
            if call["function"]["name"] not in text[start:end]:
                raise ValueError(
                    f"it leaves out the assistant's tool call {call['function']['name']!r}, which would be "
                    "trained as a turn without it; a template that renders tool_calls is needed"
                )


def _check_reasoning_rendered(text: str, spans: list[tuple[int, int]], messages: list[Message]) -> None:
    """Refuse a template that leaves an assistant turn's reasoning out of its text (DeepSeek-R1-Distill's
    first template keeps only what follows </think>): the student would be trained to answer without its
    chain of thought. The reasoning's first line must appear in its own turn's span. ValueError: the caller
    names the record."""
    turns = [m for m in messages if m.role == "assistant"]
    for (start, end), turn in zip(spans, turns):
        first_line = next((line.strip() for line in (turn.reasoning or "").splitlines() if line.strip()), "")
        if first_line and first_line not in text[start:end]:
            raise ValueError(
                "it leaves out the assistant's reasoning, which would be trained as a turn without it; a template "
                "that renders the <think> block of assistant content is needed"
            )


def _assistant_spans(tokenizer, dicts: list[dict], tools: list[dict] | None) -> list[tuple[int, int]] | None:
    """Character spans of assistant turns in the full rendering, or None if prefixes don't line up."""
    full = _render(tokenizer, dicts, tools)
    spans = []
    for i, d in enumerate(dicts):
        if d["role"] != "assistant":
            continue
        before = _render(tokenizer, dicts[:i], tools, generation_prompt=True)
        through = _render(tokenizer, dicts[: i + 1], tools)
        if not (through.startswith(before) and full.startswith(through)) or len(through) == len(before):
            return None
        spans.append((len(before), len(before) + turn_end(tokenizer, through[len(before) :])))
    return spans


def turn_end(tokenizer, turn: str) -> int:
    """Where an assistant turn's text ends: after its last end-of-turn token where only whitespace follows
    it (ChatML's `<|im_end|>` + newline), else where the template's rendering of it ends."""
    markers = {*END_OF_TURN_TOKENS, *([tokenizer.eos_token] if tokenizer.eos_token else [])}
    ends = [turn.rfind(marker) + len(marker) for marker in markers if marker in turn]
    end = max(ends, default=len(turn))
    return end if not turn[end:].strip() else len(turn)


def turn_end_marker(tokenizer, turn: str) -> str | None:
    """The end-of-turn marker an assistant turn's text (up to `turn_end`) ends with; None where it ends in none."""
    markers = {*END_OF_TURN_TOKENS, *([tokenizer.eos_token] if tokenizer.eos_token else [])}
    return max((m for m in markers if turn.endswith(m)), key=len, default=None)


def _tokenize_pieces(tokenizer, text: str, spans: list[tuple[int, int]]) -> Rendered:
    ids: list[int] = []
    mask: list[int] = []
    at = 0
    for start, end in [*spans, (len(text), len(text))]:
        for piece_end, is_assistant in ((start, 0), (end, 1)):
            if piece_end > at:
                piece_ids = following_ids(tokenizer, text, at, piece_end)
                ids += piece_ids
                mask += [is_assistant] * len(piece_ids)
                at = piece_end
    return Rendered(ids, mask)


# Characters of the text before a piece that are tokenized with it (module docstring): tokenization is local
# at a turn's boundary, so a window gives the ids the whole prefix would, at a cost linear in the text (the
# whole prefix made a 60-turn, 81k-token conversation take 12.5 s instead of 0.2).
CONTEXT_CHARS = 256


def following_ids(tokenizer, text: str, start: int, end: int) -> list[int]:
    """The ids of text[start:end] as it follows the text before it: those of a window of that text and the
    piece, past those of the window alone, where these extend them; else the piece's own (module docstring)."""
    if start:
        window = max(0, start - CONTEXT_CHARS)
        before = tokenizer(text[window:start], add_special_tokens=False)["input_ids"]
        through = tokenizer(text[window:end], add_special_tokens=False)["input_ids"]
        if through[: len(before)] == before:
            return through[len(before) :]
    return tokenizer(text[start:end], add_special_tokens=False)["input_ids"]


def _render_with_generation_tags(tokenizer, dicts: list[dict], tools: list[dict] | None) -> Rendered:
    out = tokenizer.apply_chat_template(
        dicts, tools=tools or None, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return Rendered(list(out["input_ids"]), list(out["assistant_masks"]))


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, generation_eos) -> list[int]:
    """Token ids that end an assistant turn: the tokenizer's eos, known end-of-turn tokens, the model's eos."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    if generation_eos is not None:
        ids |= set(generation_eos if isinstance(generation_eos, list) else [generation_eos])
    return sorted(ids)


def assistant_spans(loss_mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of 1s in a loss mask: the token spans of the assistant's turns."""
    spans, start = [], None
    for i, m in enumerate([*loss_mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans
