"""`warmstart sft` with a failure injected into one process's third training step (FAIL_RANK), for
test_distributed_sft.py: what the other processes say and record when a peer fails first."""

from __future__ import annotations

import os
import sys

import warmstart.stages.sft as stage
from warmstart.cli import main

real_step, steps = stage.train_step, [0]


def failing_step(*args, **kwargs):
    steps[0] += 1
    if os.environ.get("RANK") == os.environ["FAIL_RANK"] and steps[0] == 3:
        raise RuntimeError(f"injected failure in process {os.environ['RANK']}")
    return real_step(*args, **kwargs)


stage.train_step = failing_step
sys.argv = ["warmstart", *sys.argv[1:]]
main()
