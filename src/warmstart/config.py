"""The recipe: one TOML file, a section per stage, each section one typed model.

Every default lives here, once. Unknown keys and wrong types are errors that name the key.
`--set stage.key=value` overrides are applied to the raw TOML before validation, so they are checked
exactly like the file. The resolved recipe (every default written out) is saved in the run directory.
Policies are named by strings parsed once, here, into `PolicySpec`s; `with_section` changes a section
of a recipe and validates it as a file would be.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializationInfo,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .errors import WarmstartError

POLICY_FORMS = "reference, hf:PATH, openai:MODEL[@URL], anthropic:MODEL[@URL], run:NAME, base, student or teacher"
OWN_MODELS = ("base", "student", "teacher")


# A name the recipe gives a file or directory inside the run directory (trajectories/<generate.output>.jsonl,
# models/<sft.output>, ...) is joined to a path there, and the stages replace what it names whole (a
# model is published by removing the old directory): a path instead of a name could write outside the
# run directory or remove the run directory itself. So such a name is one plain file name.
MAX_NAME_BYTES = 100  # a file name may be 255 bytes; stages add suffixes (.dropped.json, .tmp)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def check_run_name(name: str) -> str:
    """`name` as it names a file or directory inside the run directory; else a ValueError saying why."""
    shown = repr(name) if len(name) <= 40 else repr(name[:40]) + "..."
    if not name:
        raise ValueError("must be a name (of a file or directory inside the run directory), got ''")
    if "/" in name or "\\" in name:
        raise ValueError(
            f"{shown} is a path; expected a plain name (no / or \\): the run directory decides where it goes"
        )
    if name.startswith("."):
        raise ValueError(f"{shown} starts with a dot; expected a plain name (not ., .. or a hidden name)")
    if CONTROL_CHARACTERS.search(name):
        raise ValueError(f"{shown} holds a control character; expected a plain name")
    if name != name.strip():
        raise ValueError(f"{shown} starts or ends with a space; expected a plain name")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"{shown} is {len(name.encode())} bytes long; expected a name of at most {MAX_NAME_BYTES}")
    return name


def check_model_name(name: str) -> str:
    """A name for models/<name> and checkpoints/<name> that a stage trains: a plain name that is not the
    run's untrained student (models/base) nor another model's temporary directory (<name>.tmp, which
    publishing that model replaces)."""
    check_run_name(name)
    if name == "base":
        raise ValueError("'base' is the run's untrained student (models/base); name the trained model otherwise")
    if name.endswith(".tmp"):
        raise ValueError(f"{name!r} ends with .tmp, which names a model's temporary directory; choose another name")
    return name


def run_model_name(name: str) -> str:
    """The NAME of a `run:NAME` policy: models/NAME, read, so any plain name (`base` included)."""
    try:
        return check_run_name(name)
    except ValueError as exc:
        raise ValueError(f"run:NAME names the run's models/NAME: {exc}") from None


def toml_tuple(value):
    """TOML has arrays, not tuples: a pair arrives as a list (from a recipe, or from `with_section`'s
    callers), which strict validation (validate_recipe) would refuse as a tuple."""
    return tuple(value) if isinstance(value, list) else value


def check_path_text(path: str) -> str:
    """A path the user names: blank is no path (`run.dir = ""` had written the run into the working directory)."""
    if not path.strip():
        raise ValueError("is blank: name a file or directory")
    return path


PathText = Annotated[str, AfterValidator(check_path_text)]
PassRateRange = Annotated[tuple[float, float], BeforeValidator(toml_tuple)]
PolicyPair = Annotated[tuple[str, str], BeforeValidator(toml_tuple)]
RunName = Annotated[str, AfterValidator(check_run_name)]
ModelName = Annotated[str, AfterValidator(check_model_name)]


@dataclass(frozen=True)
class PolicySpec:
    """A policy named in a recipe, parsed once from its string; everything past the recipe takes this.

        reference               the environment's own solver (the offline demo's teacher)
        hf:PATH                 a local transformers model directory or .gguf file
        openai:MODEL[@URL]      any OpenAI-compatible endpoint (default: OpenAI's)
        anthropic:MODEL[@URL]   Anthropic's Messages API
        vllm:PATH               vLLM on a GPU (refused when used: not available yet)
        run:NAME                the run's own models/NAME
        base | student | teacher  the run's own untrained student, SFT student, and generate.teacher

    `kind` is the prefix ("own" for the three words), `name` what follows it (a path, a model, a run
    model's name), `base_url` the part after `@`. `str()` gives the text back exactly as written, so
    fingerprints and the saved recipe do not change. `policies.spec.resolve` turns the run's own
    names into the concrete policy they stand for.
    """

    kind: Literal["reference", "hf", "openai", "anthropic", "vllm", "run", "own"]
    name: str = ""
    base_url: str | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        if text == "reference":
            return cls("reference", text=text)
        if text in OWN_MODELS:
            return cls("own", text, text=text)
        kind, colon, rest = text.partition(":")
        if colon and rest and kind == "run":
            return cls(kind, run_model_name(rest), text=text)
        if colon and rest and kind in ("hf", "vllm"):
            return cls(kind, rest, text=text)
        if colon and rest and kind in ("openai", "anthropic"):
            model, at, url = rest.rpartition("@")
            if at and model and url.startswith(("http://", "https://")):
                return cls(kind, model, url.rstrip("/"), text)
            return cls(kind, rest, None, text)
        raise ValueError(f"unknown policy {text!r}; expected {POLICY_FORMS}")

    @classmethod
    def local(cls, path: str | Path) -> PolicySpec:
        """A local model directory (or .gguf file) as a policy."""
        return cls("hf", str(path), text=f"hf:{path}")

    @property
    def is_local_model(self) -> bool:
        return self.kind == "hf"

    @property
    def identity(self) -> str:
        """The policy as a stage's fingerprint names it: an API model by its backend and model, without the
        URL it is reached at (the same server on another port is the same model; records keep the URL in
        their provenance, the response cache in its key); anything else as written."""
        return f"{self.kind}:{self.name}" if self.base_url else self.text

    def __str__(self) -> str:
        return self.text

    @classmethod
    def validate(cls, value: Any) -> PolicySpec:
        """A recipe value as a PolicySpec (already one, or a policy string)."""
        if isinstance(value, PolicySpec):
            return value
        if not isinstance(value, str):
            raise ValueError(f"a policy is a string ({POLICY_FORMS})")
        return cls.parse(value)


def model_or_policy(value: Any) -> PolicySpec:
    """Where a model to start from is asked for, a bare path means that local model (`hf:PATH`)."""
    if isinstance(value, str) and value not in OWN_MODELS and value != "reference" and ":" not in value:
        return PolicySpec("hf", value, text=value)
    return PolicySpec.validate(value)


# In a recipe a policy is its string: parsed when the recipe loads, written back (model_dump, TOML) as written.
FINGERPRINT = {"fingerprint": True}  # `model_dump(context=FINGERPRINT)`: a section as a stage's fingerprint holds it


def policy_text(spec: PolicySpec, info: SerializationInfo) -> str:
    """A policy in a dumped section: as written, or its `identity` in a fingerprint's dump."""
    return spec.identity if (info.context or {}).get("fingerprint") else str(spec)


PolicyField = Annotated[PolicySpec, PlainValidator(PolicySpec.validate), PlainSerializer(policy_text, return_type=str)]
ModelSpec = Annotated[PolicySpec, PlainValidator(model_or_policy), PlainSerializer(policy_text, return_type=str)]


class Section(BaseModel):
    # inf and nan are no setting's value (a budget of inf is no budget: leave the key out)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TinyModelConfig(Section):
    """The tiny Llama student built from scratch (see lm/tinymodel.py)."""

    vocab_size: int = Field(384, ge=300)  # 256 bytes + 4 special tokens + BPE merges
    hidden_size: int = Field(128, ge=8)
    # narrow MLP: ~1.5x the steps per second of 4x width, and steps matter more
    intermediate_size: int = Field(256, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    max_positions: int = Field(512, ge=16)


class RunConfig(Section):
    dir: PathText = "runs/default"
    # What torch, the tasks' draw and the export's int64 column take: 2**64 had passed generate and stopped sft.
    seed: int = Field(0, ge=-(2**63), lt=2**63)
    # Where models train and generate (lm/device.py): "auto" takes cuda, then mps, then the CPU; a device
    # asked for by name and absent is an error, never a silent fallback.
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


class LoraSettings(Section):
    """A LoRA adapter through peft instead of full fine-tuning (train/lora.py); r = 0 is off."""

    r: int = Field(0, ge=0)  # the adapter's rank; 0: train every weight
    alpha: float = Field(16.0, gt=0.0)  # scaling alpha / r
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # peft's names: "all-linear" (every linear layer but the output head) or module names, e.g. ["q_proj", "v_proj"]
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"])


class JudgeConfig(Section):
    """An LLM judge beside (or instead of) the verifier: see envs/judge.py."""

    policy: PolicyField  # any policy, e.g. the teacher's
    rubric: str = "The final answer is correct and complete."
    use: Literal["compare", "reward"] = "compare"  # compare: the verifier decides; reward: the judge does
    max_new_tokens: int = Field(512, ge=1)  # the judge's reply: its reasons and the verdict line


# The built-in environments: envs.BUILT_IN's names (tests/envs/test_plugins.py holds the two equal). Any
# other `env.name` is a plugin (envs/plugins.py): `module.path:ClassName`, or an installed entry point's name.
BUILT_IN_ENVS = ("arithmetic", "calculator", "math", "python", "repo", "swe")
ENV_ENTRY_POINT_GROUP = "warmstart.environments"
PLUGIN_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def installed_env_entry_points() -> list[str]:
    return sorted({entry.name for entry in entry_points(group=ENV_ENTRY_POINT_GROUP)})


def unknown_env_message(name: str) -> str:
    installed = ", ".join(installed_env_entry_points()) or "none"
    return (
        f"unknown environment {name!r}: expected a built-in ({', '.join(BUILT_IN_ENVS)}), module.path:ClassName, "
        f"or the name of an installed {ENV_ENTRY_POINT_GROUP} entry point (installed: {installed})"
    )


def check_env_name(name: str) -> str:
    """A mistake the recipe alone shows is reported as it loads, before anything is written; importing a
    plugin (and what can go wrong there) waits until the environment is made (envs.make_env)."""
    if name in BUILT_IN_ENVS:
        return name
    if ":" in name:
        if not PLUGIN_PATH.fullmatch(name):
            raise ValueError(f"{name!r} is not module.path:ClassName")
        return name
    if name not in installed_env_entry_points():
        raise ValueError(unknown_env_message(name))
    return name


class EnvConfig(Section):
    # A built-in's name, `module.path:ClassName`, or an installed entry point's name: docs/environments.md.
    name: str = "arithmetic"
    options: dict[str, Any] = Field(default_factory=dict)  # checked by the environment's own options model
    max_turns: int = Field(4, ge=1)  # policy turns per rollout where the environment has tools
    judge: JudgeConfig | None = None
    # Seconds one verification in a worker process may take (envs/verification.py): past it the verdict is
    # an infra error and the worker is replaced. Bounds a plugin's `verify` (run in a worker wherever its
    # environment can be pickled) and the sandboxed environments' workers, whose programs have limits of their own.
    verify_timeout: float = Field(300.0, gt=0.0)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        return check_env_name(name)

    @model_validator(mode="after")
    def _grading_ends_before_the_verifier_gives_up(self) -> "EnvConfig":
        """A sandboxed environment's wall clock per grading (`options.wall_s`: the swe and python environments')
        must end before `verify_timeout` kills the worker: else every grading past it is an infra error, and a
        killed swe grading had left its copy of the repository behind."""
        wall_s = self.options.get("wall_s")
        if isinstance(wall_s, (int, float)) and not isinstance(wall_s, bool) and wall_s >= self.verify_timeout:
            raise ValueError(
                f"env.options.wall_s = {wall_s:g} s is not below env.verify_timeout = {self.verify_timeout:g} s: the "
                "verifier would stop every grading that runs to its own limit; raise verify_timeout or lower wall_s"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler, info: SerializationInfo) -> dict:
        data = handler(self)
        if (info.context or {}).get("fingerprint"):
            data.pop("verify_timeout", None)  # it stops a verifier that hangs; it changes no verdict that returns
        return data


class TasksConfig(Section):
    train: int = Field(2000, ge=1)
    eval: int = Field(200, ge=1)
    train_file: PathText | None = None  # JSONL of Task records instead of generated tasks
    eval_file: PathText | None = None


class GenerateConfig(Section):
    # reference | hf:PATH | openai:MODEL[@URL] | anthropic:MODEL[@URL] | run:NAME
    teacher: PolicyField = PolicySpec.parse("reference")
    output: RunName = "teacher"  # trajectories/<output>.jsonl
    samples_per_task: int = Field(1, ge=1)
    concurrency: int = Field(64, ge=1)  # requests in flight (a batch, for local models)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)
    # More records of the stage's tasks ending in an error than this share: the stage fails (exit status 1,
    # one line); a rerun asks again for exactly those.
    max_error_rate: float = Field(0.2, ge=0.0, le=1.0)
    # Budget-aware sampling (stages/sampling_plan.py). Each task is asked in rounds of one sample; a task
    # stops once `stop_after_verified` of its samples passed, or after `max_samples_per_task` samples.
    # None: `samples_per_task` samples each, whatever they scored (the plain mode).
    stop_after_verified: int | None = Field(None, ge=1)
    max_samples_per_task: int | None = Field(None, ge=1)  # None: samples_per_task
    # adaptive: after `samples_per_task` (>= 2) samples, a task the teacher always passed or never passed gets
    # no more; one it sometimes fails is asked again, up to max_samples_per_task.
    adaptive: bool = False
    # A hard cap on this stage's API dollars: it stops before the request that could cross it (requests in
    # flight counted at their largest possible cost), keeps everything, and a rerun with a higher cap goes on.
    budget_usd: float | None = Field(None, gt=0.0)
    require_logprobs: bool = False  # api.top_logprobs asked and a reply has none: an error, not a warning

    @model_validator(mode="after")
    def _check_sampling(self) -> "GenerateConfig":
        most = self.max_samples_per_task or self.samples_per_task
        if self.stop_after_verified is not None and self.stop_after_verified > most:
            raise ValueError(
                f"stop_after_verified = {self.stop_after_verified} is above max_samples_per_task = {most}: "
                "no task could ever stop early"
            )
        if self.max_samples_per_task is not None and self.max_samples_per_task < self.samples_per_task:
            raise ValueError(
                f"max_samples_per_task = {self.max_samples_per_task} is below samples_per_task = {self.samples_per_task}"
            )
        aware = self.stop_after_verified is not None or self.adaptive
        if self.max_samples_per_task not in (None, self.samples_per_task) and not aware:
            raise ValueError(
                f"max_samples_per_task = {self.max_samples_per_task} bounds a budget-aware mode, and neither "
                f"stop_after_verified nor adaptive is set: every task gets samples_per_task = {self.samples_per_task}"
            )
        if self.adaptive and self.samples_per_task < 2:
            raise ValueError(
                "adaptive needs a probe of samples_per_task >= 2 samples: a probe of 1 always passed or never "
                "passed, so no task would be asked again"
            )
        return self


class ApiConfig(Section):
    """Remote backends (openai:, anthropic:): limits, retries, logprobs, prices."""

    key_env: str | None = None  # variable holding the key; default OPENAI_API_KEY / ANTHROPIC_API_KEY
    concurrency: int = Field(16, ge=1)  # requests in flight
    rpm: int | None = Field(None, ge=1)  # client-side requests per minute
    tpm: int | None = Field(None, ge=1)  # client-side tokens per minute (prompt + completion)
    timeout_s: float = Field(120.0, gt=0)  # per request
    max_retries: int = Field(6, ge=0)
    backoff_s: float = Field(1.0, gt=0)  # first retry waits up to this; doubles each time (full jitter)
    max_retry_after_s: float = Field(300.0, gt=0)  # a server's Retry-After is obeyed up to this (logged when capped)
    # A request, its retries and their waits included, gives up this long after it is first sent; None:
    # the retry policy's own worst case, (max_retries + 1) x timeout_s plus the longest waits. Either is
    # stated when generate starts.
    deadline_s: float | None = Field(None, gt=0)
    # >0: record token logprobs and this many alternatives (APIs and hf: local models)
    top_logprobs: int = Field(0, ge=0, le=20)
    # A per-request seed (best-effort reproducibility); `warmstart serve` runs seeded requests alone, unbatched.
    send_seed: bool = True
    thinking_tokens: int = Field(0, ge=0)  # anthropic: >0 turns extended thinking on with this budget
    # TOML price table used instead of the built-in one (src/warmstart/runs/prices.toml)
    prices: PathText | None = None
    batch_discount: bool = False  # price requests at the provider's batch rate


class CurateConfig(Section):
    input: RunName = "teacher"  # trajectories/<input>.jsonl
    output: RunName = "train"  # curated/<output>.jsonl and curated/<output>.dropped.json
    require_passed: bool = True  # False keeps unverified data (the value-of-verification ablation)
    strip_reasoning: bool = False  # True removes the chain (the value-of-the-chain ablation)
    dedup: bool = True  # exact duplicates
    decontaminate: bool = True  # prompts of the eval split, and n-gram overlap with it and the files below
    # Near-duplicates (MinHash LSH, curation/near_dup.py) over the prompt and over the whole trajectory;
    # the best-verified member of each cluster is kept.
    near_dedup: bool = True
    shingle_size: int = Field(5, ge=1)  # words per shingle
    near_dup_threshold: float = Field(0.8, gt=0.0, le=1.0)  # Jaccard similarity (exact, on LSH's candidates)
    # n-gram decontamination (curation/contamination.py): prompts and answers sharing an n-gram of
    # normalized words with the eval split or with any of these files (JSONL or parquet)
    decontaminate_against: list[PathText] = Field(default_factory=list)
    decontaminate_field: str | None = None  # the files' text field; None: detected (prompt, question, ...)
    ngram: int = Field(13, ge=1)
    # Keep tasks whose teacher pass rate (over its samples) lies in [lo, hi]; None keeps every task.
    teacher_pass_rate: PassRateRange | None = None
    # Keep tasks whose pass rate by `student` (its own samples, `student_samples` per task, at eval's
    # temperature) lies in [lo, hi]: e.g. [0, 0.75] drops what the model you start from already solves.
    student_pass_rate: PassRateRange | None = None
    student: ModelSpec = PolicySpec.parse("base")  # "base" (sft.student), a model directory or any policy
    student_samples: int = Field(4, ge=1)

    @field_validator("teacher_pass_rate", "student_pass_rate")
    @classmethod
    def _check_rate(cls, value):
        if value is not None and not (0.0 <= value[0] <= value[1] <= 1.0):
            raise ValueError(f"expected [lo, hi] with 0 <= lo <= hi <= 1, got {list(value)}")
        return value


# Knobs of speed, memory and bookkeeping, not of results: left out of a training stage's fingerprint, so
# toggling one keeps a finished stage done and its checkpoints resumable (gradient checkpointing recomputes
# the same activations, and a compiled decoder computes the same function, up to the order of float sums:
# GRPO under gradient checkpointing runs each row's prompt itself rather than once per group). Sharding
# trains the same weights (tests/train/test_distributed_sft.py), and its checkpoints are gathered into the
# unsharded layout: a run that did not fit unsharded resumes sharded.
NOT_RESULTS = {"compile", "gradient_checkpointing", "checkpoint_every", "keep_checkpoints", "sharding"}


class SftConfig(Section):
    # Defaults suit the tiny student on 2 CPU cores (measured: see README); set lr, seq_len and the
    # batch for a real model, e.g. lr = 2e-5 and seq_len = 2048.
    data: RunName = "train"  # curated/<data>.jsonl
    output: ModelName = "student"  # models/<output>, checkpoints/<output>
    student: str = "tiny"  # "tiny" (built from `tiny`) or a local model directory / .gguf file
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    steps: int = Field(600, ge=1)
    seq_len: int = Field(256, ge=16)  # packed row length in tokens
    rows_per_micro_batch: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    # Distillation signal (distill/signal_choice.py): auto takes the richest the teacher offers (logits > topk > tokens).
    distill: Literal["auto", "tokens", "topk", "logits"] = "auto"
    # loss = (1 - w) CE + w KL where the teacher's distribution is known; 0 = plain SFT
    kd_weight: float = Field(0.5, ge=0.0, le=1.0)
    # whose logits dense KD uses: "teacher" (generate.teacher), run:NAME or hf:PATH
    teacher: PolicyField = PolicySpec.parse("teacher")
    kd_chunk: int = Field(1024, ge=1)  # scored positions per logits chunk: bounds KD memory to chunk x vocabulary
    # bf16: forward/backward under bf16 autocast (weights, AdamW state, loss in fp32). "auto" (lm/device.py):
    # bf16 on a GPU that supports it, fp32 on the CPU, where bf16 is faster only with native bf16 matmul
    # (AVX512-BF16/AMX) and ~5x slower than fp32 on AVX2-only CPUs.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30 % more compute
    # Under torchrun: "none" (every process holds the whole model, gradients summed: train/distributed.py)
    # or "fsdp" (FSDP2: weights, gradients and optimizer state split over the processes: train/sharding.py)
    sharding: Literal["none", "fsdp"] = "none"
    # torch.compile the decoder (lm/compiled.py; eager with one warning if it fails). Off: on CPU the tiny
    # student gains ~0.1 s a step for minutes of compiling, SmolLM2-135M SFT ~1.15x in fp32 (in bf16
    # on a CPU with native bf16 0.94x, slower: bench/results/utilisation.md), its GRPO step is slower
    # compiled (bench/results/compile.md)
    compile: bool = False


class GrpoConfig(Section):
    """RL on the environment's verifier (see stages/grpo.py for what each knob does)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    init: ModelSpec = PolicySpec.parse("student")  # "student", "base", "run:NAME" or a model directory: where RL starts
    output: ModelName = "student-grpo"  # models/<output>, checkpoints/<output>
    steps: int = Field(50, ge=1)
    seconds_budget: float | None = Field(None, gt=0)  # stop early once this many seconds of RL were spent
    tasks_per_step: int = Field(16, ge=1)
    group_size: int = Field(8, ge=2)
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    warmup_steps: int = Field(5, ge=0)
    updates_per_batch: int = Field(2, ge=1)  # optimizer steps on each sampled batch (old log-probs kept)
    clip_low: float = Field(0.2, ge=0.0, lt=1.0)
    clip_high: float = Field(0.28, ge=0.0)  # > clip_low: clip-higher
    kl_weight: float = Field(0.0, ge=0.0)  # 0 keeps no reference model in memory
    normalization: Literal["token", "sequence", "constant"] = "token"  # "constant" with scale_by_std=false: Dr. GRPO
    scale_by_std: bool = True
    drop_zero_variance: bool = True  # dynamic sampling: refill from the next tasks
    max_refills: int = Field(4, ge=0)  # extra sampling rounds per step to replace dropped groups
    overlong_buffer: int = Field(0, ge=0)  # >0: soft penalty over the last N tokens before max_new_tokens
    grad_clip: float = Field(1.0, gt=0.0)
    # On-policy distillation: a teacher scores the student's own tokens; per-token advantage
    # log q - log p (reverse KL) plus reward_weight x the verifier's group advantage.
    # None: plain GRPO; "teacher", run:NAME, hf:PATH, or openai:MODEL@URL serving prompt logprobs
    teacher: PolicyField | None = None
    reward_weight: float = Field(1.0, ge=0.0)  # with a teacher: 0 = pure distillation
    teacher_tokens_budget: int | None = Field(None, ge=1)  # stop once the teacher has scored this many tokens
    checkpoint_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    # "learnable": a zero-advantage curriculum. The current student samples `task_filter_samples` answers
    # to candidate tasks; only tasks it passes sometimes (0 < pass rate < 1) are trained on; refreshed
    # every `task_filter_every` steps. "all": every task, in order.
    task_filter: Literal["all", "learnable"] = "all"
    task_filter_samples: int = Field(4, ge=2)
    task_filter_every: int = Field(10, ge=1)
    lora: LoraSettings = Field(
        default_factory=LoraSettings
    )  # with kl_weight > 0 the adapter-disabled base is the reference
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the decoder for sampling and update, as sft.compile
    # Train-inference mismatch (train/mismatch.py): each policy token's loss weighted by
    # min(p_trainer / p_sampler, tis_cap) (truncated importance sampling; 0: off); a step whose mean
    # |log p_trainer - log p_sampler| exceeds mismatch_limit stops the run (the sampler is not this policy).
    tis_cap: float = Field(2.0, ge=0.0)  # 0: off (weights 1)
    mismatch_limit: float = Field(1.0, gt=0.0)
    # "openai:NAME@URL": the groups are sampled by an OpenAI-compatible server serving NAME = grpo.init
    # (vLLM, SGLang, `warmstart serve`) that returns token ids and log-probs; the weights reach it after each
    # update (train/rollout_server.py). None: sampled in this process.
    rollout_server: PolicyField | None = None
    # 1: one-step-off-policy. The next step's groups are sampled (by the rollout server, with the weights
    # before this step's update) while this step trains; TIS corrects for the one step of staleness. 0: off.
    # (`async` is a Python keyword: the field is async_steps, written and read as `async`.)
    async_steps: int = Field(0, ge=0, le=1, alias="async")

    @field_validator("tis_cap")
    @classmethod
    def _cap_at_least_one(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError(
                f"must be 0 (off) or at least 1 (a cap below 1 would shrink on-policy tokens), got {value}"
            )
        return value

    @field_validator("rollout_server")
    @classmethod
    def _rollout_server_is_openai(cls, value: PolicySpec | None) -> PolicySpec | None:
        if value is not None and (value.kind != "openai" or not value.base_url):
            raise ValueError(f"expected openai:NAME@URL (an OpenAI-compatible server), got {value}")
        return value

    @model_validator(mode="after")
    def _async_needs_a_server(self) -> GrpoConfig:
        if self.async_steps and self.rollout_server is None:
            raise ValueError(
                "async = 1 needs grpo.rollout_server: the next step is sampled there while this one trains"
            )
        return self

    @model_validator(mode="after")
    def _settings_that_take_effect(self) -> GrpoConfig:
        """Settings that would do nothing, or something else than asked, are refused rather than ignored."""
        if self.overlong_buffer >= self.max_new_tokens:
            raise ValueError(
                f"overlong_buffer = {self.overlong_buffer} must be less than max_new_tokens = {self.max_new_tokens}: "
                "it penalises the last N tokens before the limit, so every reply would be penalised"
            )
        if self.teacher is None and self.teacher_tokens_budget is not None:
            raise ValueError("teacher_tokens_budget counts a teacher's scored tokens: it needs grpo.teacher")
        if self.teacher is None and self.reward_weight != 1.0:
            raise ValueError("reward_weight weighs the reward against a teacher's distillation: it needs grpo.teacher")
        return self


class EvalConfig(Section):
    # name -> policy. "base", "student" and "teacher" mean the run's own; any other value is a policy string.
    policies: dict[str, PolicyField] = Field(
        default_factory=lambda: {name: PolicySpec.parse(name) for name in OWN_MODELS}, min_length=1
    )
    k: int = Field(4, ge=1)  # samples per task; pass@1 and pass@k are reported
    temperature: float = Field(0.6, ge=0.0)

    @field_validator("policies")
    @classmethod
    def _named_rows(cls, policies: dict) -> dict:
        """A blank row name is no row a table or a comparison can show."""
        blank = [name for name in policies if not name.strip()]
        if blank:
            raise ValueError(f"a row name must say something, got {blank[0]!r}")
        return policies

    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(256, ge=1)
    # Pairs of policy names [a, b] whose paired difference of pass@1 (a - b) eval reports, beside every
    # policy against "base" (which it always reports where base is a row).
    compare: list[PolicyPair] = Field(default_factory=list)
    # The most samples of one policy whose requests may fail (an API's, after its retries) before eval stops
    # rather than score that policy on fewer samples than the others: failed requests are never scored 0.
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0)


RAY_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9_.\-]+:\d{1,5}")


class RayConfig(Section):
    """`generate` and `eval` on a Ray cluster (cluster/, docs/ray.md): rollouts fan out to worker actors,
    verification to sandbox actors, and this process alone writes the records, the response cache and the
    ledger. Without a `[ray]` section everything runs in this process and Ray is never imported."""

    # "auto": the cluster this machine joined (`ray start`, or RAY_ADDRESS); "local": a Ray instance started
    # for this process; "HOST:PORT": a cluster's GCS address; "ray://HOST:PORT": through Ray Client.
    address: str = "auto"
    # Rollout actors. None: one per GPU of the cluster for a local model (one in all without GPUs), else one
    # per CPU of the cluster. An API teacher's workers share api.rpm / api.tpm: the limits hold cluster-wide.
    workers: int | None = Field(None, ge=1)
    # Verification actors. None: the environment's verify_workers, as actors only where it is above 1
    # (a sandboxed environment); a number: that many actors, whatever the environment.
    verify_workers: int | None = Field(None, ge=1)
    # A worker that dies is restarted up to this many times, the piece of work it held asked again of it.
    max_restarts: int = Field(3, ge=0)

    @field_validator("address")
    @classmethod
    def _check_address(cls, address: str) -> str:
        if address in ("auto", "local") or RAY_ADDRESS.fullmatch(address):
            return address
        raise ValueError(f"{address!r} is not auto, local, HOST:PORT or ray://HOST:PORT")


class LogConfig(Section):
    """Where training scalars go (runs/tracking.py): metrics.jsonl always, and these backends (optional extras)."""

    to: list[Literal["jsonl", "tensorboard", "trackio", "wandb"]] = Field(default_factory=lambda: ["jsonl"])
    project: str = "warmstart"  # the trackio / W&B project

    @field_validator("to")
    @classmethod
    def _check_once_each(cls, names: list[str]) -> list[str]:
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:  # each would get every scalar twice (TensorBoard: two event files, a zig-zag line)
            raise ValueError(f"{repeated[0]} is named more than once")
        return names


class Recipe(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    ray: RayConfig | None = None  # absent: no Ray (see RayConfig)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise WarmstartError(f"--set {text!r}: expected stage.key=value")
    key, raw = text.split("=", 1)
    path = [part.strip() for part in key.split(".")]
    if not all(path):
        raise WarmstartError(f"--set {text!r}: expected stage.key=value, with no empty part in the key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string: --set generate.teacher=reference
    return path, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise WarmstartError(f"--set {text!r}: {part} is not a section")
        node[path[-1]] = value
    return raw


def describe_validation_error(source: str, exc: ValidationError, prefix: str = "") -> str:
    """One line naming the first bad key, e.g. `recipe.toml: unknown key sft.lrr`."""
    first = exc.errors()[0]
    key = ".".join([*([prefix] if prefix else []), *map(str, first["loc"])])
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {key}"
    if first["type"] == "value_error":  # our own validators' messages say what was wrong and with what
        return f"{source}: {key}: {first['msg'].removeprefix('Value error, ')}"
    return f"{source}: {key}: {first['msg']} (got {first.get('input')!r})"


def validate_recipe(raw: dict, source: str) -> Recipe:
    # Strict: TOML's values are typed, so a value of another type is the user's mistake to name, not to
    # convert (lax validation took `sft.lr = true` as 1.0 and `curate.dedup = "yes"` as true). An integer
    # where a float is wanted is still a number.
    try:
        return Recipe.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise WarmstartError(describe_validation_error(source, exc)) from None


def with_section(recipe: Recipe, section: str, **changes) -> Recipe:
    """The recipe with keys of one section changed, validated as a recipe file would be."""
    raw = recipe.model_dump()
    raw[section] = {**raw[section], **changes}
    return validate_recipe(raw, "recipe")


def load_recipe(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> Recipe:
    raw: dict = copy.deepcopy(base or {})
    source = "recipe"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise WarmstartError(f"{path}: recipe file not found")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (Windows editors write one) skipped
        except tomllib.TOMLDecodeError as exc:
            raise WarmstartError(f"{path}: not valid TOML ({exc})") from None
        except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
            raise WarmstartError(f"{path}: not UTF-8 text (byte {exc.start}), so not TOML") from None
        except OSError as exc:  # unreadable: permissions, a directory's race, an I/O error
            raise WarmstartError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from None
    return validate_recipe(apply_overrides(raw, list(overrides)), source)


def recipe_toml(recipe: Recipe) -> str:
    """The resolved recipe as TOML (tomllib reads only, so this small writer covers our value types)."""
    lines: list[str] = []
    _write_table(lines, [], recipe.model_dump(exclude_none=True))
    return "\n".join(lines).strip() + "\n"


def _write_table(lines: list[str], path: list[str], table: dict) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (scalars or not tables):
        lines.append(f"\n[{'.'.join(_toml_key(p) for p in path)}]")
    for key, value in scalars.items():
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in tables.items():
        _write_table(lines, [*path, key], value)


BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c >= " " and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
