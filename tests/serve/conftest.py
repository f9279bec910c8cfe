"""The server the serve tests speak to: a real `warmstart serve` process over a real tiny model, one per
test module (each module that asks for `client` or `base_url` starts its own and stops it at its end)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from serve_helpers import running_server
from transformers import AutoTokenizer

from warmstart.config import TinyModelConfig
from warmstart.lm.tinymodel import save_tiny_student
from warmstart.serve.server import load_for_serving

TINY = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=300)
TEXTS = [f"what is {a} plus {b}? the answer is {a + b}." for a in range(20) for b in range(15)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_student(TEXTS, tmp_path_factory.mktemp("serve") / "tiny", TINY, seed=0)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def served_model(model_dir):
    """The tiny model and its tokenizer, loaded as `warmstart serve` loads them, for a server in this process."""
    return load_for_serving(model_dir, "cpu")


@pytest.fixture(scope="module")
def base_url(model_dir, tmp_path_factory):
    """The URL of a `warmstart serve` process, terminated when the module's tests are done."""
    with running_server(model_dir, tmp_path_factory.mktemp("serve-log")) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=120)
    yield client
    client.close()
