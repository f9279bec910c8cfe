"""Shared test helpers: small recipes and reference-teacher data written into a run directory."""

from __future__ import annotations

from pathlib import Path

from warmstart.config import Recipe, load_recipe
from warmstart.stages import curate, generate

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
