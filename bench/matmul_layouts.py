"""Why a plain bf16 autocast training step is slow on this CPU: matmul rates by operand layout, fp32 vs bf16.

`.venv/bin/python bench/matmul_layouts.py [--quick]` -> bench/results/matmul_layouts.md

A training step's matmuls through `nn.Linear` (weight W stored [out, in]) take three layouts:
forward y = x @ W^T, input gradient dx = dy @ W, weight gradient dW = dy^T @ x. This times each on
SmolLM2-135M's shapes (256 tokens; 576 -> 1536, 1536 -> 576, and the 576 -> 49,152 head) as plain
autocast's backward computes them, and both gradients once more as warmstart's `bf16_autocast`
computes them (`warmstart.lm.precision.input_grad` and `weight_grad`, which Bf16Linear runs: dx = F.linear(dy, W^T made contiguous), the
forward's kernel, and dW = dy^T @ x, over row blocks of W; copies included). Under plain autocast
a bf16 backward took ~13x its forward. Rates are medians of interleaved repetitions, GFLOP/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from warmstart.lm.precision import input_grad, weight_grad

sys.path.insert(0, str(Path(__file__).parent))
from harness import environment, interleaved, median, report_errors, table, write_section  # noqa: E402

SHAPES = [(256, 576, 1536), (256, 1536, 576), (256, 576, 49152)]  # tokens, in, out


def rate(op, flops: float, seconds: float) -> float:
    op()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        op()
        calls += 1
    return flops * calls / (time.perf_counter() - start)


def products(tokens: int, fan_in: int, fan_out: int, dtype: torch.dtype) -> dict:
    x, w, dy = (
        torch.randn(tokens, fan_in, dtype=dtype),
        torch.randn(fan_out, fan_in, dtype=dtype),
        torch.randn(tokens, fan_out, dtype=dtype),
    )
    return {
        "forward x @ W^T (F.linear)": lambda: F.linear(x, w),
        "input grad dy @ W": lambda: dy @ w,
        "weight grad dy^T @ x": lambda: dy.t() @ x,
        "input grad, Bf16Linear": lambda: input_grad(dy, w),
        "weight grad, Bf16Linear": lambda: weight_grad(dy, x),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds, repetitions = (0.3, 2) if args.quick else (1.0, 3)
    rows, slowdowns, fixed = [], [], []
    for tokens, fan_in, fan_out in SHAPES:
        flops = 2 * tokens * fan_in * fan_out
        ops = {
            f"{p} {name}": op
            for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
            for name, op in products(tokens, fan_in, fan_out, dtype).items()
        }
        measured = interleaved(
            {name: (lambda op=op: rate(op, flops, seconds)) for name, op in ops.items()}, repetitions
        )
        for name in products(tokens, fan_in, fan_out, torch.float32):
            fp32, bf16 = median(measured[f"fp32 {name}"]), median(measured[f"bf16 {name}"])
            rows.append([f"{tokens}x{fan_in} -> {fan_out}", name, f"{fp32 / 1e9:.1f}", f"{bf16 / 1e9:.1f}"])
        forward = median(measured["bf16 forward x @ W^T (F.linear)"])
        slowdowns.append(forward / median(measured["bf16 input grad dy @ W"]))
        fixed += [median(measured[f"bf16 {g} grad, Bf16Linear"]) / forward for g in ("input", "weight")]
    md = "\n\n".join(
        [
            "## Matmul layouts: why plain bf16 autocast training is slow here",
            environment() + f" torch threads: {torch.get_num_threads()}.",
            f"Reproduce: `.venv/bin/python bench/matmul_layouts.py{' --quick' if args.quick else ''}` ({repetitions} interleaved "
            "repetitions, medians).",
            __doc__.split("\n\n")[2].replace("\n", " "),
            table(["shape (tokens x in -> out)", "product", "fp32 GFLOP/s", "bf16 GFLOP/s"], rows),
            f"Measured here: bf16's input-gradient product (dy @ W, both operands row-major) runs "
            f"{min(slowdowns):.1f}-{max(slowdowns):.1f}x slower than bf16's forward product on the same shape. On a CPU without "
            "native bf16 (no AVX512-BF16 or AMX) every bf16 product is emulated, and this layout takes a slower path again. "
            f'warmstart\'s `bf16_autocast` (what `sft.precision = "bf16"` runs) computes both gradients at '
            f"{min(fixed):.2f}-{max(fixed):.2f}x the forward product's rate. bf16 stays several times slower than fp32 on "
            'such a CPU, where `sft.precision = "fp32"` is the setting to use.',
        ]
    )
    print(md)
    print(write_section("matmul_layouts", md))


if __name__ == "__main__":
    report_errors(main)
