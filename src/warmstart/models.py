"""Loading local causal LMs: a `save_pretrained` directory, or a GGUF file (dequantized to float)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .errors import WarmstartError
from .losses import token_logprobs


def resolve_model_path(path: str | Path, key: str) -> Path:
    path = Path(path).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    if not path.is_dir():
        raise WarmstartError(f"{key}: no model directory or .gguf file at {path}")
    if not (path / "config.json").exists():
        raise WarmstartError(f"{key}: {path} has no config.json, so it is not a transformers model directory")
    return path


def _from_pretrained_args(path: Path) -> tuple[Path, dict]:
    """A directory as it is; a .gguf file as its directory plus `gguf_file`."""
    return (path.parent, {"gguf_file": path.name}) if path.suffix == ".gguf" else (path, {})


def load_tokenizer(path: str | Path, key: str):
    directory, kwargs = _from_pretrained_args(resolve_model_path(path, key))
    tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(path: str | Path, key: str):
    directory, kwargs = _from_pretrained_args(resolve_model_path(path, key))
    model = AutoModelForCausalLM.from_pretrained(directory, dtype="float32", **kwargs)
    return model, load_tokenizer(path, key)


def sequence_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p of each next token of a right-padded batch: [B, L-1] (position t scores token t+1)."""
    attention = torch.ones_like(batch["input_ids"])
    logits = model(input_ids=batch["input_ids"], attention_mask=attention, use_cache=False).logits
    return token_logprobs(logits[:, :-1], batch["input_ids"][:, 1:])


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
