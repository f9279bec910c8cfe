"""LoRA adapters served beside the base model (`--enable-lora`): read from a peft `save_pretrained`
directory, checked against the base, and applied by forward hooks on the base's linear layers.

Why not peft's PeftModel: it wraps the base and renames every adapted weight (`...q_proj.base_layer.weight`),
which a full-weight reload (`weights.py`) would then have to map back, and it switches adapters by mutating
the modules. Here the base model is never changed: each adapted linear layer gets one hook that adds
`scale * B(A(x))` of the active adapter, or nothing; serving an adapter is `using(name)` around a forward.
What peft adds beyond that (DoRA, trained biases, `modules_to_save`, LoRA on embeddings or GPT-2's Conv1D)
is refused when the adapter is read, with the reason.

`read_adapter` runs in the HTTP handler's thread (reading files, no model access); `LoraSet.add`, `remove`
and `using` only in the engine's worker thread, which alone runs the model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import first_line

KEY_RE = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")
UNSUPPORTED = {"use_dora": "DoRA", "modules_to_save": "modules_to_save (fully trained layers)"}


class AdapterError(Exception):
    """Why a directory cannot be served as an adapter of this base model (one line)."""


@dataclass(frozen=True)
class Linear:
    """What an adapter must fit: a base linear layer's shape, and where its weights live."""

    in_features: int
    out_features: int
    dtype: torch.dtype
    device: torch.device


@dataclass(frozen=True)
class LoraAdapter:
    path: str
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]  # module name -> (A [r, in], B [out, r], scale)


def linear_layers(model: torch.nn.Module) -> dict[str, Linear]:
    return {
        name: Linear(m.in_features, m.out_features, m.weight.dtype, m.weight.device)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
    }


def read_adapter(path: str, linears: dict[str, Linear]) -> LoraAdapter:
    """The adapter saved at `path`, checked against the base's linear layers, or an AdapterError."""
    directory = Path(path)
    if not directory.is_dir():
        raise AdapterError(f"no directory at {path}")
    config = _config(directory)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in _tensors(directory).items():
        match = KEY_RE.fullmatch(key)
        if match is None:
            raise AdapterError(f"{path}: tensor {key} is not a LoRA weight of a linear layer (not supported)")
        pairs.setdefault(match[1], {})[match[2]] = tensor
    if not pairs:
        raise AdapterError(f"{path}: the adapter has no LoRA weights")
    modules = {name: _module(name, ab, linears, config) for name, ab in sorted(pairs.items())}
    return LoraAdapter(str(path), modules)


def _config(directory: Path) -> dict:
    file = directory / "adapter_config.json"
    if not file.is_file():
        raise AdapterError(f"{directory} is not a peft adapter: it has no adapter_config.json")
    try:
        config = json.loads(file.read_text())
    except ValueError as exc:
        raise AdapterError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{file} is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{file}: peft_type is {config.get('peft_type')!r}; only LORA adapters are served")
    for key, what in UNSUPPORTED.items():
        if config.get(key):
            raise AdapterError(f"{file}: {what} is not supported")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{file}: bias {config['bias']!r} is not supported (only 'none')")
    return config


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    file = directory / "adapter_model.safetensors"
    if not file.is_file():
        file = directory / "adapter_model.bin"
    if not file.is_file():
        raise AdapterError(f"{directory} is not a peft adapter: no adapter_model.safetensors or adapter_model.bin")
    try:
        tensors = _load_tensors(file)
    except Exception as exc:  # each format fails its own way (SafetensorError, UnpicklingError, EOFError, ...)
        raise AdapterError(
            f"{file} cannot be read: {type(exc).__name__}: {first_line(exc) or '(no message)'}"
        ) from None
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise AdapterError(f"{file} does not hold a dictionary of tensors")
    return tensors


def _load_tensors(file: Path):
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file  # transformers' own dependency

        return load_file(file)
    return torch.load(file, map_location="cpu", weights_only=True)


def _module(name: str, ab: dict[str, torch.Tensor], linears: dict[str, Linear], config: dict) -> tuple:
    """(A, B, scale) of one adapted layer, on the base layer's device and dtype, after checking it fits."""
    base = linears.get(name)
    if base is None:
        raise AdapterError(f"the adapter does not fit the base model: it adapts {name}, not a linear layer of it")
    if set(ab) != {"A", "B"}:
        raise AdapterError(f"the adapter is incomplete: {name} has lora_{''.join(ab)} only")
    a, b = ab["A"], ab["B"]
    rank = a.shape[0] if a.dim() == 2 else 0
    if rank == 0 or tuple(a.shape) != (rank, base.in_features) or tuple(b.shape) != (base.out_features, rank):
        raise AdapterError(
            f"the adapter does not fit the base model: {name} is {base.in_features} -> {base.out_features}, "
            f"the adapter's lora_A is {tuple(a.shape)} and lora_B {tuple(b.shape)}"
        )
    if not (a.isfinite().all() and b.isfinite().all()):  # NaN weights would serve NaN log-probs, garbage text
        raise AdapterError(f"the adapter's weights of {name} are not all finite (NaN or infinite values)")
    alpha = _pattern_value(config.get("alpha_pattern") or {}, name, config.get("lora_alpha", 8))
    scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    return a.to(base.device, base.dtype), b.to(base.device, base.dtype), float(scale)


def _pattern_value(patterns: dict, name: str, default: float) -> float:
    """peft's per-module override: the first pattern that matches the end of the module's name. The
    config is a file anyone may have written: a value that is not a number or a pattern that does not
    compile is the adapter's error (a 400), not the server's."""
    if not isinstance(patterns, dict):
        raise AdapterError(f"alpha_pattern must be an object of pattern: alpha, got {patterns!r}")
    value = next((v for p, v in patterns.items() if _matches(p, name)), default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AdapterError(f"the adapter's alpha for {name} must be a number, got {value!r}")
    return value


def _matches(pattern, name: str) -> bool:
    try:
        return re.match(rf"(.*\.)?{pattern}$", name) is not None
    except (re.error, TypeError) as exc:
        raise AdapterError(f"alpha_pattern {pattern!r} is not a regular expression: {exc}") from None


class LoraSet:
    """The adapters loaded into one model, and which one its forward passes use now."""

    def __init__(self, model: torch.nn.Module):
        self.modules = dict(model.named_modules())
        # Replaced, never changed in place: handler threads read it (which names exist) while the worker writes.
        self.loaded: dict[str, LoraAdapter] = {}
        self.active: LoraAdapter | None = None
        self.hooked: set[str] = set()

    def add(self, name: str, adapter: LoraAdapter) -> None:
        for module in adapter.modules.keys() - self.hooked:
            self.modules[module].register_forward_hook(self._hook(module))
            self.hooked.add(module)
        self.loaded = {**self.loaded, name: adapter}

    def remove(self, name: str) -> None:
        self.loaded = {k: v for k, v in self.loaded.items() if k != name}  # its layers' hooks stay, idle

    @contextmanager
    def using(self, name: str | None) -> Iterator[None]:
        self.active = None if name is None else self.loaded[name]
        try:
            yield
        finally:
            self.active = None

    def _hook(self, module: str):
        def add_lora(layer, args, output):
            adapter = self.active
            if adapter is None or module not in adapter.modules:
                return None
            a, b, scale = adapter.modules[module]
            return output + scale * F.linear(F.linear(args[0], a), b)

        return add_lora
