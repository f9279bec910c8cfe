"""eval: infra errors are left out of pass@k and counted, never scored 0."""

from __future__ import annotations

import pytest

from helpers import small_recipe
from warmstart.config import PolicySpec
from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions
from warmstart.errors import WarmstartError
from warmstart.runs.costs import CostLedger
from warmstart.stages.evaluate import evaluate_policy
from warmstart.types import Verdict


class FlakyVerifier(Arithmetic):
    """Its verifier 'crashes' on chosen sample indices, as a sandbox or judge can."""

    def __init__(self, broken: set[int]):
        super().__init__(ArithmeticOptions(teacher_error_rate=0.0))
        self.broken = broken

    def verify(self, task, trajectory):
        if trajectory.sample_index in self.broken:
            return Verdict(reward=0.0, passed=False, infra_error="verifier crashed")
        return super().verify(task, trajectory)


def test_infra_errors_are_left_out_of_pass_at_k(tmp_path):
    recipe = small_recipe(tmp_path, "eval.k=2")
    env = FlakyVerifier(broken={0})
    tasks = env.tasks("eval", 10, 0)
    row = evaluate_policy("teacher", PolicySpec.parse("reference"), recipe, env, tasks, CostLedger({}, False))
    # The flawless reference passes every judged sample: scoring the crashes 0 would give 0.5.
    assert row["pass@1"] == 1.0
    assert row["infra_errors"] == 10
    assert row["pass@2"] is None  # no task kept two judged samples


def test_a_policy_whose_every_sample_crashed_the_verifier_is_an_error(tmp_path):
    recipe = small_recipe(tmp_path, "eval.k=2")
    env = FlakyVerifier(broken={0, 1})
    with pytest.raises(WarmstartError, match="infra error"):
        evaluate_policy(
            "teacher", PolicySpec.parse("reference"), recipe, env, env.tasks("eval", 5, 0), CostLedger({}, False)
        )
