"""A memory plan before anything loads: the estimated peak memory of an SFT or GRPO run per device.

`plan_for(recipe, stage)` reads the model's config only (AutoConfig, or the recipe's tiny config) and
counts its parameters exactly on the meta device: no weights are read, no run directory is created.
The rows are the usual terms of a training step (weights, gradients, AdamW's two states, the saved
activations, the output-head logits, GRPO's KV cache, a reference model or a dense-KD teacher) plus the
process itself. `check(plan)` refuses a plan larger than the memory found, in one line naming its
biggest term and the recipe knob that shrinks it. docs/memory.md has the measured accuracy.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PretrainedConfig

from ..config import GrpoConfig, LoraSettings, PolicySpec, Recipe
from ..errors import WarmstartError
from ..lm.device import cuda_device, resolve_device
from ..lm.linear_ce import CHUNK_BYTES
from ..lm.models import load_config
from ..lm.tinymodel import tiny_llama_config
from . import lora as lora_adapter
from .activation_memory import FLOAT32, Shape, activation_bytes
from .grpo import MICRO_BATCH_TOKENS, separate_old_pass

log = logging.getLogger(__name__)

MB = 1024**2
BF16 = 2
# Python + torch + transformers + warmstart's stages imported, then a tiny-model SFT run's own
# buffers (tokenizer, examples, oneDNN scratch, checkpoint writes): ru_maxrss of
# `python -c "import warmstart.stages.sft, warmstart.cli"` is 393 MB and a 5-step SFT of a 40k-parameter
# tiny model peaks 33 MB above its imports (torch 2.13 CPU, transformers 5.24, 2-core AMD EPYC).
CPU_PROCESS_BASELINE = 426 * MB
# On an accelerator the interpreter stays in host memory; the device holds the CUDA context and
# the caching allocator's slack.
GPU_PROCESS_BASELINE = 500 * MB
# Rollout prompts are not in the recipe; an arithmetic or math prompt in a chat template is ~50-150 tokens.
GRPO_PROMPT_TOKENS = 128


@dataclass(frozen=True)
class Row:
    name: str
    bytes: int
    # "rollout" and "update" rows of GRPO are never live together: the peak holds the larger phase.
    phase: str = "all"


@dataclass
class Plan:
    stage: str  # "sft" or "grpo"
    device: str
    available_bytes: int
    rows: list[Row]
    knobs: dict[str, str]  # row name -> what to change in the recipe to shrink it
    notes: list[str] = field(default_factory=list)
    parameters: int = 0
    trainable_parameters: int = 0

    @property
    def total_bytes(self) -> int:
        shared = sum(r.bytes for r in self.rows if r.phase == "all")
        phases = {r.phase for r in self.rows if r.phase != "all"}
        return shared + max((sum(r.bytes for r in self.rows if r.phase == p) for p in phases), default=0)

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.available_bytes

    def biggest(self) -> Row:
        return max((r for r in self.rows if r.name in self.knobs), key=lambda r: r.bytes)

    def render(self) -> str:
        lines = [
            f"{self.stage} memory plan on {self.device} ({self.parameters:,} parameters, {self.trainable_parameters:,} trained)"
        ]
        lines += [f"  {'component':<28}{'MB':>10}"]
        for row in self.rows:
            phase = "" if row.phase == "all" else f" [{row.phase}]"
            lines.append(f"  {row.name + phase:<28}{row.bytes / MB:>10.1f}")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"  {'total (peak)':<28}{self.total_bytes / MB:>10.1f}")
        lines.append(f"  {'available':<28}{self.available_bytes / MB:>10.1f}  {verdict}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def announce(plan: Plan) -> Plan:
    """One log line on the planned peak (`warmstart plan` prints the whole table); under torchrun from the
    main process only (RANK 0), as every other line (each process plans the same)."""
    if os.environ.get("RANK", "0") != "0":
        return plan
    log.info(
        "%s: planned peak memory %s on %s (%s available; largest: %s)",
        plan.stage,
        gb(plan.total_bytes),
        plan.device,
        gb(plan.available_bytes),
        plan.biggest().name,
    )
    return plan


def check(plan: Plan) -> None:
    """Raise one line when the plan does not fit: what it needs, what is there, the biggest term's knob."""
    if plan.fits:
        return
    big = plan.biggest()
    raise WarmstartError(
        f"{plan.stage}: needs ~{gb(plan.total_bytes)} on {plan.device}, {gb(plan.available_bytes)} available; "
        f"the largest term is {big.name} ({gb(big.bytes)}): {plan.knobs[big.name]}"
    )


def gb(n: int) -> str:
    return f"{n / 1024**3:.1f} GB" if n >= 1024**3 else f"{n / MB:.0f} MB"


def plan_for(recipe: Recipe, stage: str, available_bytes: int | None = None) -> Plan:
    """The plan of `stage` ("sft" or "grpo"); `available_bytes` overrides the memory found on the device."""
    device = device_name(recipe.run.device)
    available = device_available_bytes(device) if available_bytes is None else available_bytes
    if stage == "sft":
        return sft_plan(recipe, device, available)
    if stage == "grpo":
        return grpo_plan(recipe, device, available)
    raise WarmstartError(f"plan: unknown stage {stage!r} (sft or grpo)")


# --- the device -------------------------------------------------------------------------------------


def device_name(wanted: str) -> str:
    """run.device as the training stages take it (lm/device.py): "auto" is cuda, then mps, then the CPU."""
    return resolve_device(wanted).type


def device_available_bytes(device: str) -> int:
    if device == "cuda":  # this process's GPU (LOCAL_RANK's under torchrun), not the current one: GPU 0 before
        return torch.cuda.mem_get_info(cuda_device())[0]  # the stage sets its device
    if device == "mps":
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
    # Processes torchrun started on this machine share its memory: each may plan with its part.
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return host_available_bytes() // max(1, sharing)


def host_available_bytes(proc: Path = Path("/proc")) -> int:
    """What the kernel says is free for new allocations plus what this process already holds (the plan
    counts this process's own footprint in its baseline row). Without /proc (macOS), the whole memory."""
    meminfo, statm = proc / "meminfo", proc / "self" / "statm"
    if not meminfo.exists():
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        log.info(
            "plan: this OS does not say how much memory is free (no /proc/meminfo): planned against all %s", gb(total)
        )
        return total
    held = int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 + held
    raise WarmstartError("plan: /proc/meminfo has no MemAvailable line")


def peak_rss_mb() -> float | None:
    """This process's own peak resident memory (VmHWM) in MB, None where /proc does not tell it.

    Not getrusage's ru_maxrss: Linux carries the spawning process's high-water mark across fork and exec
    into it, so a run started from a large process (a test runner, a notebook) would report that one's peak.
    """
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def process_baseline(device: str) -> int:
    return CPU_PROCESS_BASELINE if device == "cpu" else GPU_PROCESS_BASELINE


# --- the model's config, without its weights --------------------------------------------------------


def run_model_dir(recipe: Recipe, name: str) -> Path:
    # Not RunDir(recipe).model(name): RunDir creates the run directory, and a plan writes nothing.
    return Path(recipe.run.dir) / "models" / name


def has_config(path: Path | None) -> bool:
    return path is not None and (path / "config.json").is_file()


def sft_student_config(recipe: Recipe, notes: list[str]) -> PretrainedConfig:
    """sft.student's config: the run's built base (the tiny student's, or a .gguf file's conversion: what sft
    trains from for those only), a model directory, or the tiny config."""
    student, base = recipe.sft.student, run_model_dir(recipe, "base")
    if (student == "tiny" or student.endswith(".gguf")) and has_config(base):
        return load_config(base, "sft.student")
    if student != "tiny":  # a directory, a .gguf file (its header) or package:NAME/FILE
        return load_config(student, "sft.student")
    return tiny_llama_config(recipe.sft.tiny)


def spec_path(spec: PolicySpec, recipe: Recipe) -> Path | None:
    """The local model a policy string stands for (as policies/spec.resolve, without touching the run dir)."""
    if spec.kind == "run":
        return run_model_dir(recipe, spec.name)
    if spec.kind == "own" and spec.name == "student":
        return run_model_dir(recipe, recipe.sft.output)
    if spec.kind == "own" and spec.name == "base":
        student = recipe.sft.student
        return run_model_dir(recipe, "base") if student == "tiny" or student.endswith(".gguf") else Path(student)
    if spec.kind == "own" and recipe.generate.teacher.kind != "own":  # "teacher"
        return spec_path(recipe.generate.teacher, recipe)
    return Path(spec.name).expanduser() if spec.is_local_model else None


def grpo_init_config(recipe: Recipe, notes: list[str]) -> PretrainedConfig:
    path = spec_path(recipe.grpo.init, recipe)
    if has_config(path) or not in_run(path, recipe):  # a user's model is there now, or this is one error
        return load_config(str(path), "grpo.init")  # str: a package:NAME/DIR student stays one
    notes.append(f"grpo.init {recipe.grpo.init} ({path}) does not exist yet: planned with sft.student's config")
    return sft_student_config(recipe, notes)


def in_run(path: Path, recipe: Recipe) -> bool:
    """Whether `path` is a model the run itself writes (its student, base, run:NAME), which may not exist yet."""
    return path.parent == run_model_dir(recipe, "")


meta_model = lora_adapter.meta_model


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embeddings counted once


# --- the stages -------------------------------------------------------------------------------------


def training_rows(model: torch.nn.Module, lora: LoraSettings, key: str) -> tuple[list[Row], int, int]:
    """Weights, gradients and fused AdamW's two fp32 states per trained parameter; (rows, total, trained).
    With LoRA (`key` its recipe table) the adapter as peft builds it: one error if it cannot be built."""
    total = parameter_count(model)
    trained = lora_adapter.adapter_parameters(model.config, lora, key) if lora.r > 0 else total
    weights = (total + (trained if lora.r > 0 else 0)) * FLOAT32  # the adapter's own weights too
    rows = [
        Row("weights", weights),
        Row("gradients", trained * FLOAT32),
        Row("optimizer (AdamW)", 2 * trained * FLOAT32),
    ]
    return rows, total, trained


def sharded_rows(rows: list[Row], model: torch.nn.Module, shards: int, notes: list[str]) -> list[Row]:
    """Under FSDP (train/sharding.py) each process keeps 1/N of the weights, gradients and AdamW state,
    and holds whole only the unit that computes: the largest of a decoder layer and the root (embedding,
    final norm, head), weights and gradient."""
    layers = model.get_decoder().layers
    layer = parameter_count(layers[0]) if len(layers) else 0
    root = parameter_count(model) - sum(parameter_count(one) for one in layers)
    notes.append(
        f"sft.sharding = 'fsdp' over {shards} processes; the main process also gathers the whole state "
        "(12 bytes per parameter, on the CPU) while it writes a checkpoint (a row of a CPU run's plan: its peak "
        "had been planned ~30 % low without it)"
    )
    return [Row(r.name, r.bytes // shards, r.phase) for r in rows] + [
        Row("unsharded unit (FSDP)", 2 * max(layer, root) * FLOAT32)
    ]


def weight_knob(section: str, lora: LoraSettings, model_key: str) -> str:
    if lora.r > 0:
        return f"pick a smaller model ({model_key})"
    return f"set {section}.lora.r = 16 (train an adapter, not every weight) or pick a smaller model ({model_key})"


def sft_logits_bytes(recipe: Recipe, shape: Shape, teacher: bool) -> int:
    """The gradient of the output head's logits at scored positions (train/sft.masked_ce_sum through
    lm/linear_ce.py: at most every position of the micro-batch, [N, V] in the compute dtype, fp32
    counted) and one chunk of fp32 logits with its softmax. KD goes chunk by chunk
    (distill/step.kd_backward): the student's, the teacher's, two log-softmaxes, a grad."""
    cfg = recipe.sft
    positions = cfg.rows_per_micro_batch * (cfg.seq_len - 1)
    if cfg.kd_weight > 0 and cfg.distill != "tokens" and teacher:
        return 5 * min(positions, cfg.kd_chunk) * shape.vocab * FLOAT32
    return positions * shape.vocab * FLOAT32 + 2 * CHUNK_BYTES


def sft_teacher(recipe: Recipe, notes: list[str]) -> torch.nn.Module | None:
    """The local teacher dense KD would load (sft.kd_weight > 0, distill "logits"/"auto"), on the meta device."""
    cfg = recipe.sft
    if cfg.kd_weight == 0 or cfg.distill not in ("auto", "logits"):
        return None
    return local_teacher(cfg.teacher, "sft.teacher", recipe, notes)


def local_teacher(spec: PolicySpec | None, key: str, recipe: Recipe, notes: list[str]) -> torch.nn.Module | None:
    """The local model a teacher spec loads, on the meta device; None for none or a served one (its memory
    is the server's), or one without a config (noted)."""
    path = spec_path(spec, recipe) if spec is not None else None
    if path is None:
        return None
    if not has_config(path):
        notes.append(f"{key} {spec} ({path}) has no config.json: its weights are not counted")
        return None
    return meta_model(load_config(path, key))


def sft_plan(recipe: Recipe, device: str, available: int) -> Plan:
    cfg, notes = recipe.sft, []
    model = meta_model(sft_student_config(recipe, notes))
    shape = Shape.of(model.config)
    rows, total, trained = training_rows(model, cfg.lora, "sft.lora")
    shards = int(os.environ.get("WORLD_SIZE", "1")) if cfg.sharding == "fsdp" else 1
    if shards > 1:
        rows = sharded_rows(rows, model, shards, notes)
        if device == "cpu":  # the main process's gather, on the CPU: a plan of the host's memory counts it
            rows.append(Row("checkpoint gather (main process)", 3 * total * FLOAT32, "checkpoint"))
    tokens = cfg.rows_per_micro_batch * cfg.seq_len
    teacher = sft_teacher(recipe, notes)
    checkpointing = cfg.gradient_checkpointing
    rows.append(Row("activations", activation_bytes(shape, tokens, checkpointing, cfg.seq_len, device)))
    rows.append(Row("logits", sft_logits_bytes(recipe, shape, teacher is not None)))
    if cfg.precision == "bf16" and device == "cpu":
        # fp32 weights, and a bf16 copy of each one a matmul uses, kept between steps (lm/weight_casts.py)
        rows.append(Row("bf16 weight copies", total * BF16))
    if teacher is not None:
        rows.append(Row("teacher (dense KD)", parameter_count(teacher) * FLOAT32))
    rows.append(Row("process baseline", process_baseline(device)))
    shrink = f"lower sft.rows_per_micro_batch ({cfg.rows_per_micro_batch}) or sft.seq_len ({cfg.seq_len})"
    knobs = {
        "weights": weight_knob("sft", cfg.lora, "sft.student"),
        "gradients": weight_knob("sft", cfg.lora, "sft.student"),
        "optimizer (AdamW)": weight_knob("sft", cfg.lora, "sft.student"),
        "activations": shrink + ("" if cfg.gradient_checkpointing else ", or set sft.gradient_checkpointing = true"),
        "logits": f"lower sft.kd_chunk ({cfg.kd_chunk})" if teacher is not None else shrink,
        "bf16 weight copies": 'set sft.precision = "fp32"',
        "unsharded unit (FSDP)": "pick a smaller model (sft.student)",
        "teacher (dense KD)": 'set sft.distill = "tokens" or sft.kd_weight = 0 (no teacher in memory)',
    }
    return Plan("sft", device, available, rows, knobs, notes, total, trained)


OLD_PASS = "old log-probs"  # the phase of train/grpo.update's no-grad pass for the sampling policy's log-probs
OLD_PASS_ACTIVATIONS = "old log-probs: activations"
OLD_PASS_LOGITS = "old log-probs: logits"
TEACHER_PASS = "teacher scoring"  # the phase of a local on-policy teacher's no-grad pass (grpo.token_advantages)
TEACHER_PASS_ACTIVATIONS = "teacher scoring: activations"
TEACHER_PASS_LOGITS = "teacher scoring: logits"


def scoring_pass_rows(shape: Shape, chunk_tokens: int, seq_len: int, names: tuple[str, str], phase: str) -> list[Row]:
    """A no-grad scoring pass of train/grpo.update, run by the update's chunks (lm/scoring.py
    `chunked_sequence_logprobs`), so one chunk of `chunk_tokens` padded tokens is live at a time: the
    sampling policy's old log-probs (where `separate_old_pass`: more than one update a batch, or a
    teacher) and a local teacher's scores, each a phase of its own (one runs after the other; the
    update's chunks after both). Per chunk: the K/V of its rows, prompt and reply (lm/shared_prefix.py
    runs each prompt once and copies its K/V to its rows), one layer's tensors at a time, counted once
    each (nothing is kept for a backward: no activation_memory.ACTIVATION_SLACK), and the output head at its scored
    positions (at most every position), [N, V] fp32 logits and two more of that size in their logsumexp.
    Until these passes were chunked they ran over the whole batch and were the measured peak of GRPO
    (h256, 4 layers, 128 rows of up to 128 new tokens: GPT-2's pass 1395 MB, its update 1309; the
    Llama's 1070 and 879; Mixtral's 1437 and 1343); by chunks they are under the update's phase."""
    layer = shape.saved_floats_per_token() * chunk_tokens * FLOAT32
    layer += shape.attention_probability_bytes(chunk_tokens, seq_len)
    return [
        Row(names[0], shape.kv_cache_bytes(1, chunk_tokens) + layer, phase),
        Row(names[1], 3 * chunk_tokens * shape.vocab * FLOAT32, phase),
    ]


def old_pass_knob(cfg: GrpoConfig) -> str:
    """The pass is one update chunk (MICRO_BATCH_TOKENS padded tokens, or one longer row): the batch's
    size does not change it, a row's length only where a row is longer than a chunk."""
    shrink = f"lower grpo.max_new_tokens ({cfg.max_new_tokens})"
    if cfg.teacher is not None:  # the teacher's advantages need the sampling policy's log-probs anyway
        return shrink
    return shrink + f", or set grpo.updates_per_batch = 1 (now {cfg.updates_per_batch}: no separate pass)"


def grpo_plan(recipe: Recipe, device: str, available: int) -> Plan:
    cfg, notes = recipe.grpo, []
    model = meta_model(grpo_init_config(recipe, notes))
    shape = Shape.of(model.config)
    rows, total, trained = training_rows(model, cfg.lora, "grpo.lora")
    rows[1] = Row(rows[1].name, rows[1].bytes, "update")  # gradients live only during the update
    sequences = cfg.tasks_per_step * cfg.group_size
    seq_len = GRPO_PROMPT_TOKENS + cfg.max_new_tokens
    notes.append(f"rollout length: {GRPO_PROMPT_TOKENS} prompt tokens (assumed) + grpo.max_new_tokens")
    rows.append(Row("KV cache (rollouts)", shape.kv_cache_bytes(sequences, seq_len), "rollout"))
    # train/grpo.update runs length-sorted chunks of at most MICRO_BATCH_TOKENS padded tokens (a longer row alone)
    chunk_tokens = max(min(MICRO_BATCH_TOKENS, sequences * seq_len), seq_len)
    activations = activation_bytes(shape, chunk_tokens, cfg.gradient_checkpointing, seq_len, device)
    rows.append(Row("activations", activations, "update"))
    rows.append(Row("logits", 3 * chunk_tokens * shape.vocab * FLOAT32, "update"))  # logits, log-softmax, grad
    if separate_old_pass(cfg, cfg.teacher):  # the teacher's spec for the teacher: whether there is one
        rows += scoring_pass_rows(shape, chunk_tokens, seq_len, (OLD_PASS_ACTIVATIONS, OLD_PASS_LOGITS), OLD_PASS)
    if cfg.kl_weight > 0 and cfg.lora.r == 0:
        rows.append(Row("reference model", total * FLOAT32))
    teacher = local_teacher(cfg.teacher, "grpo.teacher", recipe, notes)  # on-policy distillation's, held whole
    if teacher is not None:  # held whole; it scores the batch before the update, chunk by chunk
        rows.append(Row("teacher (on-policy)", parameter_count(teacher) * FLOAT32))
        names = (TEACHER_PASS_ACTIVATIONS, TEACHER_PASS_LOGITS)
        rows += scoring_pass_rows(Shape.of(teacher.config), chunk_tokens, seq_len, names, TEACHER_PASS)
    rows.append(Row("process baseline", process_baseline(device)))
    knobs = {
        "teacher (on-policy)": "serve the teacher (grpo.teacher = openai:NAME@URL) or pick a smaller one",
        TEACHER_PASS_ACTIVATIONS: "serve the teacher (grpo.teacher = openai:NAME@URL) or pick a smaller one",
        TEACHER_PASS_LOGITS: "serve the teacher (grpo.teacher = openai:NAME@URL)",
        "weights": weight_knob("grpo", cfg.lora, "grpo.init"),
        "gradients": weight_knob("grpo", cfg.lora, "grpo.init"),
        "optimizer (AdamW)": weight_knob("grpo", cfg.lora, "grpo.init"),
        "KV cache (rollouts)": f"lower grpo.tasks_per_step ({cfg.tasks_per_step}), grpo.group_size ({cfg.group_size}) "
        f"or grpo.max_new_tokens ({cfg.max_new_tokens})",
        "activations": f"lower grpo.max_new_tokens ({cfg.max_new_tokens})"
        + ("" if cfg.gradient_checkpointing else " or set grpo.gradient_checkpointing = true"),
        "logits": f"lower grpo.max_new_tokens ({cfg.max_new_tokens})",
        OLD_PASS_ACTIVATIONS: old_pass_knob(cfg),
        OLD_PASS_LOGITS: old_pass_knob(cfg),
        "reference model": "set grpo.kl_weight = 0, or grpo.lora.r > 0 (the adapter-free base is the reference)",
    }
    return Plan("grpo", device, available, rows, knobs, notes, total, trained)
