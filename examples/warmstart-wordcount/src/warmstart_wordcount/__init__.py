"""`wordcount`: how many words are in a short phrase? A complete warmstart environment in one file."""

from __future__ import annotations

import hashlib
import random
import re
import time

from pydantic import BaseModel, ConfigDict, Field

from warmstart.types import Message, Provenance, Task, Trajectory, Verdict

WORDS = "apple river stone cloud green quick seven lamp north paper violin tiger salt window brave".split()
ANSWER = re.compile(r"Answer:\s*([0-9]{1,6})\s*$", re.MULTILINE)


class WordCount:
    name = "wordcount"  # Task.env of every task it makes
    tools: tuple[dict, ...] = ()  # single turn: no tool calls, so `step` is never called
    verify_workers = 1  # verification is a regex: verified in the stage's own process

    class Options(BaseModel):  # `env.options`, checked by warmstart and passed to __init__
        model_config = ConfigDict(extra="forbid")
        min_words: int = Field(2, ge=1)
        max_words: int = Field(8, ge=1)

    def __init__(self, options: Options):
        self.options = options

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        rng, phrases = random.Random(f"wordcount-{seed}"), set()
        for _ in range(1000 * n):  # a phrase's split is a hash of the phrase: train and eval never share one
            length = rng.randint(self.options.min_words, self.options.max_words)
            phrase = " ".join(rng.choice(WORDS) for _ in range(length))
            in_eval = hashlib.sha256(phrase.encode()).digest()[0] % 8 == 0  # one phrase in eight
            if in_eval == (split == "eval"):
                phrases.add(phrase)
            if len(phrases) == n:
                return [self.task(phrase, split) for phrase in sorted(phrases)]
        raise ValueError(f"wordcount: only {len(phrases)} distinct {split} phrases found, {n} asked")

    def task(self, phrase: str, split: str) -> Task:
        prompt = f"How many words are in \"{phrase}\"? End with 'Answer: <integer>'."
        return Task(
            id=f"wordcount/{phrase.replace(' ', '-')}",
            env=self.name,
            split=split,
            prompt=[Message(role="user", content=prompt)],
            hidden={"count": len(phrase.split())},
        )

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        # A wrong or missing answer is passed=False with a reason; never raise for a bad answer.
        reply = next((m.content or "" for m in reversed(trajectory.messages) if m.role == "assistant"), "")
        answers = ANSWER.findall(reply)
        if not answers:
            return Verdict(reward=0.0, passed=False, details={"reason": "no 'Answer: <integer>' line"})
        passed = int(answers[-1]) == task.hidden["count"]
        return Verdict(reward=float(passed), passed=passed, details={"answer": int(answers[-1])})

    def reference(self, task: Task, rng: random.Random) -> Trajectory:
        # The environment's own solver: the teacher of `generate.teacher = "reference"`.
        words = task.prompt[0].content.split('"')[1].split()
        counting = "\n".join(f"{i} {word}" for i, word in enumerate(words, 1))
        answer = Message(role="assistant", reasoning=counting, content=f"Answer: {len(words)}")
        provenance = Provenance(provider="reference", model="wordcount-counter", created=time.time())
        return Trajectory(task_id=task.id, policy="reference", messages=[*task.prompt, answer], provenance=provenance)

    def step(self, task, call, messages) -> str:
        raise ValueError("wordcount has no tools")  # never called: `tools` is empty
