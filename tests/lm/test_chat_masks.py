"""Loss masks on exactly the assistant's tokens, and packing that keeps examples apart.

The tokenizer is the real one the tiny student uses (`train_tokenizer`), trained on a few lines here.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

from warmstart.errors import WarmstartError
from warmstart.lm.chat import parse_completion, render_for_training, template_messages
from warmstart.lm.tinymodel import CHAT_TEMPLATE, TinyModelConfig, build_tiny_llama, train_tokenizer
from warmstart.train.data import Example, collate, pack, tokenize
from warmstart.types import Message, Provenance, ToolCall, ToolFunction, Trajectory

TRAINING_TEXT = [
    "What is 12+34? End with 'Answer: <integer>'.",
    "2+4+0=6 carry 0\n1+3+0=4 carry 0\nAnswer: 46",
    "<think>\nfirst the ones column\n</think>\nYes, sure. Be brief.",
    "\n\nAnswer: 46\n  Answer: 46",  # so that "\n\n" and "\n " become tokens, as in any real vocabulary
] * 20


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The tiny model's forward takes ~20 ms on one thread but ~500 ms on two when the other core is
    # busy (OpenMP threads wait on each other); the results are the same.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TRAINING_TEXT, 384)


def with_template(tokenizer, template: str | None):
    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    return other


@pytest.fixture(scope="module")
def tokenizer_without_generation_tags(tokenizer):
    template = CHAT_TEMPLATE.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
    assert template != CHAT_TEMPLATE and "endgeneration" not in template
    return with_template(tokenizer, template)


def conversation(reasoning: bool) -> list[Message]:
    return [
        Message(role="system", content="Be brief."),
        Message(role="user", content="What is 12+34? End with 'Answer: <integer>'."),
        Message(
            role="assistant", content="Answer: 46", reasoning="2+4+0=6 carry 0\n1+3+0=4 carry 0" if reasoning else None
        ),
        Message(role="user", content="Sure?"),
        Message(role="assistant", content="Yes, sure.\nAnswer: 46", reasoning="recheck: 46" if reasoning else None),
        Message(role="user", content="Thanks"),  # a trailing user turn is never a target
    ]


def expected_assistant_text(messages: list[Message]) -> str:
    parts = []
    for m in messages:
        if m.role == "assistant":
            think = f"<think>\n{m.reasoning}\n</think>\n" if m.reasoning else ""
            parts.append(think + m.content + "<|im_end|>")
    return "".join(parts)


def masked_text(tokenizer, rendered) -> str:
    return tokenizer.decode([t for t, m in zip(rendered.input_ids, rendered.loss_mask) if m])


# --- chat -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reasoning", [False, True])
def test_loss_mask_covers_exactly_the_assistant_turns(tokenizer, reasoning):
    messages = conversation(reasoning)
    rendered = render_for_training(tokenizer, messages)
    assert len(rendered.input_ids) == len(rendered.loss_mask)
    assert tokenizer.decode(rendered.input_ids) == tokenizer.apply_chat_template(
        template_messages(messages), tokenize=False
    )
    assert masked_text(tokenizer, rendered) == expected_assistant_text(messages)
    # And nothing else: the unmasked tokens hold every user and system turn whole.
    unmasked = tokenizer.decode([t for t, m in zip(rendered.input_ids, rendered.loss_mask) if not m])
    for m in messages:
        if m.role != "assistant":
            assert m.content in unmasked


@pytest.mark.parametrize("reasoning", [False, True])
def test_prefix_diff_path_gives_the_same_mask(tokenizer, tokenizer_without_generation_tags, reasoning):
    messages = conversation(reasoning)
    tagged = render_for_training(tokenizer, messages)
    by_prefixes = render_for_training(tokenizer_without_generation_tags, messages)
    assert by_prefixes.input_ids == tagged.input_ids
    assert by_prefixes.loss_mask == tagged.loss_mask


@pytest.mark.parametrize("content", ["\n\nAnswer: 46", "  Answer: 46"])
def test_mask_is_exact_when_content_starts_with_whitespace(tokenizer, tokenizer_without_generation_tags, content):
    # API teachers often begin a reply with blank lines. Tokenizing the whole rendered text merges the
    # prompt's "assistant\n" with that whitespace into one token, which then belongs to neither side.
    messages = [Message(role="user", content="What is 12+34?"), Message(role="assistant", content=content)]
    for tok in (tokenizer, tokenizer_without_generation_tags):
        assert masked_text(tok, render_for_training(tok, messages)) == content + "<|im_end|>"


LAST_MESSAGE_ONLY = (
    "{{- '<|im_start|>' + messages[-1]['role'] + '\\n' + messages[-1]['content'] + '<|im_end|>' -}}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
# Keeps only the final assistant turn, as templates that drop old turns or old reasoning do.
DROPS_EARLIER_ASSISTANT_TURNS = (
    "{%- for message in messages -%}"
    "{%- if message['role'] != 'assistant' or loop.last -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@pytest.mark.parametrize(
    "template", [LAST_MESSAGE_ONLY, DROPS_EARLIER_ASSISTANT_TURNS], ids=["last-only", "drops-turns"]
)
def test_template_that_is_not_prefix_consistent_is_refused(tokenizer, template):
    with pytest.raises(WarmstartError, match="prefix-consistently"):
        render_for_training(with_template(tokenizer, template), conversation(reasoning=True))


def test_tokenizer_without_chat_template_is_refused(tokenizer):
    with pytest.raises(WarmstartError, match="no chat template"):
        render_for_training(with_template(tokenizer, None), conversation(reasoning=False))


# A plain chat template (no tool_calls) that renders every conversation prefix-consistently.
PLAIN_CHAT = (
    "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def test_a_template_that_leaves_out_tool_calls_is_one_error_naming_the_record(tokenizer):
    call = ToolCall(id="c1", function=ToolFunction(name="calc", arguments='{"x": "12+34"}'))
    messages = [
        *conversation(reasoning=False)[:2],
        Message(role="assistant", content="", tool_calls=[call]),
        Message(role="tool", tool_call_id="c1", content="46"),
        Message(role="assistant", content="Answer: 46"),
    ]
    assert "calc" in masked_text(tokenizer, render_for_training(tokenizer, messages))  # the tiny template's
    trajectory = Trajectory(
        task_id="t", policy="p", messages=messages, provenance=Provenance(provider="p", model="m", created=0)
    )
    with pytest.raises(WarmstartError, match=r"record t#0: .*leaves out the assistant's tool call 'calc'"):
        tokenize(with_template(tokenizer, PLAIN_CHAT), [trajectory], 512)


# Shows how many messages the conversation has in every header: no prefix renders as a prefix of the whole,
# so only `{% generation %}` tags can say where the assistant turns are.
COUNTING_HEADERS = CHAT_TEMPLATE.replace(
    "'<|im_start|>' + message['role'] + '\\n'",
    "'<|im_start|>' + message['role'] + ' ' + (messages|length|string) + '\\n'",
)


def test_generation_tags_mark_turns_when_prefixes_do_not_line_up(tokenizer):
    assert COUNTING_HEADERS != CHAT_TEMPLATE
    rendered = render_for_training(with_template(tokenizer, COUNTING_HEADERS), conversation(reasoning=False))
    assert masked_text(tokenizer, rendered) == "Answer: 46<|im_end|>Yes, sure.\nAnswer: 46<|im_end|>"


def test_generation_tags_that_mark_nothing_are_refused(tokenizer):
    # Tags present but wrapped around nothing: a silent all-zero mask would train on nothing.
    template = COUNTING_HEADERS.replace("{%- generation -%}", "{%- generation -%}{%- endgeneration -%}").replace(
        "'<|im_end|>' -}}{%- endgeneration -%}", "'<|im_end|>' -}}"
    )
    with pytest.raises(WarmstartError, match="marked no assistant tokens"):
        render_for_training(with_template(tokenizer, template), conversation(reasoning=False))


@pytest.mark.parametrize(
    "text, reasoning, content",
    [
        ("<think>\nstep 1\nstep 2\n</think>\nAnswer: 3", "step 1\nstep 2", "Answer: 3"),
        ("  <think>x</think>Answer: 3", "x", "Answer: 3"),
        ("Answer: 3", None, "Answer: 3"),
        ("Answer: 3 <think>late</think>", None, "Answer: 3 <think>late</think>"),  # only a leading block counts
    ],
)
def test_parse_completion_splits_a_think_block(text, reasoning, content):
    message = parse_completion(text)
    assert (message.role, message.reasoning, message.content) == ("assistant", reasoning, content)


def test_parse_completion_of_unclosed_think_has_no_answer():
    message = parse_completion("<think>\nstep 1\nAnswer: 3")  # cut off by the token limit mid-thought
    assert message.content == "" and message.reasoning.strip() == "step 1\nAnswer: 3"


def test_parse_completion_inverts_the_training_render():
    original = Message(role="assistant", reasoning="a\nb\n", content="Answer: 1\n")
    assert parse_completion(template_messages([original])[0]["content"]) == original


# --- data -----------------------------------------------------------------------------------------


def random_examples(n: int, max_len: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    lengths = [rng.randint(1, max_len) for _ in range(n)]
    return [Example([rng.randrange(5, 300) for _ in range(k)], [rng.randint(0, 1) for _ in range(k)]) for k in lengths]


@pytest.mark.parametrize("seed", range(5))
def test_pack_fits_rows_and_uses_each_example_once_in_order(seed):
    seq_len = 64
    examples = random_examples(200, seq_len, seed)  # lengths up to exactly seq_len
    order = random.Random(seed).sample(range(len(examples)), len(examples))
    rows = pack(examples, order, seq_len)
    assert all(row and sum(len(examples[i].input_ids) for i in row) <= seq_len for row in rows)
    assert [i for row in rows for i in row] == order


def test_collate_restarts_positions_and_masks_boundaries_and_padding():
    examples = [Example([11, 12, 13], [1, 1, 1]), Example([21, 22], [0, 1]), Example([31, 32, 33, 34], [1, 0, 1, 1])]
    batch = collate([[0, 1], [2]], examples, seq_len=8, pad_id=0)
    assert batch["input_ids"].tolist() == [[11, 12, 13, 21, 22, 0, 0, 0], [31, 32, 33, 34, 0, 0, 0, 0]]
    # Padding's positions are 0: counted up, they would run past a learned position table beside a long row.
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 0, 0], [0, 1, 2, 3, 0, 0, 0, 0]]
    # First token of every example (nothing in it to predict from) and all padding: never a target.
    assert batch["loss_mask"].tolist() == [[0, 1, 1, 0, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0]]


def test_tokenize_drops_examples_longer_than_a_row(tokenizer):
    def trajectory(content: str) -> Trajectory:
        messages = [Message(role="user", content="What is 1+2?"), Message(role="assistant", content=content)]
        return Trajectory(
            task_id="t", policy="p", messages=messages, provenance=Provenance(provider="p", model="m", created=0)
        )

    examples, dropped, _ = tokenize(tokenizer, [trajectory("Answer: 3"), trajectory("carry " * 200)], seq_len=64)
    assert dropped == {"longer than a row": 1} and len(examples) == 1
    assert (
        masked_text(tokenizer, render_for_training(tokenizer, trajectory("Answer: 3").messages))
        == "Answer: 3<|im_end|>"
    )


@pytest.fixture(scope="module")
def packed_setup(tokenizer):
    model = build_tiny_llama(tokenizer, TinyModelConfig(), seed=0).eval()
    examples = [
        Example(r.input_ids, r.loss_mask)
        for r in (
            render_for_training(tokenizer, conversation(reasoning)[:n])
            for reasoning, n in [(True, 3), (False, 5), (True, 6)]
        )
    ]
    seq_len = sum(len(e.input_ids) for e in examples) + 7  # some padding at the end
    batch = collate([[0, 1, 2]], examples, seq_len, tokenizer.pad_token_id)
    return model, examples, batch


def logits_of(model, input_ids, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, use_cache=False, **kwargs).logits[0]


def test_packed_examples_do_not_attend_across_boundaries(packed_setup):
    model, examples, batch = packed_setup
    packed = logits_of(model, batch["input_ids"], position_ids=batch["position_ids"])
    at = 0
    for example in examples:
        n = len(example.input_ids)
        alone = logits_of(model, torch.tensor([example.input_ids]))
        torch.testing.assert_close(packed[at : at + n], alone, atol=1e-5, rtol=1e-5)
        at += n


@pytest.mark.parametrize("broken", ["positions-not-restarting", "full-attention-mask"])
def test_packing_check_detects_cross_contamination(packed_setup, broken):
    # The control for the test above: break the segment boundaries and the second example's logits change.
    model, examples, batch = packed_setup
    seq_len = batch["input_ids"].shape[1]
    if broken == "positions-not-restarting":
        kwargs = {"position_ids": torch.arange(seq_len)[None]}
    else:  # restarting positions, but a 2-D mask that lets every token see all before it
        kwargs = {"position_ids": batch["position_ids"], "attention_mask": torch.ones(1, seq_len, dtype=torch.long)}
    packed = logits_of(model, batch["input_ids"], **kwargs)
    first, second = len(examples[0].input_ids), len(examples[1].input_ids)
    alone = logits_of(model, torch.tensor([examples[1].input_ids]))
    assert (packed[first : first + second] - alone).abs().max() > 1e-3
