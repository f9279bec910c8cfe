"""`sft` and `grpo` stop a diverged run with one line before it is published, the checkpoints of earlier
steps kept: a model blown up but finite (a loss far above a uniform guess, or weights so large that the
output no longer depends on them), the last update included; a non-finite gradient at the step that has
it, not at the next checkpoint. Data smaller than a step's batch is said once (train/step_checks.py,
train/sft.repeated_rows, train/grpo.repeated_tasks)."""

from __future__ import annotations

import json
import logging

import pytest

from helpers import curated_run
from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions
from warmstart.envs.base import final_assistant_text
from warmstart.errors import WarmstartError
from warmstart.runs.checkpoint import complete_checkpoints
from warmstart.stages import grpo, sft
from warmstart.types import Verdict


class EvenLength(Arithmetic):
    """Rewarded for a reply of even length, which an untrained model earns about half the time: every
    step has groups to update on."""

    reward = 1.0

    def verify(self, task, trajectory):
        passed = len(final_assistant_text(trajectory) or "") % 2 == 0
        return Verdict(reward=self.reward if passed else 0.0, passed=passed)


class HugeEvenLength(EvenLength):
    """1e38 for an even reply: unscaled advantages that large overflow the gradient (its norm infinite)."""

    reward = 1e38


RL = ["grpo.tasks_per_step=4", "grpo.group_size=4", "grpo.max_new_tokens=16", "grpo.warmup_steps=0"]


def published(run_dir, name: str) -> bool:
    return (run_dir / "models" / name).exists()


def checkpoints(run_dir, name: str) -> list[str]:
    return [p.name for p in complete_checkpoints(run_dir / "checkpoints" / name)]


def test_sft_at_lr_1e4_stops_at_step_2_and_publishes_nothing(tmp_path):
    # Before: every loss printed ~ln 300 (the output was 0 everywhere, a uniform guess) and the model was published.
    recipe = curated_run(tmp_path, "sft.lr=1e4", "sft.steps=6", "sft.checkpoint_every=2", train=40)
    with pytest.raises(
        WarmstartError, match=r"^sft: the gradient is 0 at step 2 though the loss has a signal .*sft\.lr"
    ):
        sft.run(recipe)
    assert not published(tmp_path, "student") and checkpoints(tmp_path, "student") == []
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_sft_whose_loss_climbs_far_above_a_uniform_guess_stops_and_keeps_earlier_checkpoints(tmp_path):
    recipe = curated_run(tmp_path, "sft.lr=1", "sft.steps=6", "sft.checkpoint_every=1", train=40)
    # Step 3's update took the loss to 26.9: checked before its checkpoint was saved. Before, step-3 was saved,
    # step 4's loss stopped the run, and a rerun resumed from step-3 to stop again at once.
    with pytest.raises(
        WarmstartError, match=r"^sft: the loss is [0-9.]+ after the update of step 3, above 2 ln V = 11\.41 \(V = 300"
    ):
        sft.run(recipe)
    assert not published(tmp_path, "student")
    assert checkpoints(tmp_path, "student") == ["step-1", "step-2"]  # keep_checkpoints = 2


def test_sfts_last_update_is_checked_before_it_is_saved_and_published(tmp_path):
    recipe = curated_run(tmp_path, "sft.lr=10", "sft.steps=1", "sft.warmup_steps=0", train=40)
    with pytest.raises(WarmstartError, match=r"^sft: the loss is [0-9.]+ after the update of step 1, above 2 ln V"):
        sft.run(recipe)
    assert not published(tmp_path, "student") and checkpoints(tmp_path, "student") == []


def test_grpos_update_blown_up_before_flat_steps_is_stopped_before_any_checkpoint_holds_it(tmp_path):
    # One update per batch: no later update of the batch measures it, and the blown-up policy's groups are all
    # flat (it answers one way), so no later step takes an update either: the checkpoint's check stops it.
    recipe = curated_run(
        tmp_path, *RL, "sft.steps=30", "grpo.lr=100", "grpo.updates_per_batch=1", "grpo.steps=3", train=40
    )
    sft.run(recipe)
    with pytest.raises(
        WarmstartError,
        match=r"^grpo: the sampled tokens' log-prob fell by [0-9.e+]+ per token after the update of step 1, ",
    ):  # step 1's update, not step 3's checkpoint: the steps after it took none
        grpo.run(recipe, env=EvenLength(ArithmeticOptions()))
    assert not published(tmp_path, "student-grpo") and checkpoints(tmp_path, "student-grpo") == []


def test_grpo_at_lr_1e4_stops_where_its_gradient_no_longer_reaches_the_weights(tmp_path):
    recipe = curated_run(tmp_path, *RL, "sft.steps=30", "grpo.lr=1e4", "grpo.steps=3", train=40)
    sft.run(recipe)
    with pytest.raises(WarmstartError, match=r"^grpo: the gradient is 0 at step 2 though the loss has a signal"):
        grpo.run(recipe, env=EvenLength(ArithmeticOptions()))
    assert not published(tmp_path, "student-grpo")


def test_a_gradient_that_overflows_stops_grpo_at_its_step_not_at_the_next_checkpoint(tmp_path):
    # Before: the NaN weights of step 1 sampled flat groups (no loss to check) until step 3's checkpoint.
    settings = [*RL, "sft.steps=30", "grpo.scale_by_std=false", "grpo.updates_per_batch=1", "grpo.steps=3"]
    recipe = curated_run(tmp_path, *settings, "grpo.checkpoint_every=10", train=40)
    sft.run(recipe)
    with pytest.raises(WarmstartError, match=r"^grpo: the gradient norm is (inf|nan) at step 1: training diverged"):
        grpo.run(recipe, env=HugeEvenLength(ArithmeticOptions()))
    assert not published(tmp_path, "student-grpo")


def test_a_healthy_grpo_run_from_a_fresh_model_is_no_alarm(tmp_path):
    recipe = curated_run(tmp_path, *RL, "sft.steps=1", "grpo.init=base", "grpo.lr=1e-2", "grpo.steps=3", train=40)
    sft.run(recipe)
    grpo.run(recipe, env=EvenLength(ArithmeticOptions()))
    assert published(tmp_path, "student-grpo")


def test_data_smaller_than_a_step_is_said_once_for_sft_and_grpo(tmp_path, caplog):
    recipe = curated_run(
        tmp_path, "sft.steps=2", "sft.rows_per_micro_batch=8", *RL, "grpo.steps=2", "grpo.tasks_per_step=8", train=3
    )
    with caplog.at_level(logging.WARNING):
        sft.run(recipe)
        grpo.run(recipe, env=EvenLength(ArithmeticOptions()))
    said = [r.getMessage() for r in caplog.records if "rows a step takes" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("sft:student: 3 examples pack into ")
    assert "fewer than the 8 rows a step takes (sft.rows_per_micro_batch x sft.grad_accum)" in said[0]
    said = [r.getMessage() for r in caplog.records if "grpo.tasks_per_step" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("grpo:student-grpo: 3 train tasks, fewer than grpo.tasks_per_step = 8")
