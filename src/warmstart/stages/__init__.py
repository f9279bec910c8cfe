"""The pipeline's stages; each is `run(recipe)` and can be rerun alone."""

from . import curate, demo, demo_kd, evaluate, generate, grpo, sft

STAGES = {"generate": generate.run, "curate": curate.run, "sft": sft.run, "grpo": grpo.run, "eval": evaluate.run, "demo": demo.run, "demo-kd": demo_kd.run}
