"""Where models run and in what precision: one place, so no stage scatters `.cuda()` calls.

`run.device = "auto"` takes a CUDA GPU, then Apple's MPS, then the CPU; a device named and absent is an
error naming it, never a silent fallback to the CPU. Precision `"auto"` is bf16 autocast (weights and
optimizer state stay fp32) on a GPU that supports it and fp32 on the CPU, where bf16 is only faster with
native bf16 matmul (AVX512-BF16 / AMX: `sft.precision = "bf16"` asks for it, lm/precision.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform

import torch

from ..errors import WarmstartError

log = logging.getLogger(__name__)


def resolve_device(name: str, key: str = "run.device") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return cuda_device()
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = (
            "a CPU-only build of torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        )
        raise WarmstartError(f'{key} = "cuda": no CUDA device is visible ({build})')
    if name == "mps" and not torch.backends.mps.is_available():
        raise WarmstartError(f'{key} = "mps": no Apple MPS device is available')
    if name not in ("cpu", "cuda", "mps"):
        raise WarmstartError(f"{key} = {name!r}: not one of auto, cpu, cuda, mps")
    return cuda_device() if name == "cuda" else torch.device(name)


def cuda_device() -> torch.device:
    """This process's GPU: under torchrun / accelerate launch, the one its LOCAL_RANK names."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def wants_bf16(precision: str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast: asked for, or `auto` on a GPU with bf16."""
    if precision == "bf16":
        return True
    return precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


def native_cpu_bf16() -> bool:
    """Whether this x86 CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); without either torch emulates
    bf16 matmul, several times slower than fp32's (bench/utilisation.py measures both peaks)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def warn_if_emulated_bf16(precision: str, device: torch.device, key: str) -> None:
    """One warning when bf16 is asked for on an x86 CPU that would emulate it: the run is correct, only
    slower than fp32 there (`auto` never picks bf16 on a CPU). Other architectures are not judged."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if precision == "bf16" and device.type == "cpu" and x86 and not native_cpu_bf16():
        log.warning(
            '%s = "bf16" on a CPU without AVX512-BF16 or AMX: torch emulates bf16 matmul here, slower than fp32', key
        )


@contextlib.contextmanager
def autocast(precision: str, device: torch.device, keep_casts: bool = False):
    """The training step's autocast context: CPU bf16 through lm/precision's fast linear layouts (with
    `keep_casts`, the weights' bf16 copies in buffers kept between steps: not for a sharded model), GPU
    bf16 through torch's own, or nothing (fp32). Yields those kept casts (lm/weight_casts.py), or None."""
    if not wants_bf16(precision, device):
        yield None
    elif device.type == "cpu":
        from .precision import bf16_autocast

        with bf16_autocast(keep_casts) as casts:
            yield casts
    else:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield None
