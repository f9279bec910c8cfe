"""Admission for `warmstart serve`: a request that cannot fit the model's context is refused before it is queued.

Without these checks a prompt far longer than the context reached the engine, which spent minutes on it
while every other client waited behind it. Each check is answered in the handler thread (never the
engine's), as OpenAI answers it: a 400 with `code: "context_length_exceeded"` that names both numbers.

Tokenizing is the one costly step, so a prompt that cannot fit is refused by its length in characters
first: no token of the vocabulary spells more than `chars_per_token` characters, so a text longer than
context x chars_per_token has more tokens than the context holds, whatever they are (`longest_token_chars`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .request import ApiError

# transformers' "no limit known" value of `model_max_length` (VERY_LARGE_INTEGER) is ~1e30; any real one is far less.
UNSET_MODEL_MAX_LENGTH = 10**12
CONTEXT_CONFIG_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_window(model_config, tokenizer) -> int | None:
    """The most tokens (prompt + completion) the model takes: its config's own limit, which is what the
    position embeddings allow; the tokenizer's `model_max_length` only where the config names none (it is
    often unset, or copied from another model). None: neither knows."""
    for key in CONTEXT_CONFIG_KEYS:
        value = getattr(model_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < UNSET_MODEL_MAX_LENGTH:
        return value
    return None


def longest_token_chars(tokenizer) -> int:
    """A bound on the characters one token spells: twice the longest vocabulary entry (a byte-level entry
    has one character per byte, so it is at least as long as the text it decodes to; the factor 2 covers a
    normalizer that shortens the text before it is split, as NFKC composition does)."""
    return 2 * max(max((len(token) for token in tokenizer.get_vocab()), default=1), 1)


def too_long(message: str, param: str) -> ApiError:
    return ApiError(400, message, code="context_length_exceeded", param=param)


@dataclass(frozen=True)
class ContextLimit:
    """The model's context window and what the checks need to apply it; `tokens` None checks nothing."""

    tokens: int | None
    chars_per_token: int

    def check_max_tokens(self, max_tokens: int, param: str = "max_tokens") -> None:
        if self.tokens is not None and max_tokens > self.tokens:
            raise too_long(
                f"{param} is {max_tokens}, more than this model's context length of {self.tokens} tokens", param
            )

    def check_chars(self, chars: int, param: str) -> None:
        """Refuse, without tokenizing, a text too long to fit in any tokenization."""
        if self.tokens is not None and chars > self.tokens * self.chars_per_token:
            raise too_long(
                f"this model's context length is {self.tokens} tokens, and the prompt is {chars} characters, "
                f"more than {self.tokens} tokens can spell (at most {self.chars_per_token} characters each)",
                param,
            )

    def check_prompt(self, prompt_tokens: int, max_tokens: int, param: str) -> None:
        if self.tokens is not None and prompt_tokens + max_tokens > self.tokens:
            raise too_long(
                f"this model's context length is {self.tokens} tokens; the request asks for "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {param}, {max_tokens} for the "
                "completion). Shorten the prompt or lower max_tokens.",
                param,
            )

    def completion_room(self, prompt_tokens: int, asked: int) -> int:
        """A default max_tokens fitted to the room the prompt leaves, as OpenAI fits it (never below 1)."""
        if self.tokens is None:
            return asked
        return max(1, min(asked, self.tokens - prompt_tokens))
