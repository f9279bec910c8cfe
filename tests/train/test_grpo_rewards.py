"""A reward that is not a finite number, from an environment passed in from Python, carries no signal."""

from __future__ import annotations

import pytest

from warmstart.config import GrpoConfig
from warmstart.train.grpo import score
from warmstart.types import Verdict


@pytest.mark.parametrize("reward", [float("nan"), float("inf"), float("-inf")])
def test_a_reward_that_is_not_finite_is_masked_as_an_infra_error(reward):
    # A plugin's such verdict is an infra error already (envs/plugins.py); one from an environment object
    # given to grpo.run used to reach the advantages and stop the run with a NaN loss blamed on grpo.lr.
    assert score(None, Verdict(reward=reward, passed=True), GrpoConfig()) == (0.0, False)


def test_a_finite_reward_outside_zero_to_one_is_kept():
    assert score(None, Verdict(reward=-5.0, passed=False), GrpoConfig()) == (-5.0, True)
