"""Run GRPO with a reward an untrained model can earn (used by test_grpo_stage.py as a subprocess to kill)."""

from __future__ import annotations

import logging
import sys

from warmstart.config import load_recipe
from warmstart.envs.arithmetic import Arithmetic
from warmstart.envs.base import final_assistant_text
from warmstart.stages import grpo
from warmstart.types import Verdict


class EvenLength(Arithmetic):
    """Arithmetic tasks, rewarded when the reply has an even number of characters: random replies
    earn it about half the time, so groups have reward variance and every step updates the policy."""

    def verify(self, task, trajectory):
        passed = len(final_assistant_text(trajectory) or "") % 2 == 0
        return Verdict(reward=float(passed), passed=passed)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    grpo.run(load_recipe(sys.argv[1]), env=EvenLength())
