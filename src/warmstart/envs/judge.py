"""LLM-judge rewards: a rubric judged by any policy (e.g. the teacher behind an API).

`[env.judge]` in the recipe wraps the environment (`Judged`): every verification also asks the judge,
which reads the task, the rubric and the final answer and must end with `VERDICT: PASS` or
`VERDICT: FAIL`. A reply without that line, or a judge request that failed, is an infra error (masked
and counted by GRPO and eval), never a 0.

    use = "compare"  the environment's verifier decides; the judge's opinion rides along in the
                     verdict's details (its failure too: `judge_error`, not masked, since the verifier
                     decided), and eval reports judge-verifier agreement and the judge's failures
    use = "reward"   the judge decides (rubric tasks); the verifier's opinion rides along instead

A judge that answers without a verdict line is asked once more with a fresh sample before it counts
as an infra error. Judgements go through the judge policy's response cache like any request, so a
rerun pays nothing (and gets the same judgements). Judging is one request per verification, in
order (not batched across a stage's trajectories).

An API judge's requests cost money: a stage bills them beside its own (`made_policy`, then the policy's
`paid` hook: stages/common.py `bill_judge`) and, under a dollar cap, the judge's policy is given the stage's
guard (generate).
"""

from __future__ import annotations

import re

from ..types import Message, Request, Sampling, Task, ToolCall, Trajectory, Verdict
from .base import final_assistant_text

VERDICT_RE = re.compile(r"^\s*VERDICT:\s*(PASS|FAIL)\s*\.?\s*$", re.MULTILINE | re.IGNORECASE)
JUDGE_SYSTEM = (
    "You are a strict grader. Read the task, the rubric and the candidate's final answer. Give your "
    "reasons in at most three sentences, then end with one line that is exactly `VERDICT: PASS` or "
    "`VERDICT: FAIL`."
)


class NoTools:
    """The judge's own environment: it answers in one turn and is offered no tools."""

    name = "judge"
    tools: tuple[dict, ...] = ()

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        raise ValueError("the judge has no tools")


def judge_task(task: Task, trajectory: Trajectory, rubric: str) -> Task:
    prompt_text = "\n".join(m.content or "" for m in task.prompt if m.role in ("system", "user"))
    answer = final_assistant_text(trajectory) or "(no answer)"
    user = f"Task:\n{prompt_text}\n\nRubric:\n{rubric}\n\nCandidate's final answer:\n{answer}"
    return Task(
        id=f"judge/{task.id}",
        env="judge",
        prompt=[Message(role="system", content=JUDGE_SYSTEM), Message(role="user", content=user)],
        split=task.split,
    )


def parse_judgement(text: str | None) -> bool | None:
    matches = VERDICT_RE.findall(text or "")
    return matches[-1].upper() == "PASS" if matches else None


class RubricJudge:
    def __init__(self, make_policy, rubric: str, max_new_tokens: int = 512):
        self.make_policy, self.rubric, self.max_new_tokens = make_policy, rubric, max_new_tokens
        self.policy = None  # made on first use: a stage that never verifies never contacts the judge

    def made_policy(self):
        """The judge's policy, made now where it was not yet: a stage that bills the judge's requests or caps
        their dollars sets it up before the first verification."""
        if self.policy is None:
            self.policy = self.make_policy()
        return self.policy

    def judge(self, task: Task, trajectory: Trajectory, attempts: int = 2) -> Verdict:
        self.made_policy()
        prompt = judge_task(task, trajectory, self.rubric)
        for attempt in range(attempts):  # a fresh sample index is a fresh request, not a cache hit
            request = Request(prompt, trajectory.sample_index + attempt * 1_000_000)
            sampling = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=self.max_new_tokens)
            [reply] = self.policy.rollout([request], sampling, seed=0)
            if reply.error is not None:
                return Verdict(reward=0.0, passed=False, infra_error=f"judge request failed: {reply.error}")
            passed = parse_judgement(final_assistant_text(reply))
            if passed is not None:
                return Verdict(reward=float(passed), passed=passed, details={"judge": final_assistant_text(reply)})
        return Verdict(reward=0.0, passed=False, infra_error="the judge's reply has no VERDICT: PASS / FAIL line")


class Judged:
    """An environment whose verification also (or instead) asks a judge. Everything else is the inner one's."""

    def __init__(self, env, judge: RubricJudge, use: str):
        self.env, self.judge, self.use = env, judge, use
        self.name, self.tools = env.name, env.tools
        self.verify_workers = 1  # judge requests share one client and its rate limits

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        return self.env.tasks(split, n, seed)

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        return self.env.step(task, call, messages)

    def reference(self, task: Task, rng) -> Trajectory:
        return self.env.reference(task, rng)

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        verifier = self.env.verify(task, trajectory)
        judged = self.judge.judge(task, trajectory)
        opinions = {
            "verifier_passed": verifier.passed if verifier.infra_error is None else None,
            "judge_passed": judged.passed if judged.infra_error is None else None,
        }
        if self.use == "compare" and judged.infra_error is not None:
            opinions["judge_error"] = judged.infra_error  # counted by eval (metrics/tally.py Agreement)
        decider = judged if self.use == "reward" else verifier
        return decider.model_copy(update={"details": {**decider.details, **opinions}})
