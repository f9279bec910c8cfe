"""Plugin environments (envs/plugins.py) for the Ray verification tests: say the task's number. They verify in
workers (verify_workers = 2), so with `[ray]` their verification runs on actors; the Ray workers import this
module (tests/cluster/conftest.py puts its directory on their PYTHONPATH), so it imports nothing heavy."""

from __future__ import annotations

import os
import time

from warmstart.errors import WarmstartError
from warmstart.types import Message, Provenance, Task, Trajectory, Verdict


class Numbers:
    """Each verdict names the process that gave it (`details["pid"]`): which actor verified what."""

    name = "numbers"
    verify_workers = 2

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        first = 1000 if split == "eval" else 0  # disjoint splits
        return [
            Task(
                id=f"numbers/{i}",
                env=self.name,
                prompt=[Message(role="user", content=f"Say {i}.")],
                hidden={"n": i},
                split=split,
            )
            for i in range(first, first + n)
        ]

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        passed = trajectory.messages[-1].content == str(task.hidden["n"])
        return Verdict(reward=float(passed), passed=passed, details={"pid": os.getpid()})

    def reference(self, task: Task, rng) -> Trajectory:
        answer = Message(role="assistant", content=str(task.hidden["n"]))
        provenance = Provenance(provider="reference", model="numbers", created=time.time())
        return Trajectory(task_id=task.id, policy="reference", messages=[*task.prompt, answer], provenance=provenance)

    def step(self, task, call, messages) -> str:
        raise ValueError("numbers has no tools")


class HangsOnTwo(Numbers):
    """Its verification of task 2 never returns (a request to a server that never answers)."""

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        if task.hidden["n"] == 2:
            time.sleep(3600)
        return super().verify(task, trajectory)


class HangsOnOneStopsOnThree(Numbers):
    """Task 1's verification never returns; task 3's says the user must fix something, which stops the stage."""

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        if task.hidden["n"] == 1:
            time.sleep(3600)
        if task.hidden["n"] == 3:
            raise WarmstartError("numbers: the checker's server is not configured")
        return super().verify(task, trajectory)


class SlowToLoadHangsOnZero(Numbers):
    """An actor takes 3 s to hold it (its modules' imports), task 0's verification never returns and every
    other takes 1.5 s: while the driver waits for the replacement of the actor stuck on 0, the others answer."""

    def __init__(self) -> None:
        self.loads_in_s = 3.0  # a state to unpickle: without one, pickle would not call __setstate__

    def __setstate__(self, state: dict) -> None:
        time.sleep(state["loads_in_s"])
        self.__dict__.update(state)

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        if task.hidden["n"] == 0:
            time.sleep(3600)
        time.sleep(1.5)
        return super().verify(task, trajectory)
