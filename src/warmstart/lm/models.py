"""Loading local causal LMs: a `save_pretrained` directory, or a GGUF file (dequantized to float)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..errors import WarmstartError, first_line
from .paths import resolve_model_path

# transformers dequantizes GGUF through the `gguf` package and refuses without `accelerate` installed.
GGUF_NEEDS = ("gguf", "accelerate")


def _from_pretrained_args(path: Path, key: str) -> tuple[Path, dict]:
    """A directory as it is; a .gguf file as its directory plus `gguf_file`."""
    if path.suffix != ".gguf":
        return path, {}
    missing = [name for name in GGUF_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise WarmstartError(f"{key}: reading {path.name} needs {' and '.join(missing)}: pip install 'warmstart[gguf]'")
    return path.parent, {"gguf_file": path.name}


@contextmanager
def loading(path, key: str):
    """A model directory that is there but cannot be loaded (weights cut short, a tokenizer file missing or
    broken, a config transformers cannot read) is one error naming the recipe key and the path. Broad on
    purpose: whatever transformers, tokenizers or safetensors raise, this user's model cannot be used."""
    try:
        yield
    except WarmstartError:
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise WarmstartError(
            f"{key}: cannot load the model at {path} ({type(exc).__name__}: {first_line(exc)})"
        ) from None


def load_tokenizer(path: str | Path, key: str):
    directory, kwargs = _from_pretrained_args(resolve_model_path(path, key), key)
    with loading(directory, key):
        tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(path: str | Path, key: str):
    """The model's config alone (no weights read)."""
    directory, kwargs = _from_pretrained_args(resolve_model_path(path, key), key)
    with loading(directory, key):
        return AutoConfig.from_pretrained(directory, **kwargs)


def load_model_and_tokenizer(path: str | Path, key: str, device=None):
    """(model in fp32 on `device`, or the CPU; tokenizer whose pad token the model embeds)."""
    directory, kwargs = _from_pretrained_args(resolve_model_path(path, key), key)
    with loading(directory, key):
        model = AutoModelForCausalLM.from_pretrained(directory, dtype="float32", **kwargs)
    tokenizer = load_tokenizer(path, key)
    pad_with_an_embedded_token(tokenizer, model, key)
    return (model.to(device) if device is not None else model), tokenizer


def pad_with_an_embedded_token(tokenizer, model, key: str) -> None:
    """Padding fills rows with the pad token, which goes through the input embedding like any other. A
    tokenizer may name one the model has no row for: transformers' Qwen2 tokenizer, for one, adds
    <|endoftext|> as a new token when its config names no pad. The eos token pads then, as it does where
    there is no pad token at all; where the model embeds neither, one error (not an IndexError mid-step)."""
    embedding = model.get_input_embeddings()
    rows = getattr(embedding, "num_embeddings", None)
    if rows is None or (tokenizer.pad_token_id is not None and tokenizer.pad_token_id < rows):
        return
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id < rows:
        tokenizer.pad_token = tokenizer.eos_token
        return
    raise WarmstartError(
        f"{key}: the tokenizer pads with {tokenizer.pad_token!r} (id {tokenizer.pad_token_id}), which the model's "
        f"{rows} token embeddings do not include, and has no eos token they do: set pad_token in its "
        "tokenizer_config.json to a token of the model"
    )


# Module names of a learned absolute position table (GPT-2 and GPT-Neo's `wpe`, OPT's `embed_positions`, BLOOM
# and rotary models have none): a position past its rows is an IndexError in the embedding, mid-step.
LEARNED_POSITION_NAMES = ("wpe", "embed_positions", "position_embeddings")


def learned_position_limit(model) -> int | None:
    """How many positions the model's learned position table holds (its config's n_positions or
    max_position_embeddings); None for a model without one (rotary or relative positions extrapolate)."""
    learned = any(
        name.rsplit(".", 1)[-1] in LEARNED_POSITION_NAMES and isinstance(module, torch.nn.Embedding)
        for name, module in model.named_modules()
    )
    if not learned:
        return None
    limits = [getattr(model.config, key, None) for key in ("n_positions", "max_position_embeddings")]
    return min((limit for limit in limits if isinstance(limit, int)), default=None)


def embedded_rows(model) -> int | None:
    """The token ids the model has both an embedding and an output row for (None: it says neither)."""
    heads = [model.get_input_embeddings(), model.get_output_embeddings()]
    sizes = [
        getattr(head, "num_embeddings", None) or getattr(head, "out_features", None)
        for head in heads
        if head is not None
    ]
    return min((size for size in sizes if size), default=None)


def check_ids_embedded(largest_id: int, tokenizer, model, key: str) -> None:
    """Refuse token ids the model has no embedding or output row for (tokens added to a tokenizer without
    resize_token_embeddings): one error before training, not an IndexError in the embedding mid-step."""
    rows = embedded_rows(model)
    if rows is not None and largest_id >= rows:
        raise WarmstartError(
            f"{key}: the data tokenizes to {tokenizer.convert_ids_to_tokens(largest_id)!r} (id {largest_id}), but "
            f"the model has {rows} token embeddings: after adding tokens, call "
            "model.resize_token_embeddings(len(tokenizer)) and save the model"
        )


def gguf_to_pretrained(gguf: Path, out: Path, key: str = "sft.student") -> Path:
    """A GGUF checkpoint as a plain float `save_pretrained` directory.

    transformers dequantizes GGUF on load but keeps the model flagged as quantized, which it then
    refuses to save; a fresh model built from the same config takes the dequantized weights instead.
    """
    directory, kwargs = _from_pretrained_args(gguf, key)
    tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(directory, dtype="float32", **kwargs)
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


def vocabulary_mismatch(teacher_path: Path, student_tokenizer) -> str | None:
    """None if the teacher's tokenizer has the student's vocabulary, else what differs (logit distillation
    and a teacher scoring the student's tokens both need one tokenizer on both sides)."""
    ours, theirs = student_tokenizer.get_vocab(), load_tokenizer(teacher_path, "teacher").get_vocab()
    if ours == theirs:
        return None
    only = sorted(set(theirs) - set(ours))[:1] or sorted(set(ours) - set(theirs))[:1]
    return f"the teacher's vocabulary ({len(theirs)} tokens) differs from the student's ({len(ours)})" + (
        f", e.g. {only[0]!r}" if only else ""
    )
