"""A token's own bytes where decoding it alone gives U+FFFD (part of a multi-byte character): byte-level
BPE and SentencePiece's byte fallback; `warmstart serve`'s log-prob `bytes` built from them, and a
teacher's recorded top-k found by them."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

from warmstart.config import TinyModelConfig
from warmstart.distill.topk import align, token_index
from warmstart.lm.chat import assistant_spans, render_for_training
from warmstart.lm.scoring import TokenLogprob
from warmstart.lm.tinymodel import save_tiny_student
from warmstart.lm.token_bytes import TokenBytes, byte_level_alphabet
from warmstart.serve.response import logprob_entries
from warmstart.types import Message

TEXT = "日本 é 🙂 plain"


def byte_fallback_tokenizer() -> PreTrainedTokenizerFast:
    """Llama 2's way: pieces with "▁" for spaces, and `<0xHH>` byte pieces for what the vocabulary lacks."""
    vocab = {"<unk>": 0, **{f"<0x{b:02X}>": 1 + b for b in range(256)}, "▁": 257, "p": 258, "l": 259, "a": 260}
    vocab |= {"i": 261, "n": 262}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def test_the_byte_level_alphabet_writes_every_byte_once():
    alphabet = byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256)) and alphabet["A"] == 65 and alphabet["Ġ"] == 32


def test_serve_logprob_bytes_join_back_into_the_text(tmp_path):
    # Trained on ASCII only: every byte of the other characters stays a token of its own.
    byte_level = save_tiny_student(["plain text"] * 20, tmp_path / "tiny", TinyModelConfig(vocab_size=300), seed=0)
    for tokenizer in (PreTrainedTokenizerFast.from_pretrained(byte_level), byte_fallback_tokenizer()):
        ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
        assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # the case this is for: halves of characters
        entries = logprob_entries(tokenizer, [TokenLogprob(i, -0.5, [(i, -0.5)]) for i in ids])
        for entry in entries:
            assert entry["top_logprobs"][0]["bytes"] == entry["bytes"]
        joined = bytes(b for entry in entries for b in entry["bytes"]).decode()
        assert joined.strip() == TEXT  # SentencePiece's leading "▁" is the one space more


def test_sentencepiece_tokens_keep_their_leading_space_and_added_tokens_their_text():
    tokenizer = byte_fallback_tokenizer()
    space, plain = tokenizer("p", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode([space]) == ""  # decoded alone, the decoder strips the space it starts with
    assert logprob_entries(tokenizer, [TokenLogprob(space, -0.1, [])])[0]["token"] == " "
    assert logprob_entries(tokenizer, [TokenLogprob(plain, -0.1, [])])[0]["bytes"] == [112]
    tokenizer.add_special_tokens({"eos_token": "<|end of turn|>"})  # a space in it: no piece of any alphabet
    entry = logprob_entries(tokenizer, [TokenLogprob(tokenizer.eos_token_id, -0.1, [])])[0]
    assert entry["token"] == "<|end of turn|>" and bytes(entry["bytes"]) == b"<|end of turn|>"
    assert TokenBytes(tokenizer)(tokenizer.eos_token_id) is None


def test_recorded_top_k_with_parts_of_characters_lines_up_by_their_bytes(tmp_path):
    model_dir = save_tiny_student(["plain text"] * 20, tmp_path / "tiny", TinyModelConfig(vocab_size=300), seed=0)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    messages = [Message(role="user", content="Größe?"), Message(role="assistant", content="Größe: 7 ü")]
    rendered = render_for_training(tokenizer, messages)
    [(start, end)] = assistant_spans(rendered.loss_mask)
    ids = rendered.input_ids[start : end - 1]  # the turn's tokens, its end-of-turn token left out
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)

    def entry(i: int, with_bytes: bool) -> dict:  # as OpenAI's API and `warmstart serve` give a token
        data = {"bytes": list(TokenBytes(tokenizer)(i))} if with_bytes else {}
        return {"token": tokenizer.decode([i]), "logprob": -0.1, "top_logprobs": [], **data}

    index = token_index(tokenizer)
    for with_bytes, aligned in ((True, 1), (False, 0)):
        turns = [[entry(i, with_bytes) for i in ids]]
        teacher, stats = align(rendered.input_ids, rendered.loss_mask, turns, index)
        assert (stats.turns, stats.aligned) == (1, aligned)
    turns = [[entry(i, True) for i in ids]]
    teacher, _ = align(rendered.input_ids, rendered.loss_mask, turns, index)
    assert [support[0] for support in teacher.ids[start : end - 1]] == ids
