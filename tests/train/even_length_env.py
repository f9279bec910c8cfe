"""An environment for multi-process GRPO tests, named in a recipe as `even_length_env:EvenLength`
(the test puts this directory on PYTHONPATH): arithmetic tasks rewarded when the reply has an even
number of characters, which an untrained model earns about half the time, so every group has reward
variance and every step updates the policy."""

from __future__ import annotations

from warmstart.envs.arithmetic import Arithmetic
from warmstart.envs.base import final_assistant_text
from warmstart.types import Verdict


class EvenLength(Arithmetic):
    def verify(self, task, trajectory):
        passed = len(final_assistant_text(trajectory) or "") % 2 == 0
        return Verdict(reward=float(passed), passed=passed)
