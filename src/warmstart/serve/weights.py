"""Full-weight reload (`--enable-weight-updates`, SGLang's `/update_weights_from_disk`): the weights of a
`save_pretrained` directory of the same architecture copied into the served model.

Reading and checking happen in the HTTP handler's thread, on a model of its own (the served one untouched,
and the worker goes on serving meanwhile); only `copy_weights` touches the served model, and the engine's
worker runs it between slices. Every name and shape is checked before anything is copied, so a directory
that does not fit leaves the old weights served, whole.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from ..errors import first_line


class WeightsError(Exception):
    """Why a directory's weights cannot replace the served ones (one line)."""


def weight_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def tied_weights(model: torch.nn.Module) -> list[list[str]]:
    """The names that share one tensor in the served model (e.g. `lm_head.weight` and the embedding), each
    group in state_dict order: `copy_weights` writes a group's storage once per name, so the last one wins."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict().items():
        groups.setdefault(tensor.data_ptr(), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def read_weights(path: str, shapes: dict[str, tuple[int, ...]], ties: list[list[str]]) -> dict[str, torch.Tensor]:
    """The tensors of the model saved at `path`, one per served weight, each of the served shape, finite, and
    equal within each group of names the served model ties (`ties`), which can hold only one of them."""
    if not Path(path).is_dir():
        raise WeightsError(f"no directory at {path}")
    try:
        # float32, torch's default dtype: loading in another one would set the process-wide default while the
        # worker generates; `copy_weights` casts to the served dtype.
        state = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()
    except Exception as exc:  # a broken directory fails in many ways (OSError, SafetensorError, RuntimeError, ...)
        raise WeightsError(
            f"cannot load a model from {path}: {type(exc).__name__}: {first_line(exc) or '(no message)'}"
        ) from None
    missing = sorted(shapes.keys() - state.keys())
    if missing:
        raise WeightsError(f"{path} is another architecture: it has no {missing[0]} ({len(missing)} weights missing)")
    for name, shape in shapes.items():
        if tuple(state[name].shape) != shape:
            raise WeightsError(
                f"{path} does not match the served model: {name} is {tuple(state[name].shape)}, not {shape}"
            )
    for names in ties:
        untied = next((name for name in names[1:] if not torch.equal(state[name], state[names[0]])), None)
        if untied is not None:
            raise WeightsError(f"{path} unties {untied} from {names[0]}; the served model ties them")
    for name in shapes:
        if not torch.isfinite(state[name]).all():
            raise WeightsError(f"{path} has non-finite values (NaN or infinity) in {name}")
    return {name: state[name] for name in shapes}


@torch.no_grad()
def copy_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    for name, tensor in model.state_dict().items():
        tensor.copy_(weights[name])
