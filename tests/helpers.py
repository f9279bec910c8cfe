"""Shared test helpers: small recipes and reference-teacher data written into a run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from warmstart.config import Recipe, TinyModelConfig, load_recipe
from warmstart.lm.tinymodel import build_tiny_llama, train_tokenizer
from warmstart.stages import curate, generate
from warmstart.train.memory_plan import MB, plan_for
from warmstart.types import Message, Provenance, ToolCall, ToolFunction, Trajectory, Usage, Verdict

TINY = [
    "sft.tiny.hidden_size=32",
    "sft.tiny.intermediate_size=64",
    "sft.tiny.num_layers=2",
    "sft.tiny.num_heads=2",
    "sft.tiny.vocab_size=300",
    "sft.seq_len=128",
    "sft.rows_per_micro_batch=2",
    "sft.warmup_steps=2",
]


def small_recipe(run_dir: Path, *overrides: str, train: int = 120, eval_: int = 20) -> Recipe:
    return load_recipe(None, [f"run.dir='{run_dir}'", f"tasks.train={train}", f"tasks.eval={eval_}", *TINY, *overrides])


def write_recipe_file(path: Path, recipe: Recipe) -> Path:
    from warmstart.config import recipe_toml

    path.write_text(recipe_toml(recipe))
    return path


def curated_run(run_dir: Path, *overrides: str, train: int = 120) -> Recipe:
    """A run directory with reference-teacher trajectories generated and curated."""
    recipe = small_recipe(run_dir, *overrides, train=train)
    generate.run(recipe)
    curate.run(recipe)
    return recipe


def make_trajectory(task_id: str = "t/1", sample_index: int = 0) -> Trajectory:
    return Trajectory(
        task_id=task_id,
        sample_index=sample_index,
        policy="reference",
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content='What is 2+2? ünïcødé "quotes" \n newline'),
            Message(
                role="assistant",
                reasoning="2+2=4",
                tool_calls=[ToolCall(id="c1", function=ToolFunction(name="calc", arguments='{"x": "2+2"}'))],
            ),
            Message(role="tool", tool_call_id="c1", content="4"),
            Message(role="assistant", content="Answer: 4"),
        ],
        usage=[Usage(tokens_in=10, tokens_out=3, tokens_cached=2), Usage(tokens_in=14, tokens_out=4)],
        logprobs=[{"token": "4", "logprob": -0.01, "top": [["4", -0.01], ["5", -4.6]]}],
        verdict=Verdict(reward=1.0, passed=True, details={"answer": 4}),
        provenance=Provenance(provider="reference", model="m", sampling={"temperature": 0.7}, seed=3, created=1.5),
        finish_reason="stop",
    )


# A 2-layer tiny Llama's shape, built by tests in memory (tests/lm/conftest.py's tokenizer and batch).
TINY_SHAPE = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2)


def logsumexp_gradients(model, batch: dict, context) -> list[torch.Tensor]:
    """The parameters' gradients of sum(logsumexp(logits)) over `batch`'s scored positions, the forward
    under `context()`: every logit gets a gradient."""
    model.zero_grad(set_to_none=True)
    with context():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    (logits.float().logsumexp(-1) * batch["loss_mask"]).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


def tiny_model():
    """A 2-layer tiny Llama and its tokenizer, built in memory (no run directory)."""
    tokenizer = train_tokenizer(["What is 1+1? Answer: 2 carry so far"] * 4, 300)
    cfg = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=300)
    return build_tiny_llama(tokenizer, cfg, seed=0), tokenizer


def code_reply(task, code: str, before: str = "") -> Trajectory:
    """A trajectory whose assistant turn answers `task` with `code` in a ```python block."""
    return Trajectory(
        task_id=task.id,
        policy="t",
        messages=[*task.prompt, Message(role="assistant", content=f"{before}```python\n{code}```")],
        provenance=Provenance(provider="t", model="t", created=0),
    )


def kill_every_process_of(recipe_file: Path) -> None:
    """SIGKILL every process whose command line names `recipe_file`: torchrun and its workers, which
    torchrun starts in sessions of their own (killing torchrun's process group leaves them running)."""
    import os
    import signal
    import time

    def running() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and str(recipe_file).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:  # the process ended while we looked
                continue
        return [pid for pid in pids if pid != os.getpid()]

    for pid in running():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 30
    while running():  # zombies of this process's own children count until reaped by the caller
        assert time.time() < deadline, "processes outlived SIGKILL"
        time.sleep(0.01)


def load_export(out: Path, fmt: str, cache: Path | None = None):
    """An export loaded as a user loads it (`load_dataset(DIR)`; `load_from_disk` for hf), `datasets`' cache
    in `cache` (default: beside `out`), not the user's."""
    import datasets  # the extra: only the export tests need it

    if fmt == "hf":
        return datasets.load_from_disk(str(out))
    return datasets.load_dataset(str(out), split="train", cache_dir=str(cache or out.parent / "hf-cache"))


# A stage's peak in a fresh interpreter (VmHWM): the test process's own peak would hide it.
SFT_PEAK = """
import json
from warmstart.config import load_recipe
from warmstart.stages import sft
from warmstart.train.memory_plan import peak_rss_mb
sft.run(load_recipe({recipe_file!r}))
print(json.dumps({{"peak_mb": peak_rss_mb()}}))
"""


def gpt2_sft_planned_and_peak(tmp_path: Path, layers: int, rows: int, *overrides: str) -> tuple[float, float]:
    """A short SFT of a fresh GPT-2 (width 256, 4 heads, its default dropout and gelu_new) on 1024-token rows:
    (the memory plan's MB, the measured peak MB)."""
    tokenizer = train_tokenizer(["What is 1+1? Answer: 2 carry so far"] * 4, 300)
    model_dir = tmp_path / "gpt2"
    config = AutoConfig.for_model(
        "gpt2", vocab_size=len(tokenizer), n_embd=256, n_layer=layers, n_head=4, n_positions=1024
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    settings = [f"sft.student='{model_dir}'", "sft.steps=2", "sft.seq_len=1024", f"sft.rows_per_micro_batch={rows}"]
    recipe = curated_run(tmp_path / "run", *settings, *overrides)
    recipe_file = write_recipe_file(tmp_path / "recipe.toml", recipe)
    done = subprocess.run(
        [sys.executable, "-c", SFT_PEAK.format(recipe_file=str(recipe_file))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]
    return plan_for(recipe, "sft").total_bytes / MB, measured
