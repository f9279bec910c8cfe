"""GRPO side by side: warmstart `grpo` vs TRL `GRPOTrainer`, wall seconds per step on the tiny model.

    .venv/bin/python bench/grpo_vs_trl.py [--quick] [--profile]

Both systems train the same tiny Llama student (the demo's shape, SFT'd briefly by warmstart's own
generate -> curate -> sft stages on the arithmetic reference chains; built once into bench/.cache/)
with the same reward: the arithmetic environment's `verify`, wrapped as a TRL reward function. Both
run in this one process, alternating one step at a time (A B A B ...) after one warm-up step each,
so drift on a shared machine hits both alike. Equalized: prompts per step, group size
(num_generations), max completion length, temperature / top_p / no top-k, one optimizer step per
generation batch, no KL term, lr, AdamW betas, grad clip, clip range (0.2 / 0.28), token-level loss
normalization (warmstart "token" = TRL "dapo" with one accumulation step), std-scaled group
advantages, no dynamic sampling, fp32 on CPU, no vLLM, no logging or saving.

A step of warmstart is what `warmstart grpo` runs per step (stages/grpo.grpo_step): `collect` (sample +
verify), `batch_tensors`, `update`, `scheduler.step()`. A step of TRL is one `trainer.train()` step
(generation, reward, advantages, forward/backward, optimizer step) timed from `on_step_begin` to
`on_step_end` by a callback; `trainer.train()` runs in a worker thread that the callback holds between
steps, so the two systems never run at the same time. `--profile` adds a breakdown of each system's
step (sampling / scoring / update) from timers around the phases.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from harness import environment, interleaved, median, table, write_section  # noqa: E402

CACHE = BENCH / ".cache" / "grpo_vs_trl"
SFT_STEPS = 400  # "briefly": pass@1 well below 1, so groups have reward variance
FULL = {"prompts": 16, "group": 8, "max_new": 128, "reps": 4}
QUICK = {"prompts": 4, "group": 8, "max_new": 96, "reps": 3}
LR = 1e-5
ALL_ROWS = "warmstart, zero-gradient rows computed"


def recipe():
    from warmstart.config import load_recipe
    from warmstart.demos.recipe import DEMO_RECIPE

    return load_recipe(None, [f"run.dir='{CACHE}'", "tasks.train=2000", f"sft.steps={SFT_STEPS}"], base=DEMO_RECIPE)


def tiny_student() -> Path:
    """The demo's tiny Llama, SFT'd briefly on verified reference chains (cached; stages skip when done)."""
    from warmstart.stages import curate, generate, sft

    r = recipe()
    generate.run(r)
    curate.run(r)
    return sft.run(r)


class Phases:
    """Accumulates seconds per named phase (for --profile)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed


# --- warmstart ---------------------------------------------------------------------------------


class Warmstart:
    def __init__(self, model_dir: Path, tasks, s: dict, phases: Phases | None):
        from warmstart.config import GrpoConfig
        from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions
        from warmstart.envs.verification import Verifier
        from warmstart.lm.chat import stop_token_ids
        from warmstart.lm.models import load_model_and_tokenizer
        from warmstart.train import grpo

        self.grpo, self.tasks, self.phases = grpo, tasks, phases
        self.env = Arithmetic(ArithmeticOptions(**recipe().env.options))
        self.model, self.tokenizer = load_model_and_tokenizer(model_dir, "model")
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)
        self.cfg = GrpoConfig(
            tasks_per_step=s["prompts"], group_size=s["group"], max_new_tokens=s["max_new"], temperature=1.0, top_p=1.0,
            lr=LR, warmup_steps=0, updates_per_batch=1, kl_weight=0.0, clip_low=0.2, clip_high=0.28,
            normalization="token", scale_by_std=True, drop_zero_variance=False, overlong_buffer=0, grad_clip=1.0,
        )  # fmt: skip
        torch.manual_seed(0)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.0, fused=True
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)
        self.cursor, self.step_no, self.rewards = 0, 0, []
        self.verifier = Verifier(self.env)  # arithmetic verifies in-process: no workers to stop
        if phases:  # scoring, timed for this instance only
            self.verifier.verify_all = phases.wrap("scoring", self.verifier.verify_all)

    def step(self, skip_silent_rows: bool = True) -> float:
        """One step of stages/grpo.grpo_step (train/grpo.collect and update), minus progress and checkpoint bookkeeping."""
        g, cfg = self.grpo, self.cfg
        self.step_no += 1
        t0 = time.perf_counter()
        self.model.eval()
        with self.timed_collect():
            groups, self.cursor, stats = g.collect(
                self.model,
                self.tokenizer,
                self.env,
                self.tasks,
                self.cursor,
                cfg,
                self.stop_ids,
                1000 * self.step_no,
                1,
                self.verifier,
            )
        self.model.train()
        t1 = time.perf_counter()
        if groups:
            batch = g.batch_tensors(groups, cfg, self.tokenizer.pad_token_id)
            g.update(self.model, None, self.optimizer, batch, cfg, skip_silent_rows=skip_silent_rows)
            self.scheduler.step()
        t2 = time.perf_counter()
        if self.phases:
            self.phases.add("update", t2 - t1)
            self.phases.add("step", t2 - t0)
        self.rewards.append(stats["reward_sum"] / max(1, stats["samples"]))
        return t2 - t0

    @contextlib.contextmanager
    def timed_collect(self):
        """Sampling (run_episodes, incl. prompt rendering and decoding) timed for this instance only: the
        module's function is wrapped during its collect."""
        if not self.phases:
            yield
            return
        saved = self.grpo.run_episodes
        self.grpo.run_episodes = self.phases.wrap("sampling", saved)
        try:
            yield
        finally:
            self.grpo.run_episodes = saved


# --- TRL ---------------------------------------------------------------------------------------


def verifier_reward(env, tasks_by_id):
    """The arithmetic verifier as a TRL reward function (conversational format: each completion is a
    list with one assistant message dict; dataset columns arrive as keyword lists)."""
    from warmstart.lm.chat import parse_completion
    from warmstart.types import Message, Provenance, Trajectory

    def arithmetic_verify(prompts, completions, task_id, **_) -> list[float]:
        rewards = []
        for prompt, completion, tid in zip(prompts, completions, task_id):
            task = tasks_by_id[tid]
            messages = [Message(role=m["role"], content=m["content"]) for m in prompt]
            messages.append(parse_completion(completion[0]["content"]))
            trajectory = Trajectory(
                task_id=tid,
                policy="trl",
                messages=messages,
                provenance=Provenance(provider="hf", model="trl", created=0.0),
            )
            rewards.append(env.verify(task, trajectory).reward)
        return rewards

    return arithmetic_verify


class Trl:
    """GRPOTrainer.train() in a worker thread; a callback lets it run exactly one step per `step()`."""

    def __init__(self, model_dir: Path, tasks, s: dict, steps: int, phases: Phases | None, workdir: str):
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions

        env = Arithmetic(ArithmeticOptions(**recipe().env.options))
        n = s["prompts"] * steps
        rows = [tasks[i % len(tasks)] for i in range(n)]  # the same tasks, in the same order, as warmstart's cursor
        dataset = Dataset.from_list(
            [{"prompt": [{"role": m.role, "content": m.content} for m in t.prompt], "task_id": t.id} for t in rows]
        )
        reward = verifier_reward(env, {t.id: t for t in tasks})
        if phases:
            reward = phases.wrap("scoring", reward)
            reward.__name__ = "arithmetic_verify"
        args = GRPOConfig(
            output_dir=workdir, max_steps=steps, per_device_train_batch_size=s["prompts"] * s["group"],
            gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, num_generations=s["group"],
            max_completion_length=s["max_new"], temperature=1.0, top_p=1.0, top_k=0, beta=0.0, learning_rate=LR,
            lr_scheduler_type="constant", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0,
            max_grad_norm=1.0, optim="adamw_torch_fused", epsilon=0.2, epsilon_high=0.28, loss_type="dapo",
            scale_rewards="group", mask_truncated_completions=False, use_cpu=True, bf16=False, fp16=False,
            gradient_checkpointing=False, use_vllm=False, shuffle_dataset=False, save_strategy="no",
            logging_strategy="no", report_to=[], disable_tqdm=True, log_completions=False,
            dataloader_num_workers=0, seed=0,
        )  # fmt: skip
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.go, self.done = threading.Semaphore(0), threading.Semaphore(0)
        self.times: list[float] = []
        outer = self

        class OneStepAtATime(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                outer.go.acquire()
                outer.started = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                outer.times.append(time.perf_counter() - outer.started)
                outer.done.release()

        self.trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[OneStepAtATime()],
        )
        self.tokenizer, self.error = tokenizer, None
        if phases:  # sampling = transformers generate; update = forward/backward/optimizer (all but generation+scoring)
            self.trainer._generate_single_turn = phases.wrap("sampling", self.trainer._generate_single_turn)
            self.trainer._generate_and_score_completions = phases.wrap(
                "generate_and_score", self.trainer._generate_and_score_completions
            )
        self.phases = phases
        self.thread = threading.Thread(target=self._train, daemon=True)
        self.thread.start()

    def _train(self):
        try:
            self.trainer.train()
        except BaseException as exc:  # surfaced by step()
            self.error = exc
            self.done.release()

    def step(self) -> float:
        self.go.release()
        self.done.acquire()
        if self.error is not None:
            raise self.error
        if self.phases:
            self.phases.add("step", self.times[-1])
        return self.times[-1]

    def finish(self):
        self.thread.join(timeout=60)


# --- checks and report -------------------------------------------------------------------------


def check_equal_inputs(ws: Warmstart, trl: Trl, tasks) -> list[str]:
    """The prompts' token ids and the stop tokens the two systems use, compared."""
    from warmstart.lm.chat import render_prompt

    notes = []
    ours = ws.tokenizer(render_prompt(ws.tokenizer, tasks[0].prompt), add_special_tokens=False)["input_ids"]
    theirs = trl.tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in tasks[0].prompt],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    notes.append(
        "prompt token ids: "
        + ("identical" if list(ours) == list(theirs) else f"DIFFER ({len(ours)} vs {len(theirs)} tokens)")
    )
    stops = sorted(set(trl.trainer.eos_token_ids))
    notes.append(
        "stop tokens: " + ("identical" if stops == ws.stop_ids else f"DIFFER (warmstart {ws.stop_ids}, TRL {stops})")
    )
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller steps, fewer repetitions (~1 min)")
    parser.add_argument("--profile", action="store_true", help="also time sampling / scoring / update inside each step")
    parser.add_argument("--reps", type=int, help="measured steps per system (default 4, --quick 3)")
    parser.add_argument(
        "--threads", type=int, help="torch threads for both (default: torch's own; 1 helps on a crowded machine)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    s = dict(QUICK if args.quick else FULL)
    if args.reps:
        s["reps"] = args.reps
    torch.manual_seed(0)
    t_start = time.perf_counter()
    model_dir = tiny_student()
    from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions

    tasks = Arithmetic(ArithmeticOptions(**recipe().env.options)).tasks("train", s["prompts"] * (s["reps"] + 1), seed=1)
    phases = {"warmstart": Phases(), "TRL": Phases()} if args.profile else {"warmstart": None, "TRL": None}
    with tempfile.TemporaryDirectory() as workdir:
        ws = Warmstart(model_dir, tasks, s, phases["warmstart"])
        # Ablation: the same, computing the forward/backward of zero-gradient rows as TRL does (no profile).
        ws_all = Warmstart(model_dir, tasks, s, None)
        trl = Trl(model_dir, tasks, s, s["reps"] + 1, phases["TRL"], workdir)
        notes = check_equal_inputs(ws, trl, tasks)
        keep_rows = lambda: ws_all.step(skip_silent_rows=False)  # noqa: E731
        warm = {
            "warmstart": ws.step(),
            "TRL": trl.step(),
            ALL_ROWS: keep_rows(),
        }  # warm-up: first-call costs, not counted
        if args.profile:
            for p in phases.values():
                p.seconds.clear()
        times = interleaved({"warmstart": ws.step, "TRL": trl.step, ALL_ROWS: keep_rows}, s["reps"])
        trl.finish()
    med = {k: median(v) for k, v in times.items()}
    ratio = med["TRL"] / med["warmstart"]
    ratio_all = med["TRL"] / med[ALL_ROWS]
    rewards = ws.rewards
    print(f"settings {s}; warm-up {warm}")
    for k, v in times.items():
        print(f"{k}: median {med[k]:.2f} s/step  {['%.2f' % x for x in v]}")
    print(
        f"TRL / warmstart = {ratio:.2f}x (zero-gradient rows computed: {ratio_all:.2f}x); warmstart mean reward per step {['%.2f' % r for r in rewards]}"
    )
    print("; ".join(notes))
    md = report(
        s,
        med,
        times,
        ratio,
        ratio_all,
        notes,
        rewards,
        phases if args.profile else None,
        args,
        time.perf_counter() - t_start,
    )
    print(f"wrote {write_section('grpo_vs_trl', md)}")


def report(s, med, times, ratio, ratio_all, notes, rewards, phases, args, wall) -> str:
    cmd = (
        ".venv/bin/python bench/grpo_vs_trl.py"
        + (" --quick" if args.quick else "")
        + (" --profile" if args.profile else "")
        + (f" --reps {args.reps}" if args.reps else "")
        + (f" --threads {args.threads}" if args.threads else "")
    )
    rows = [[k, f"{med[k]:.2f}", ", ".join(f"{x:.2f}" for x in times[k])] for k in times]
    verdict = "goal met (≥ 2×)" if ratio >= 2 else ("goal missed (< 2×)" if ratio >= 1 else "TRL is faster")
    md = [
        "## GRPO: warmstart `grpo` vs TRL `GRPOTrainer`",
        "",
        environment() + f" torch threads: {torch.get_num_threads()}.",
        "",
        f"Tiny Llama student (demo shape, {SFT_STEPS} SFT steps on verified arithmetic reference chains, built by warmstart's "
        f"own stages into bench/.cache/); reward = arithmetic `verify` (a TRL reward function over conversational completions). "
        f"{s['prompts']} prompts/step × group {s['group']} = {s['prompts'] * s['group']} completions, max {s['max_new']} new tokens, "
        f"temperature 1.0, top_p 1.0, no top-k; one optimizer step per generation batch (warmstart updates_per_batch=1; TRL "
        f"steps_per_generation=1, num_iterations=1, grad accumulation 1); no KL (kl_weight 0 / beta 0); lr {LR} constant; "
        f"AdamW (0.9, 0.99), wd 0; grad clip 1.0; clip 0.2/0.28; token-level normalization (warmstart `token` = TRL `dapo`); "
        f"std-scaled group advantages; no dynamic sampling; fp32 CPU, no vLLM, no gradient checkpointing, no logging/saving. "
        f"Same tasks in the same order. Checked in-run: {'; '.join(notes)}.",
        "",
        f"One warm-up step each, then {s['reps']} measured steps each, interleaved A B C A B C in one process:",
        "",
        table(["system", "median s/step", "steps (s)"], rows),
        "",
        f"**TRL / warmstart: {ratio:.2f}×** — {verdict}. With warmstart computing the zero-gradient rows too (the third "
        f"row, an ablation that does what TRL does there): {ratio_all:.2f}×. warmstart mean reward per step: {', '.join(f'{r:.2f}' for r in rewards)}.",
        "",
        "Not equal by construction: TRL computes per-token entropies in its loss pass (a metric) and uses the unbiased "
        "std for advantages; warmstart's `token` normalization divides by the policy tokens of the batch, TRL's `dapo` by the "
        "completion tokens of the generation batch (the same set here). The sampled completions differ (different RNG "
        "streams), so completion lengths and flat groups per step differ a little between the systems. TRL has no dynamic "
        "sampling, so warmstart's is off (`drop_zero_variance=false`) and both train on flat groups (all rewards equal, "
        "advantage 0); warmstart's update does not run the forward/backward of rows whose gradient is exactly 0 (advantage 0 "
        "and no KL term, or no policy token), TRL computes them: part of the update-time gap below comes from that, and "
        "it grows with the share of flat groups (low or high pass rates).",
        "",
        "What warmstart does per step that makes the difference (src/warmstart/lm/generation.py `sample_ids_pruned`, "
        "train/grpo.py `update`): sampling drops each finished sequence (and its KV cache rows) from the batch instead of "
        "decoding padding until the longest is done, as `generate` does (greedy output equals `generate`'s); the update skips the separate no-grad pass for the old log-probs when there is one update per batch "
        "(the ratio is 1, as TRL also does), runs forward/backward in length-sorted chunks of ≤ 4,096 padded tokens (less "
        "padding, smaller activations) and skips zero-gradient rows.",
        "",
        "The machine is shared with other benchmarks: with torch's default 2 threads a crowded CPU makes OpenMP threads "
        "wait on each other (a 128-row forward of this model went from ~0.05 s to ~2 s), so this run used "
        f"{torch.get_num_threads()} thread(s) for both systems; step times still vary by 2× between repetitions.",
        "",
        f"Reproduce: `{cmd}` (whole run {wall:.0f} s).",
    ]
    if phases:
        md += ["", "Where the time goes (seconds summed over the measured steps, from timers around the phases):", ""]
        prow = []
        for name, p in phases.items():
            sec = p.seconds
            if name == "TRL":
                sampling, scoring = sec.get("sampling", 0.0), sec.get("scoring", 0.0)
                other_gen = sec.get("generate_and_score", 0.0) - sampling - scoring
                update = sec.get("step", 0.0) - sec.get("generate_and_score", 0.0)
            else:
                sampling, scoring, update = sec.get("sampling", 0.0), sec.get("scoring", 0.0), sec.get("update", 0.0)
                other_gen = sec.get("step", 0.0) - sampling - scoring - update
            prow.append(
                [
                    name,
                    f"{sampling:.2f}",
                    f"{scoring:.3f}",
                    f"{update:.2f}",
                    f"{other_gen:.2f}",
                    f"{sec.get('step', 0.0):.2f}",
                ]
            )
        md.append(table(["system", "sampling", "scoring (verify)", "update (fwd/bwd/opt)", "other", "total"], prow))
    return "\n".join(md)


if __name__ == "__main__":
    main()
