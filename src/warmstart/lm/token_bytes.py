"""A token's own bytes, which decoding it alone does not always give.

A token may hold part of a multi-byte UTF-8 character (byte-level BPE splits "日" into three one-byte
tokens where no merge joins them); decoded alone it reads as U+FFFD, whose bytes are not the token's. And
a SentencePiece tokenizer's decoder strips the leading space of what it decodes, so "▁the" alone reads
"the". OpenAI's log-prob `token` and `bytes` are the token's own, so that a client can join a
completion's tokens back into its text. The ways tokenizers keep a token's bytes are read here:
byte-level BPE (GPT-2's alphabet: every byte written as one printable character; SmolLM2, Llama 3,
Qwen), SentencePiece's "▁" for a space (Metaspace, or a Replace decoder) and its byte fallback (`<0xE6>`
pieces; Llama 2, Mistral).
"""

from __future__ import annotations

import json
import re

BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def byte_level_alphabet() -> dict[str, int]:
    """The character byte-level BPE writes for each byte: printable Latin-1 bytes as themselves, the other
    bytes as the characters from U+0100 on, in byte order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    alphabet, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(256 + shifted)] = byte
            shifted += 1
    return alphabet


BYTE_LEVEL = byte_level_alphabet()


def decoder_states(tokenizer) -> list[dict]:
    """A fast tokenizer's decoder, or the decoders it chains, as their JSON states; [] where it has none."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return []
    state = json.loads(decoder.__getstate__())
    return state.get("decoders", [state]) if state.get("type") == "Sequence" else [state]


class TokenBytes:
    """The bytes a token id of `tokenizer` stands for (call it with the id), or None where the tokenizer
    keeps them in no way read here (an added token, a decoder of another kind: its text decoded alone is
    then the best there is). The tokenizer's decoders are read once, when it is made."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        decoders = decoder_states(tokenizer)
        kinds = {d.get("type") for d in decoders}
        self.byte_fallback, self.byte_level = "ByteFallback" in kinds, "ByteLevel" in kinds
        self.spaces = [space_replacement(d) for d in decoders if d.get("type") in ("Metaspace", "Replace")]

    def is_byte_piece(self, token_id: int) -> bool:
        """Whether the id is a byte-fallback piece (`<0x20>`): SentencePiece writes one only for bytes no
        ordinary piece of its holds."""
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        return self.byte_fallback and isinstance(piece, str) and BYTE_PIECE.fullmatch(piece) is not None

    def __call__(self, token_id: int) -> bytes | None:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str) or token_id in self.tokenizer.added_tokens_decoder:
            return None
        if self.byte_fallback and (match := BYTE_PIECE.fullmatch(piece)):
            return bytes([int(match.group(1), 16)])
        if self.byte_level:
            return bytes(BYTE_LEVEL[char] for char in piece) if all(char in BYTE_LEVEL for char in piece) else None
        if not self.spaces:
            return None
        for old, new in self.spaces:  # "▁" back to a space, as the decoder does before it strips the first one
            piece = piece.replace(old, new) if old else piece
        return piece.encode("utf-8")


def space_replacement(decoder: dict) -> tuple[str | None, str]:
    """What a Metaspace or Replace decoder replaces, and with what (None: a regex pattern, not applied)."""
    if decoder["type"] == "Metaspace":
        return decoder.get("replacement", "▁"), " "
    return decoder.get("pattern", {}).get("String"), decoder.get("content", "")


def token_text(tokenizer, own_bytes: TokenBytes, token_id: int) -> tuple[str, bytes]:
    """A token's text and bytes: its own bytes where the tokenizer keeps them (a part of a
    character reads as U+FFFD in the text), else the text it decodes to alone."""
    data = own_bytes(token_id)
    if data is None:
        text = tokenizer.decode([token_id])
        return text, text.encode("utf-8")
    return data.decode("utf-8", errors="replace"), data
