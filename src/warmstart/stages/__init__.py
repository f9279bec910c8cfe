"""The pipeline's stages: generate, curate, sft, grpo, eval. Each is `run(recipe)` in a module of its own,
reads and writes the run directory through one skeleton (`runs.directory.Stage`: fingerprint, skip if
done, mark done) and can be rerun alone. A stage only composes the layers below it (train, distill,
policies, envs, lm, runs); the demos and the CLI compose stages.

A stage's module is imported when it runs: generating from an API teacher, or curating, never loads
torch (2-3 s at start-up, and ~200k more objects for every full garbage collection to scan)."""

import importlib

MODULES = {"generate": "generate", "curate": "curate", "sft": "sft", "grpo": "grpo", "eval": "evaluate"}


def runner(name: str):
    """The `run(recipe)` of the stage called `name` (a key of MODULES)."""
    return importlib.import_module(f".{MODULES[name]}", __name__).run
