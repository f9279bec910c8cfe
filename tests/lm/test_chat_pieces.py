"""An assistant turn's training tokens are those the model would generate after its prompt: a SentencePiece
tokenizer (transformers' LlamaTokenizer, as Llama 2 and Mistral load) tokenizing the turn alone had written a
"▁" before it, a space the model never generates (and a top-k teacher's tokens never lined up with it); and
the text a template writes after the end-of-turn token (ChatML's newline) is not trained on: the model stops
at that token."""

from __future__ import annotations

import json

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers.models.llama.tokenization_llama import LlamaTokenizer

from warmstart.lm.chat import continuation_ids, render_for_training
from warmstart.types import Message

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TURNS = [
    Message(role="user", content="What is 12+34?"),
    Message(role="assistant", content="Answer: 46"),
    Message(role="user", content="Sure?"),
    Message(role="assistant", content="Yes, sure. Answer: 46"),
]


def sentencepiece_tokenizer() -> LlamaTokenizer:
    """A small BPE over Metaspace with the prefix space on the first piece only, as LlamaTokenizer loads."""
    texts = ["What is 12+34? Answer: 46", "Sure? Yes, sure. Answer: 46", "hello world"] * 50
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    alphabet = list("\n<>|/[]_INSTmrtu")
    bpe.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet)
    )
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = LlamaTokenizer(vocab=model["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def test_a_sentencepiece_turn_has_the_tokens_of_the_whole_text_not_a_prefix_space():
    tokenizer = sentencepiece_tokenizer()
    rendered = render_for_training(tokenizer, TURNS)
    text = tokenizer.apply_chat_template([m.model_dump(include={"role", "content"}) for m in TURNS], tokenize=False)
    assert rendered.input_ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(rendered.input_ids) == text
    trained = [tokenizer.convert_ids_to_tokens(i) for i, m in zip(rendered.input_ids, rendered.loss_mask) if m]
    assert "▁" not in trained and trained[0] == "Answer:▁46"


def test_the_newline_chatml_writes_after_the_end_of_turn_is_not_trained():
    tokenizer = sentencepiece_tokenizer()
    rendered = render_for_training(tokenizer, TURNS)
    tokens = tokenizer.convert_ids_to_tokens(rendered.input_ids)
    ends = [i for i, token in enumerate(tokens) if token == "<|im_end|>"]
    assert [rendered.loss_mask[i] for i in ends] == [0, 1, 0, 1]  # the assistant's end-of-turn is trained
    assert all(tokens[i + 1] == "\n" and rendered.loss_mask[i + 1] == 0 for i in ends)  # what follows is not


def test_the_ids_after_a_tool_turn_are_those_of_the_whole_conversation_not_a_prefix_space():
    """A multi-turn rollout appends the template's text after a policy turn (tool results, the next prompt)
    to the ids the policy sampled: tokenized alone it began with a "▁" the whole conversation does not have."""
    tokenizer = sentencepiece_tokenizer()
    messages = TURNS[:3]
    ids = continuation_ids(tokenizer, messages, "<|im_end|>")
    dicts = [m.model_dump(include={"role", "content"}) for m in messages]
    text = tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=True)
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert whole[-len(ids) :] == ids
    assert tokenizer.convert_ids_to_tokens(ids)[:2] == ["\n", "<|im_start|>"]
    assert tokenizer.decode(ids) == text[text.rindex("Answer: 46<|im_end|>") + len("Answer: 46<|im_end|>") :]
