"""The memory plan under gradient checkpointing for a model like GPT-2: the recomputed layer's attention
gradients where attention dropout applies, and the heap a composite activation (GPT-2's gelu_new, a chain
of elementwise operations) leaves resident on the CPU. GPT-2 with its default attention dropout had been
planned 23-29 % under a checkpointed SFT's peak (1038 planned, 1348-1466 MB measured; docs/memory.md)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig

from helpers import gpt2_sft_planned_and_peak, small_recipe
from warmstart.train.activation_memory import Shape, activation_bytes
from warmstart.train.memory_plan import plan_for

CHECKPOINTED = ["sft.seq_len=512", "sft.rows_per_micro_batch=2", "sft.gradient_checkpointing=true"]


def gpt2_config(directory: Path, **settings) -> Path:
    """A model directory holding only a small GPT-2's config.json: all a plan reads."""
    AutoConfig.for_model(
        "gpt2", vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=512, **settings
    ).save_pretrained(directory)
    return directory


def activations(directory: Path, run_dir: Path, *overrides: str) -> int:
    plan = plan_for(small_recipe(run_dir, f"sft.student='{directory}'", *overrides), "sft")
    return next(row.bytes for row in plan.rows if row.name == "activations")


def test_checkpointing_counts_the_recomputed_layers_attention_probabilities_and_their_gradients(tmp_path):
    with_dropout = activations(gpt2_config(tmp_path / "dropout", attn_pdrop=0.1), tmp_path / "run", *CHECKPOINTED)
    without = activations(gpt2_config(tmp_path / "none", attn_pdrop=0.0), tmp_path / "run", *CHECKPOINTED)
    heads, rows, seq = 4, 2, 512
    probabilities = heads * rows * seq * seq * 4  # [rows, heads, seq, seq] fp32
    assert with_dropout - without == (3 + 2) * probabilities  # one layer's: 3 saved, 2 gradients in its backward


def test_a_composite_activation_under_checkpointing_counts_the_heap_its_chain_leaves(tmp_path):
    composite, plain = (gpt2_config(tmp_path / name, activation_function=name) for name in ("gelu_new", "gelu"))
    tokens, intermediate, layers = 2 * 512, 4 * 64, 2
    block = tokens * intermediate * 4  # one [tokens, intermediate] fp32 tensor: 1 MiB, from glibc's heap
    checkpointed = [activations(model, tmp_path / "run", *CHECKPOINTED) for model in (composite, plain)]
    assert checkpointed[0] - checkpointed[1] == (12 + 2 * layers) * block
    whole = [activations(model, tmp_path / "run", *CHECKPOINTED[:2]) for model in (composite, plain)]
    assert whole[0] == whole[1]  # without checkpointing the measured 4 x intermediate a token holds it


def test_a_composite_activations_mapped_blocks_are_counted_once_and_not_on_an_accelerator():
    config = AutoConfig.for_model("gpt2", n_embd=256, n_layer=8, n_head=4, activation_function="gelu_new")
    shape = Shape.of(config)
    plain = Shape.of(AutoConfig.for_model("gpt2", n_embd=256, n_layer=8, n_head=4, activation_function="gelu"))
    tokens = 8 * 1024  # x 1024 wide x 4 bytes: 32 MiB blocks, which glibc maps and unmaps whole
    extra = activation_bytes(shape, tokens, True, 1024, "cpu") - activation_bytes(plain, tokens, True, 1024, "cpu")
    assert extra == 6 * tokens * 1024 * 4
    assert activation_bytes(shape, tokens, True, 1024, "cuda") == activation_bytes(plain, tokens, True, 1024, "cuda")


# A short checkpointed SFT of a GPT-2 with its default dropout (attn_pdrop 0.1) and activation (gelu_new), its
# peak taken in a fresh interpreter (VmHWM). Measured 851 and 881 MB on a 2-core EPYC: planned 714 before
# (-16 to -19 %), 906 now (+3 to +6 %).
def test_a_checkpointed_gpt2_is_planned_within_14_percent_under_and_25_over_its_peak(tmp_path):
    planned, measured = gpt2_sft_planned_and_peak(tmp_path, 2, 2, "sft.gradient_checkpointing=true")
    # Under is the side that lets a run start that will not fit: a narrower band there.
    assert -0.14 <= (planned - measured) / measured <= 0.25, (planned, measured)
