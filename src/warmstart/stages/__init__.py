"""The pipeline's stages; each is `run(recipe)` and can be rerun alone.

A stage's module is imported when it runs: generating from an API teacher, or curating, never loads
torch (2-3 s at start-up, and ~200k more objects for every full garbage collection to scan)."""

import importlib

MODULES = {"generate": "generate", "curate": "curate", "sft": "sft", "grpo": "grpo", "eval": "evaluate", "demo": "demo", "demo-kd": "demo_kd"}


def runner(name: str):
    """The `run(recipe)` of the stage called `name` (a key of MODULES)."""
    return importlib.import_module(f".{MODULES[name]}", __name__).run
