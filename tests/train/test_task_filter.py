"""GRPO's task filter: pass-rate estimates to the pool (strictly between 0 and 1, topped up when too few),
the refresh schedule and candidate windows, and estimates sampled reproducibly from the seed."""

from __future__ import annotations

from helpers import tiny_model
from warmstart.config import GrpoConfig
from warmstart.envs.arithmetic import Arithmetic
from warmstart.envs.base import final_assistant_text
from warmstart.envs.verification import Verifier
from warmstart.lm.chat import stop_token_ids
from warmstart.train.task_filter import PassRates, candidates, estimate_pass_rates, refresh_due, select_pool
from warmstart.types import Message, Task, Verdict


def named(*ids: str) -> list[Task]:
    return [Task(id=i, env="arithmetic", prompt=[Message(role="user", content=i)], split="train") for i in ids]


def test_the_pool_is_the_tasks_passed_sometimes_in_candidate_order():
    tasks = named("never", "quarter", "always", "half", "most", "unknown")
    rates = PassRates(tasks, passed=[0, 1, 4, 2, 3, 1], verified=[4, 4, 4, 4, 4, 1], rollouts=24, sampled_tokens=0)
    pool, topped_up = select_pool(rates, at_least=2)
    assert [t.id for t in pool] == ["quarter", "half", "most"]
    assert topped_up == 0


def test_too_few_learnable_tasks_are_topped_up_nearest_half_unknown_last():
    tasks = named("unknown", "never", "always", "quarter")
    rates = PassRates(tasks, passed=[1, 0, 4, 1], verified=[1, 4, 4, 4], rollouts=13, sampled_tokens=0)
    pool, topped_up = select_pool(rates, at_least=3)
    # never and always are both 0.5 from a half: candidate order between them; an unknown rate comes last.
    assert [t.id for t in pool] == ["quarter", "never", "always"]
    assert topped_up == 2
    none_learnable = PassRates(tasks[:3], passed=[1, 0, 4], verified=[1, 4, 4], rollouts=9, sampled_tokens=0)
    assert [t.id for t in select_pool(none_learnable, at_least=2)[0]] == ["never", "always"]


def test_refreshes_every_n_steps_over_the_next_window_of_tasks():
    cfg = GrpoConfig(tasks_per_step=2, task_filter_every=3)
    assert [s for s in range(1, 11) if refresh_due(s, cfg.task_filter_every)] == [1, 4, 7, 10]
    tasks = named(*(f"t{i}" for i in range(10)))
    ids = {step: [t.id for t in candidates(tasks, step, cfg)] for step in (1, 3, 4, 7)}
    assert ids[1] == ids[3] == ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert ids[4] == ["t6", "t7", "t8", "t9", "t0", "t1"]  # cycling through the train tasks
    assert ids[7] == ["t2", "t3", "t4", "t5", "t6", "t7"]
    few = named("a", "b")
    assert [t.id for t in candidates(few, 1, cfg)] == ["a", "b"]  # never one task twice in a window


class ByAnswer(Arithmetic):
    """Answer divisible by 3: always passed; remainder 1: an infra error; else passed when the reply has
    an even number of characters (a coin flip for an untrained model)."""

    def verify(self, task, trajectory):
        kind = task.hidden["answer"] % 3
        if kind == 1:
            return Verdict(reward=0.0, passed=False, infra_error="verifier down")
        passed = kind == 0 or len(final_assistant_text(trajectory) or "") % 2 == 0
        return Verdict(reward=float(passed), passed=passed)


def test_estimates_are_sampled_in_step_sized_chunks_reproducibly_from_the_seed():
    model, tokenizer = tiny_model()
    env = ByAnswer()
    tasks = env.tasks("train", 9, seed=0)
    # A step samples 2 x 4 rollouts, so 3 samples per task make chunks of 2 tasks: 5 chunks for 9 tasks.
    cfg = GrpoConfig(tasks_per_step=2, group_size=4, task_filter_samples=3, max_new_tokens=8)
    stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    with Verifier(env) as verifier:
        runs = [estimate_pass_rates(model, tokenizer, env, tasks, cfg, stops, s, 1, verifier) for s in (7, 7, 8)]
    first = runs[0]
    assert first.rollouts == 9 * 3 and first.sampled_tokens > 0
    kinds = [t.hidden["answer"] % 3 for t in tasks]
    assert {k for k in kinds} == {0, 1, 2}, "the tasks should cover every kind"
    for kind, rate, verified in zip(kinds, first.rates, first.verified):
        assert (rate, verified) == ((1.0, 3) if kind == 0 else (None, 0) if kind == 1 else (rate, 3))
    assert runs[1] == first  # the same seed: the same samples, hence the same estimates and cost
    assert runs[2].passed != first.passed  # another seed samples other answers
