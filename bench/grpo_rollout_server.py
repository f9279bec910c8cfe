"""GRPO's rollouts sampled in the trainer vs by `warmstart serve` (synchronous) vs one step off policy.

    .venv/bin/python bench/grpo_rollout_server.py [--run DIR] [--steps 10] [--repetitions 2] [--quick]
        -> bench/results/grpo_rollout_server.md

Every system is a real `warmstart grpo` with a LoRA adapter (r=16), in a fresh copy of a run directory
that holds the starting model (models/student) and the recipe: `--run` a finished `warmstart demo`
(the demo's GRPO settings; the closing note's curves), or without it a small run made here (tiny student,
a short SFT). Systems:

- local: sampled in the trainer's process;
- server: through `warmstart serve models/student --enable-lora` on loopback, the adapter loaded after
  each update;
- async: the same server, `grpo.async = 1`: the next batch is sampled while this one trains.

Every process gets one thread (OMP_NUM_THREADS=1): the trainer, and the server, which stands for
another device. Per step (medians over the steps after the first, which async cannot overlap, and over
repetitions): wall seconds, and in them the wait for the batch, the update, and the rest (the server
runs: waiting for the batch sampled ahead, publishing the adapter); the time async saved against
synchronous, as a share of the update it could hide behind sampling. Learning: the mean reward per step of each system, and over
all steps with its spread over the repetitions (repetition r runs with seed r in every system).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import environment, median, positive_int, report_errors, table, write_section  # noqa: E402

SYSTEMS = ("local", "server", "async")
SMALL_RECIPE = """
[tasks]
train = 2000
[sft]
steps = 300
[grpo]
tasks_per_step = 8
group_size = 8
max_new_tokens = 64
"""
LORA = ["grpo.lora.r=16", "grpo.lora.alpha=32", "grpo.lr=1e-4"]


def small_run(root: Path) -> Path:
    """A run with a tiny student trained a little (enough to earn some reward), for a quick measurement."""
    root.mkdir(parents=True)
    recipe = root / "recipe.toml"
    recipe.write_text(SMALL_RECIPE)
    for stage in ("generate", "curate", "sft"):
        subprocess.run(warmstart(stage, recipe, [f"run.dir='{root}'"]), check=True, env=threads(None))
    return root


def warmstart(stage: str, recipe: Path, sets: list[str]) -> list[str]:
    return [sys.executable, "-m", "warmstart.cli", stage, str(recipe), *[a for s in sets for a in ("--set", s)]]


def threads(count: int | None) -> dict:
    env = {**os.environ}
    if count is not None:
        env["OMP_NUM_THREADS"] = str(count)
    return env


@contextmanager
def serving(model: Path):
    command = [sys.executable, "-m", "warmstart.cli", "serve", str(model), "--port", "0", "--model-name", "student"]
    process = subprocess.Popen(
        [*command, "--enable-lora", "--max-batch", "128"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=threads(1),
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 300)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("serving "):
            raise SystemExit(f"the server did not start: {line!r}")
        yield line.split(" on ")[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_grpo(source: Path, system: str, seed: int, steps: int, work: Path) -> list[dict]:
    """One GRPO run of `system` in a fresh copy of the source run; its per-step history."""
    run = work / f"{system}-{seed}"
    shutil.rmtree(run, ignore_errors=True)
    (run / "models").mkdir(parents=True)
    shutil.copytree(source / "models" / "student", run / "models" / "student")
    recipe = run / "recipe.toml"
    shutil.copy(source / "recipe.toml", recipe)
    sets = [f"run.dir='{run}'", f"run.seed={seed}", f"grpo.steps={steps}", f"grpo.checkpoint_every={steps}", *LORA]
    if system == "local":
        subprocess.run(warmstart("grpo", recipe, sets), check=True, env=threads(1), stderr=subprocess.DEVNULL)
    else:
        with serving(run / "models" / "student") as url:
            sets += [f"grpo.rollout_server='openai:student@{url}'", "api.concurrency=128"]
            sets += ["grpo.async=1"] if system == "async" else []
            subprocess.run(warmstart("grpo", recipe, sets), check=True, env=threads(1), stderr=subprocess.DEVNULL)
    manifest = json.loads((run / "manifest.json").read_text())
    return manifest["stages"]["grpo:student-grpo"]["history"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, help="a finished run directory (e.g. of `warmstart demo`)")
    parser.add_argument("--steps", type=positive_int, default=10)
    parser.add_argument("--repetitions", type=positive_int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 steps, 1 repetition (bench/run_all.py --quick)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repetitions = 3, 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = args.run.resolve() if args.run else small_run(work / "source")
        histories: dict[str, list[list[dict]]] = {s: [] for s in SYSTEMS}
        for seed in range(args.repetitions):  # A B C A B C: drift hits every system alike
            for system in SYSTEMS:
                histories[system].append(run_grpo(source, system, seed, args.steps, work))
                print(system, seed, [round(h["mean_reward"], 3) for h in histories[system][-1]], flush=True)
    report(histories, args, source)


def step_medians(runs: list[list[dict]]) -> dict:
    later = [h for run in runs for h in run[1:]]  # step 1: nothing sampled ahead yet
    keys = ("seconds", "sample_seconds", "update_seconds", "publish_seconds")
    return {key: median([h.get(key, 0.0) for h in later]) for key in keys}


def report(histories: dict, args, source: Path) -> None:
    timing = {s: step_medians(histories[s]) for s in SYSTEMS}
    server, ahead = timing["server"], timing["async"]
    saved = server["seconds"] - ahead["seconds"]
    hidden = saved / min(server["sample_seconds"], server["update_seconds"])
    rows = [
        [s] + [f"{t[k]:.2f}" for k in ("seconds", "sample_seconds", "update_seconds", "publish_seconds")]
        for s, t in timing.items()
    ]
    curves = []
    for system in SYSTEMS:
        means = [statistics.mean(h["mean_reward"] for h in run) for run in histories[system]]
        per_step = [statistics.mean(run[i]["mean_reward"] for run in histories[system]) for i in range(args.steps)]
        spread = max(means) - min(means)
        curves.append(
            [system, f"{statistics.mean(means):.3f} (spread {spread:.3f})", " ".join(f"{r:.2f}" for r in per_step)]
        )
    versions = [h.get("policy_version") for h in histories["async"][0]]
    mismatch = [h.get("mismatch_abs_logp", 0.0) for s in ("server", "async") for run in histories[s] for h in run]
    markdown = f"""## GRPO rollouts: in the trainer vs from `warmstart serve` vs one step off policy

Source run: {"`" + str(source) + "`" if args.run else "a small run made by the script (tiny student, 300 SFT steps)"};
{args.steps} GRPO steps with a LoRA adapter (r=16), {args.repetitions} repetitions (seeds 0..{args.repetitions - 1}).
Every process one thread (the server stands for another device).

Per step, median seconds over steps 2..{args.steps} and the repetitions:

{table(["system", "step", "waiting for the batch", "update", "the rest (server: wait ahead, publish)"], rows)}

One step off policy: {ahead["seconds"]:.2f} s per step against {server["seconds"]:.2f} s synchronous
({server["seconds"] / ahead["seconds"]:.2f}x): {saved:.2f} s saved per step, {hidden:.0%} of the shorter phase
(sampling or update, which is all an overlap of the two can hide). The overlap needs a core for each
side: the server's sampling, and the trainer's update plus the client's request threads, which share
the trainer's process; where the machine has no more cores than processes, the update slows down
while the next batch streams in, and the saving shrinks to what that leaves.
Async's batches were sampled by policy versions {versions} (step t by version t - 2 after the first:
one update stale). Mean |log p trainer - log p sampler| over the server runs' steps: median
{median(mismatch):.2e}, max {max(mismatch):.2e} nats per token.

Learning: mean reward over the steps (spread over repetitions) and per step (mean over repetitions):

{table(["system", "mean reward", "reward per step"], curves)}

{environment()}

Reproduce: `.venv/bin/python bench/grpo_rollout_server.py{" --run " + str(source) if args.run else ""} --steps {args.steps} --repetitions {args.repetitions}`
"""
    print(markdown)
    write_section("grpo_rollout_server", markdown)


if __name__ == "__main__":
    report_errors(main)
