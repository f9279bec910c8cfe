"""GRPO with its rollouts sampled by a real `warmstart serve` process: LoRA adapters and full weights
synced after every update (the server's policy version advancing once per step), one-step-off-policy
sampling, and each way the server can fail the loop as one clear error."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from helpers import curated_run
from warmstart.config import load_recipe, recipe_toml
from warmstart.envs.arithmetic import Arithmetic
from warmstart.envs.base import final_assistant_text
from warmstart.errors import WarmstartError
from warmstart.stages import grpo, sft
from warmstart.types import Verdict

STEPS = 3
SETTINGS = [
    "sft.steps=2",
    "grpo.init=base",
    f"grpo.steps={STEPS}",
    "grpo.tasks_per_step=2",
    "grpo.group_size=4",
    "grpo.max_new_tokens=10",
    "grpo.updates_per_batch=1",
    "grpo.lr=1e-2",
]


class EvenLength(Arithmetic):
    """Rewarded when the reply has an even number of characters: an untrained model earns it about half
    the time, so every group has reward variance and every step updates the policy."""

    def verify(self, task, trajectory):
        passed = len(final_assistant_text(trajectory) or "") % 2 == 0
        return Verdict(reward=float(passed), passed=passed)


@contextmanager
def serving(model_dir: Path, *flags: str):
    """A `warmstart serve` process over `model_dir` named "policy"; its base URL."""
    command = [sys.executable, "-m", "warmstart.cli", "serve", str(model_dir), "--port", "0", "--model-name", "policy"]
    process = subprocess.Popen([*command, *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        line = process.stdout.readline() if ready else ""
        assert line.startswith("serving policy on http://127.0.0.1:"), line
        yield line.split(" on ")[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A run whose base model exists (the model GRPO starts from and the server serves)."""
    root = tmp_path_factory.mktemp("grpo-server")
    recipe = curated_run(root / "run", *SETTINGS)
    sft.run(recipe)
    return recipe


def with_settings(recipe, run_dir: Path, *overrides: str):
    """The recipe in another run directory (its base model copied there), with `overrides`."""
    import shutil

    shutil.copytree(Path(recipe.run.dir), run_dir, ignore=shutil.ignore_patterns("checkpoints", "manifest.json"))
    path = run_dir / "recipe.toml"
    path.write_text(recipe_toml(recipe))
    return load_recipe(path, [f"run.dir='{run_dir}'", *overrides])


def history_of(recipe) -> list[dict]:
    manifest = json.loads((Path(recipe.run.dir) / "manifest.json").read_text())
    return manifest["stages"]["grpo:student-grpo"]["history"]


def models_served(url: str) -> list[str]:
    return [m["id"] for m in httpx2.get(f"{url}/models").json()["data"]]


def test_lora_updates_reach_the_server_once_per_step(base_run, tmp_path):
    with serving(Path(base_run.run.dir) / "models" / "base", "--enable-lora") as url:
        recipe = with_settings(
            base_run, tmp_path / "lora", f"grpo.rollout_server='openai:policy@{url}'", "grpo.lora.r=4"
        )
        grpo.run(recipe, env=EvenLength())
        history = history_of(recipe)
        assert [h["policy_version"] for h in history] == list(range(STEPS))  # sampled by the weights before it
        assert all(h["groups_used"] > 0 for h in history)
        # The server's log-probs (its own forward pass, adapter applied) are the trainer's.
        assert all(h["mismatch_abs_logp"] < 1e-3 for h in history)
        assert models_served(url) == ["policy", f"policy-v{STEPS}"]  # the old adapters were unloaded
    assert (Path(recipe.run.dir) / "models" / "student-grpo").exists()


def test_full_weights_reach_the_server_once_per_step(base_run, tmp_path):
    with serving(Path(base_run.run.dir) / "models" / "base", "--enable-weight-updates") as url:
        recipe = with_settings(base_run, tmp_path / "full", f"grpo.rollout_server='openai:policy@{url}'")
        grpo.run(recipe, env=EvenLength())
        history = history_of(recipe)
        assert [h["policy_version"] for h in history] == list(range(STEPS))
        assert all(h["mismatch_abs_logp"] < 1e-3 for h in history)
        assert httpx2.get(url.removesuffix("/v1") + "/get_model_info").json()["weight_version"] == str(STEPS)


def test_one_step_off_policy_samples_each_batch_one_version_behind(base_run, tmp_path):
    with serving(Path(base_run.run.dir) / "models" / "base", "--enable-lora") as url:
        recipe = with_settings(
            base_run, tmp_path / "async", f"grpo.rollout_server='openai:policy@{url}'", "grpo.lora.r=4", "grpo.async=1"
        )
        grpo.run(recipe, env=EvenLength())
        history = history_of(recipe)
    # Step 1 is sampled before anything trains; step t > 1 by the weights of step t - 2 (one update stale).
    assert [h["policy_version"] for h in history] == [0] + list(range(STEPS - 1))
    later = history[1:]
    assert all(h["groups_used"] > 0 for h in later)
    # Stale by one update: the sampler and trainer differ now, and the weights correct for it.
    assert all(0 < h["mismatch_abs_logp"] < 1.0 for h in later)


def test_a_server_without_lora_updates_is_one_clear_error(base_run, tmp_path):
    with serving(Path(base_run.run.dir) / "models" / "base") as url:
        recipe = with_settings(
            base_run, tmp_path / "refused", f"grpo.rollout_server='openai:policy@{url}'", "grpo.lora.r=4"
        )
        with pytest.raises(WarmstartError, match="load_lora_adapter.*refused.*--enable-lora"):
            grpo.run(recipe, env=EvenLength())


def test_an_unreachable_or_wrong_server_is_one_clear_error(base_run, tmp_path):
    recipe = with_settings(
        base_run, tmp_path / "unreachable", "grpo.rollout_server='openai:policy@http://127.0.0.1:9/v1'"
    )
    with pytest.raises(WarmstartError, match="grpo.rollout_server: cannot reach"):
        grpo.run(recipe, env=EvenLength())
    with serving(Path(base_run.run.dir) / "models" / "base") as url:
        recipe = with_settings(base_run, tmp_path / "wrong", f"grpo.rollout_server='openai:student@{url}'")
        with pytest.raises(WarmstartError, match="does not serve model 'student'"):
            grpo.run(recipe, env=EvenLength())


def test_an_adapter_the_server_lost_is_a_policy_version_mismatch(base_run, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from warmstart.policies.rollout_server import RolloutServer
    from warmstart.train.weight_sync import WeightSync

    base = Path(base_run.run.dir) / "models" / "base"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules="all-linear"))
    with serving(base, "--enable-lora") as url:
        server = RolloutServer("policy", url, "unused", timeout_s=30, concurrency=2, max_retries=0)
        sync = WeightSync(server, model, adapter=True, directory=tmp_path / "weights")
        sync.publish(0)
        sync.check()  # the server holds version 0
        httpx2.post(f"{url}/unload_lora_adapter", json={"lora_name": "policy-v0"}).raise_for_status()
        with pytest.raises(WarmstartError, match="no longer serves adapter 'policy-v0'"):
            sync.check()
        server.close()
