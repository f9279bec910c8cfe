"""Which samples `generate` asks the teacher for, round by round: the budget-aware part of the stage.

Plain mode (no `stop_after_verified`, not `adaptive`): `samples_per_task` samples of every task, all in
one round, whatever they score. Budget-aware modes ask in rounds and stop asking for a task once more
samples cannot teach anything new:

- `stop_after_verified = k`: a task is done once k of its samples passed verification;
- `adaptive`: after its first `samples_per_task` samples (the probe), a task the teacher passed every
  time or failed every time gets no more; one it sometimes fails is asked again (its verified chains are
  the ones a student lacks, and the rate is uncertain);
- either way, at most `max_samples_per_task` samples (default `samples_per_task`).

Every round asks each open task only for samples no outcome could make unnecessary: the rest of the
probe (and only that, whatever k asks), or the passes still missing toward k, else one more; so no request is spent on a task already decided. A sample that ended in an error says nothing about the task: it is asked
again by a rerun (as in plain mode) and counts toward neither passes nor failures, unless the task's other
samples decided it (k passed, or its probe always passed or never did): then no rerun asks it again, and
its error is moot (`open_errors`), neither an error the stage must mend nor one of its error rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import GenerateConfig
from ..types import Request, Task, Trajectory


def open_errors(cfg: GenerateConfig, tasks: list[Task], records: list[Trajectory]) -> list[Trajectory]:
    """The records (latest attempts) that ended in an error a rerun would ask again: not those of tasks their
    other samples decided in a budget-aware mode. Counted, those had failed the stage on every rerun, none
    of which asks them (module docstring)."""
    rerun = SamplingPlan(cfg, tasks, records)
    return [t for t in records if t.error is not None and (rerun.plain or rerun.asks_again(t.task_id))]


@dataclass
class TaskRecord:
    """What is known of one task's samples: indexes asked, and how the verified ones came out."""

    asked: set[int] = field(default_factory=set)
    passed: int = 0
    failed: int = 0


class SamplingPlan:
    def __init__(self, cfg: GenerateConfig, tasks: list[Task], earlier: list[Trajectory]):
        self.cfg, self.tasks = cfg, tasks
        self.most = cfg.max_samples_per_task or cfg.samples_per_task
        self.records = {t.id: TaskRecord() for t in tasks}
        for trajectory in earlier:  # the latest attempt of each sample (an errored one is asked again)
            if trajectory.task_id in self.records and trajectory.error is None:
                self.record(trajectory)

    @property
    def plain(self) -> bool:
        return self.cfg.stop_after_verified is None and not self.cfg.adaptive

    def record(self, trajectory: Trajectory) -> None:
        """Enter a sample's outcome. One that ended in an error is not an outcome, but its index stays asked
        for the rest of this run (a teacher that keeps failing is not asked in a loop); a rerun asks it again."""
        entry = self.records[trajectory.task_id]
        entry.asked.add(trajectory.sample_index)
        if trajectory.error is not None:
            return
        if trajectory.verdict is not None and trajectory.verdict.passed:
            entry.passed += 1
        else:
            entry.failed += 1

    def next_round(self) -> list[Request]:
        """The samples to ask next (empty: every task is decided). Indexes are the lowest not yet answered,
        so a rerun asks exactly what an uninterrupted run would have."""
        requests = []
        for task in self.tasks:
            entry = self.records[task.id]
            wanted = self.wanted(entry)
            free = (i for i in range(self.most) if i not in entry.asked)
            requests += [Request(task, next(free)) for _ in range(wanted)]
        return requests

    def wanted(self, entry: TaskRecord) -> int:
        """How many more samples of a task to ask in this round."""
        answered = entry.passed + entry.failed
        room = self.most - len(entry.asked)
        if room <= 0:
            return 0
        if self.plain:
            return room
        k = self.cfg.stop_after_verified
        if k is not None and entry.passed >= k:
            return 0
        if self.cfg.adaptive:
            probe = self.cfg.samples_per_task
            if answered < probe:  # the rest of the probe, no more: its outcome decides whether the task goes on
                return min(room, probe - answered)
            if entry.passed == 0 or entry.failed == 0:
                return 0  # always passed or never passed in its probe: more samples would repeat that
        # the passes still missing toward k (each needs a sample), else one more
        missing_passes = k - entry.passed if k is not None else 0
        return min(room, max(missing_passes, 1))

    def asks_again(self, task_id: str) -> bool:
        """Whether a rerun would ask anything more of the task (an errored sample of it, among others)."""
        entry = self.records.get(task_id)
        return entry is None or self.wanted(entry) > 0

    def summary(self) -> dict:
        """Samples asked per task and where tasks ended: for the stage's log and manifest."""
        asked = [len(r.asked) for r in self.records.values()]
        return {
            "tasks": len(asked),
            "samples": sum(asked),
            "tasks_verified": sum(r.passed > 0 for r in self.records.values()),
            "verified_samples": sum(r.passed for r in self.records.values()),
            "most_samples_of_a_task": max(asked, default=0),
        }
