"""Fixtures of the lm tests that train a tiny Llama in memory (its shape: helpers.TINY_SHAPE)."""

from __future__ import annotations

import pytest
import torch

from warmstart.lm.tinymodel import train_tokenizer
from warmstart.train.data import Example, collate


@pytest.fixture(scope="session")
def arithmetic_tokenizer():
    return train_tokenizer(["user\nWhat is 12+3?", "assistant\n2+3=5 carry 0, so far 5\nAnswer: 15"] * 20, 300)


@pytest.fixture(scope="session")
def packed_batch(arithmetic_tokenizer):
    """Two packed rows of two documents each: the model's attention gets a block-diagonal causal mask."""
    generator = torch.Generator().manual_seed(0)
    examples = [
        Example(torch.randint(5, len(arithmetic_tokenizer), (n,), generator=generator).tolist(), [1] * n)
        for n in (9, 23, 14, 30)
    ]
    return collate([[0, 1], [2, 3]], examples, 48, arithmetic_tokenizer.pad_token_id)
