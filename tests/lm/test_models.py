"""Loading local models: a clear error where a .gguf file cannot be read for want of the `gguf` extra."""

from __future__ import annotations

import importlib.util

import pytest

from warmstart.errors import WarmstartError
from warmstart.lm import models


def test_a_gguf_model_without_the_gguf_extra_is_one_clear_error(tmp_path, monkeypatch):
    gguf = tmp_path / "m.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a)
    )
    with pytest.raises(
        WarmstartError, match=r"sft.student: reading m.Q4_1.gguf needs accelerate: pip install 'warmstart\[gguf\]'"
    ):
        models.load_model_and_tokenizer(gguf, "sft.student")
