"""A token's own bytes where decoding it alone gives U+FFFD (part of a multi-byte character): byte-level
BPE and SentencePiece's byte fallback, and `warmstart serve`'s log-prob `bytes` built from them."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

from warmstart.config import TinyModelConfig
from warmstart.lm.scoring import TokenLogprob
from warmstart.lm.tinymodel import save_tiny_student
from warmstart.lm.token_bytes import byte_level_alphabet, raw_token_bytes
from warmstart.serve.response import logprob_entry

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
        entries = [logprob_entry(tokenizer, TokenLogprob(i, -0.5, [(i, -0.5)])) for i in ids]
        for entry in entries:
            assert entry["top_logprobs"][0]["bytes"] == entry["bytes"]
        joined = bytes(b for entry in entries for b in entry["bytes"]).decode()
        assert joined.strip() == TEXT  # SentencePiece's leading "▁" is the one space more


def test_sentencepiece_tokens_keep_their_leading_space_and_added_tokens_their_text():
    tokenizer = byte_fallback_tokenizer()
    space, plain = tokenizer("p", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode([space]) == ""  # decoded alone, the decoder strips the space it starts with
    assert logprob_entry(tokenizer, TokenLogprob(space, -0.1, []))["token"] == " "
    assert logprob_entry(tokenizer, TokenLogprob(plain, -0.1, []))["bytes"] == [112]
    tokenizer.add_special_tokens({"eos_token": "<|end of turn|>"})  # a space in it: no piece of any alphabet
    entry = logprob_entry(tokenizer, TokenLogprob(tokenizer.eos_token_id, -0.1, []))
    assert entry["token"] == "<|end of turn|>" and bytes(entry["bytes"]) == b"<|end of turn|>"
    assert raw_token_bytes(tokenizer, tokenizer.eos_token_id) is None
