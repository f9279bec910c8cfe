"""glibc's malloc kept from handing a training step's freed memory back to the kernel (training on the CPU).

A training step frees most of what it allocated (activations, gradients once the optimizer has stepped)
and allocates the same again in the next step. By default glibc's malloc gives such memory back to the
kernel: every block above its mmap threshold (128 KiB at start, raised to the largest block freed, up to
32 MiB) is unmapped when freed, and the top of the heap is trimmed once more than twice that is free
there. The next step then takes it back page by page: each 4 KiB page a fault and a zeroing in the kernel.
Measured on SmolLM2-135M SFT steps of 2 rows x 64-256 tokens (2-core AVX512-BF16 EPYC, 2 threads, 40
steps each): ~110k faults per step and 0.21-0.33 s of system time in a bf16 step of ~1.8 s.

`keep_freed_memory` fixes the mmap threshold at glibc's largest (32 MiB: blocks above it, such as a
49k-token vocabulary's 113 MB head gradient, are still mapped and unmapped) and turns trimming off, so
freed blocks stay in the heap for the next step: ~36-44k faults and 0.06-0.10 s of system time per step,
bf16 steps 1.60 vs 1.83 s and fp32 steps 2.72 vs 2.89 s (medians, the same steps, one process each way
with glibc's tunables set alike; bench/utilisation.py measures it on the benchmark's own rows); the tiny
GRPO benchmark model's update 0.36 vs 0.40 s (6 recorded batches x 3). The cost: the process keeps the
memory it freed, so its resident set does not fall back between steps (its peak is the step's own), and
blocks of varied sizes can leave gaps in the heap that small live blocks keep resident. Measured: fp32
+0.1 GB over 40 steps, then flat; bf16 rows of 64-256 tokens 3.4 -> 4.9 GB over 150 steps (the default
allocator: 3.3 -> 3.7 GB over 40), of which `release_freed_memory` (glibc's malloc_trim) gave 1.2-1.4 GB
back at once. The stages call it every `RELEASE_EVERY` steps, so what a long run keeps grows only within
that many steps; the next step takes back what it needs (~0.3 s of faults on SmolLM2 bf16, ~1 % of 25
steps). Floats do not change: torch aligns every block to 64 bytes either way.

Process-wide, so a stage sets it once, for a run on the CPU; other C libraries (musl, macOS) keep their
own defaults, with one log line saying so.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (glibc's malloc.h)
LARGEST_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)
NEVER_TRIM = -1  # mallopt(M_TRIM_THRESHOLD, -1) turns trimming off (man mallopt)
RELEASE_EVERY = 25  # training steps between `release_freed_memory` calls in the stages


def glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory for reuse (module docstring); whether it was set."""
    if not glibc():
        log.info("host memory: the C library's allocator keeps its own defaults (not glibc)")
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    if mallopt(M_MMAP_THRESHOLD, LARGEST_MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) != 1:
        log.warning("host memory: glibc refused mallopt; freed memory goes back to the kernel between steps")
        return False
    log.debug("host memory: glibc keeps freed blocks up to 32 MiB and never trims the heap")
    return True


def release_freed_memory() -> None:
    """Gives the kernel every whole page of free heap memory back (glibc's malloc_trim); glibc only."""
    if glibc():
        trim = ctypes.CDLL(None).malloc_trim
        trim.argtypes = [ctypes.c_size_t]
        trim(0)
