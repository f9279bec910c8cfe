"""Loading local causal LMs: a `save_pretrained` directory, or a GGUF file (dequantized to float)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from .errors import WarmstartError


def resolve_model_path(path: str | Path, key: str) -> Path:
    path = Path(path).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    if not path.is_dir():
        raise WarmstartError(f"{key}: no model directory or .gguf file at {path}")
    if not (path / "config.json").exists():
        raise WarmstartError(f"{key}: {path} has no config.json, so it is not a transformers model directory")
    return path


def load_model_and_tokenizer(path: str | Path, key: str):
    path = resolve_model_path(path, key)
    if path.suffix == ".gguf":
        kwargs = {"gguf_file": path.name}
        path = path.parent
    else:
        kwargs = {}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def gguf_to_pretrained(gguf: Path, out: Path) -> Path:
    """A GGUF checkpoint as a plain float `save_pretrained` directory.

    transformers dequantizes GGUF on load but keeps the model flagged as quantized, which it then
    refuses to save; a fresh model built from the same config takes the dequantized weights instead.
    """
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out
