"""LoRA adapters through peft: `[sft.lora]` / `[grpo.lora]` with r > 0 train an adapter, not the weights.

A checkpoint then holds the adapter only (peft's `save_pretrained`: adapter_config.json and
adapter_model.safetensors, with the tokenizer and the trainer state); resume puts it back on the same
base. The published model (models/<output>) is the base with the adapter merged in, an ordinary
`save_pretrained` directory that serve, eval and any other tool load as they are, and the adapter
itself beside it in models/<output>/adapter/ for tools that load base + adapter (vLLM's LoRA endpoints,
peft). With GRPO's kl_weight > 0 no second model is kept: the base with the adapter switched off is
the reference (`AdapterOff`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from ..config import LoraSettings
from ..errors import WarmstartError, first_line
from ..lm.models import load_model_and_tokenizer
from ..runs.checkpoint import written_whole

log = logging.getLogger(__name__)
ADAPTER_DIR = "adapter"  # inside a published model directory
# The layers peft adapts by name or as "all-linear": nn.Linear, and transformers' Conv1D, the linear layer
# of GPT-2-style models (c_attn, c_proj, c_fc), whose weight is stored transposed.
ADAPTABLE = (torch.nn.Linear, Conv1D)


def enabled(settings: LoraSettings) -> bool:
    return settings.r > 0


def peft_config(settings: LoraSettings) -> LoraConfig:
    targets = settings.target_modules
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        # peft takes "all-linear" as a string (every linear layer but the output head), names as a list
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )


def linear_names(model: torch.nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers: what target_modules may name."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, ADAPTABLE)})


def layer_shape(module: torch.nn.Module) -> tuple[int, int]:
    """(in, out) of a linear layer; Conv1D keeps its weight as [in, out], nn.Linear as [out, in]."""
    rows, columns = module.weight.shape
    return (rows, columns) if isinstance(module, Conv1D) else (columns, rows)


def adapted_layers(model: torch.nn.Module, settings: LoraSettings) -> dict[str, tuple[int, int]]:
    """Name -> (in, out) of each linear layer the adapter goes on ("all-linear": every one but the output head)."""
    head = model.get_output_embeddings()
    wanted = set(settings.target_modules)
    return {
        name: layer_shape(m)
        for name, m in model.named_modules()
        if isinstance(m, ADAPTABLE) and m is not head and ("all-linear" in wanted or name.rsplit(".", 1)[-1] in wanted)
    }


def meta_model(config) -> torch.nn.Module:
    """A model of `config` with its parameters on the meta device: exact shapes, no memory."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def check_targets(config, settings: LoraSettings, key: str) -> None:
    """Before anything loads or is written: the target modules exist in a model of this config (built on
    the meta device, which allocates nothing), and the rank is one of a low-rank adapter."""
    model = meta_model(config)
    if not settings.target_modules:  # peft would say "no target_modules passed", naming none of ours
        raise WarmstartError(
            f'{key}.target_modules is empty: name the layers to adapt (e.g. ["q_proj", "v_proj"]) or ["all-linear"]'
        )
    wanted = [t for t in settings.target_modules if t != "all-linear"]
    missing = [t for t in wanted if t not in linear_names(model)]
    if missing:
        raise WarmstartError(
            f"{key}.target_modules: {', '.join(missing)} not among the model's linear layers ({', '.join(linear_names(model))})"
        )
    tied = tied_head_name(model)
    if tied in wanted:  # merged, its delta would land in the weight the input embedding shares: another model
        raise WarmstartError(
            f"{key}.target_modules: {tied} is the output head, whose weight the input embedding shares "
            "(tie_word_embeddings): an adapter on it cannot be merged into the model it trained"
        )
    check_rank(adapted_layers(model, settings), settings.r, key)


def check_rank(layers: dict[str, tuple[int, int]], r: int, key: str) -> None:
    """An adapter of rank r has r x (in + out) parameters per layer, and its update no more rank than
    min(in, out): past the layers' widths it outgrows the weights it adapts and adds nothing they could
    not learn themselves (peft builds it without a word). Refused where it has as many parameters as them."""
    weights = sum(n_in * n_out for n_in, n_out in layers.values())
    per_rank = sum(n_in + n_out for n_in, n_out in layers.values())
    if not layers or r * per_rank < weights:
        return
    name, (n_in, n_out) = min(layers.items(), key=lambda item: min(item[1]))
    raise WarmstartError(
        f"{key}.r = {r}: the adapter would have {r * per_rank:,} parameters, at least as many as the {weights:,} weights it "
        f"adapts (an update of {name.rsplit('.', 1)[-1]}, {n_in} x {n_out}, has rank {min(n_in, n_out)} at most): "
        f"pick r below {-(-weights // per_rank)}, or r = 0 to train every weight"
    )


def adapter_parameters(config, settings: LoraSettings, key: str) -> int:
    """The adapter's parameter count on a model of `config`, as peft builds it (Linear and Conv1D layers,
    an MoE's expert weights), on the meta device: nothing is allocated."""
    check_targets(config, settings, key)
    with warnings.catch_warnings(), peft_refusal(key):
        warnings.simplefilter("ignore")  # peft's notes on the model's layers: the run itself shows them
        wrapped = get_peft_model(meta_model(config), peft_config(settings))
    return sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


@contextlib.contextmanager
def peft_refusal(key: str):
    """peft's own refusal (e.g. a model class it cannot adapt) as one error naming the recipe key."""
    try:
        yield
    except ValueError as exc:
        raise WarmstartError(f"{key}: peft cannot add a LoRA adapter to this model: {first_line(exc)}") from None


def tied_head_name(model: torch.nn.Module) -> str | None:
    """The last name of the output head where its weight is the input embedding's, else None."""
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embedding is None or head.weight is not embedding.weight:
        return None
    return next(name.rsplit(".", 1)[-1] for name, m in model.named_modules() if m is head)


def wrap(model: torch.nn.Module, settings: LoraSettings, key: str) -> PeftModel:
    """`model` with a fresh adapter."""
    check_targets(model.config, settings, key)
    with quiet_peft(), peft_refusal(key):
        wrapped = get_peft_model(model, peft_config(settings))
    log.info("%s: %s", key, trainable_summary(wrapped))
    return wrapped


def trainable_summary(model: torch.nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"LoRA trains {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f} %)"


def load_for_training(base: Path, adapter: Path | None, settings: LoraSettings, key: str, device=None):
    """(model, tokenizer) on `device`: `base` with a fresh adapter, or with the one saved in checkpoint `adapter`."""
    model, tokenizer = load_model_and_tokenizer(base, key, device)
    if adapter is None:
        return wrap(model, settings, f"{key}.lora"), tokenizer
    check_resumable(adapter, settings, key)
    with quiet_peft():
        return PeftModel.from_pretrained(model, adapter, is_trainable=True), tokenizer


@contextlib.contextmanager
def quiet_peft():
    """peft's PeftModel reads `model.is_gradient_checkpointing`, which transformers 5 deprecates (for
    `is_activation_checkpointing`) with a FutureWarning at every adapter wrap or load: three such lines in
    a LoRA run, about code that is neither the user's nor warmstart's. That message and peft's note on each
    Conv1D layer are silenced here; any other warning shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        # A Conv1D layer (GPT-2's c_attn) stores its weight transposed: peft sets fan_in_fan_out for it itself,
        # and says so once per layer.
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False but the target module is `Conv1D`")
        yield


def check_resumable(checkpoint: Path, settings: LoraSettings | None, key: str) -> None:
    """A checkpoint to resume is of the run's kind: an adapter with these settings for LoRA, whole weights
    without it; else one error (a changed setting would otherwise resume the old adapter, or fail in peft)."""
    config_path = checkpoint / "adapter_config.json"
    if settings is None or not enabled(settings):
        if config_path.exists():
            raise WarmstartError(
                f"{key}: {checkpoint} holds a LoRA adapter but {key}.lora is off: remove {checkpoint.parent} or set another output"
            )
        return
    if not config_path.exists():
        raise WarmstartError(
            f"{key}.lora: {checkpoint} holds whole weights, not an adapter: remove {checkpoint.parent} or set another output"
        )
    saved = json.loads(config_path.read_text())
    wanted = peft_config(settings)
    same_targets = (
        set(saved.get("target_modules") or []) == set(wanted.target_modules) or wanted.target_modules == "all-linear"
    )
    changed = [
        f"{name} {was!r} (now {now!r})"
        for name, was, now, same in (
            ("r", saved.get("r"), wanted.r, saved.get("r") == wanted.r),
            ("alpha", saved.get("lora_alpha"), wanted.lora_alpha, saved.get("lora_alpha") == wanted.lora_alpha),
            ("target_modules", sorted(saved.get("target_modules") or []), settings.target_modules, same_targets),
        )
        if not same
    ]
    if changed:
        raise WarmstartError(
            f"{key}.lora: {checkpoint} was trained with {', '.join(changed)}: "
            f"remove {checkpoint.parent} to train with the new settings, or set another output"
        )


def publish(checkpoint: Path, base: Path, out: Path) -> None:
    """models/<output>: `base` with the checkpoint's adapter merged in (a plain save_pretrained model),
    the adapter beside it in adapter/; written to a temporary directory and swapped in whole."""
    model, tokenizer = load_model_and_tokenizer(base, "lora")
    with quiet_peft():
        merged = PeftModel.from_pretrained(model, checkpoint).merge_and_unload()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with written_whole(tmp):
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ADAPTER_DIR).mkdir()
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(checkpoint / name, tmp / ADAPTER_DIR / name)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


class AdapterOff:
    """The base under a peft model: GRPO's KL reference with LoRA, without a second copy of the weights.
    Scored inside `switched_off()`, which yields the base model (its config, decoder and head, as scoring
    reads them: lm/scoring.py) while the adapter is switched off."""

    def __init__(self, model: PeftModel):
        self.peft_model = model

    @contextlib.contextmanager
    def switched_off(self):
        training = self.peft_model.training
        self.peft_model.eval()  # a reference, as the frozen copy it replaces was: no dropout
        try:
            with self.peft_model.disable_adapter():
                yield self.peft_model.get_base_model()
        finally:
            self.peft_model.train(training)
