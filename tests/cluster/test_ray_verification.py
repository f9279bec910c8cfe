"""Verification actors bounded by `env.verify_timeout` as the local pool's workers are (tests/envs/
test_verification.py): a `verify` that never returns is an infra error for its pair, its actor killed and
replaced, the rest verified and the stage finished; Ctrl-C or a stage's error stops an actor stuck on one
within seconds. The plugin environments are in stuck_envs.py, which the Ray workers import."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from ray_helpers import actor_processes_when_settled

from helpers import small_recipe
from warmstart.config import load_recipe
from warmstart.envs import make_env
from warmstart.errors import WarmstartError
from warmstart.runs.jsonl import read_records
from warmstart.stages import generate
from warmstart.types import Message, Provenance, Task, Trajectory

ACTORS = "ray::VerifyWorker"  # the title of a verification actor's process
RAY = ["ray.address='local'", "ray.workers=2"]  # the environments' verify_workers = 2: two verification actors


def stuck_verdict(seconds: str) -> str:
    return f"numbers.verify did not return within {seconds} s (env.verify_timeout); its worker process was stopped"


def plugin(name: str):
    return make_env(load_recipe(None, [f"env.name='stuck_envs:{name}'"]).env)


def right_answers(tasks: list[Task]) -> list[tuple[Task, Trajectory]]:
    provenance = Provenance(provider="test", model="m", created=0.0)
    return [
        (
            task,
            Trajectory(
                task_id=task.id,
                policy="test",
                messages=[*task.prompt, Message(role="assistant", content=str(task.hidden["n"]))],
                provenance=provenance,
            ),
        )
        for task in tasks
    ]


def start_verifier(env, timeout: float):
    from warmstart.cluster.verifiers import RayVerifier  # Ray's modules after the cluster fixture's importorskip

    return RayVerifier.start(env, count=2, max_restarts=3, timeout=timeout)


def test_a_verification_past_the_timeout_is_an_infra_error_and_its_actor_is_replaced(ray_cluster):
    env = plugin("HangsOnTwo")
    pairs = right_answers(env.tasks("train", 10, 0))
    with start_verifier(env, timeout=2.0) as verifier:
        first = {v.details["pid"] for v in verifier.verify_all(pairs[:2])}  # one pair per actor: both up
        started = time.monotonic()
        # Five chunks of two: one actor takes [2, 3] and is stuck on 2; [3] goes to its replacement.
        verdicts = verifier.verify_all(pairs)
        took = time.monotonic() - started
        other, fresh = verdicts[0].details["pid"], verdicts[3].details["pid"]
        living = actor_processes_when_settled(ACTORS, {other, fresh})
    assert [v.infra_error for v in verdicts] == [None, None, stuck_verdict("2"), *[None] * 7]
    assert [v.passed for v in verdicts] == [True, True, False, *[True] * 7]
    assert len(first) == 2 and other in first and fresh not in first
    assert living == {other, fresh}  # the stuck actor is gone, its replacement took the rest of its chunk
    assert 2.0 <= took < 60
    assert actor_processes_when_settled(ACTORS, set()) == set()  # the with-block stopped the actors


def test_answers_that_came_while_a_replacement_started_are_kept(ray_cluster):
    """Three actors: the one stuck on pair 0 is replaced, which holds the driver up for the 3 s a fresh actor
    takes to load the environment; the other two each answer a pair meanwhile (1.5 s each). Both answers are
    verdicts, not timeouts: only pair 0 is an infra error."""
    from warmstart.cluster.verifiers import RayVerifier

    env = plugin("SlowToLoadHangsOnZero")
    pairs = right_answers(env.tasks("train", 6, 0))
    with RayVerifier.start(env, count=3, max_restarts=0, timeout=2.0) as verifier:
        verdicts = verifier.verify_all(pairs)
    assert [v.infra_error for v in verdicts] == [stuck_verdict("2"), *[None] * 5]
    assert [v.passed for v in verdicts] == [False, *[True] * 5]


def test_ctrl_c_during_a_verification_that_never_returns_stops_the_actors_within_seconds(ray_cluster, ctrl_c_raises):
    """A stopping stage waits STOP_GRACE_S for a busy actor, as locally, not the bound (600 s here)."""
    env = plugin("HangsOnTwo")
    pairs = right_answers(env.tasks("train", 4, 0))
    with pytest.raises(KeyboardInterrupt):
        with start_verifier(env, timeout=600.0) as verifier:
            verifier.verify_all(pairs[:2])  # both actors up
            started = time.monotonic()
            threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            verifier.verify_all(pairs)
    assert time.monotonic() - started < 20
    assert actor_processes_when_settled(ACTORS, set()) == set()


def generate_within(recipe, seconds: float) -> dict:
    """`generate.run(recipe)` in a thread, waited for `seconds`: {"out": its output} or {"error": what it
    raised}, empty if it had not ended (a verification that is never bounded hangs the stage, and the test
    must fail, not hang)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["out"] = generate.run(recipe)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    return outcome


def test_generate_on_ray_goes_on_past_a_verify_that_never_returns(tmp_path, ray_cluster):
    recipe = small_recipe(
        tmp_path / "run", "env.name='stuck_envs:HangsOnTwo'", "env.verify_timeout=2", *RAY, train=8, eval_=2
    )
    outcome = generate_within(recipe, 120)
    assert "out" in outcome, f"generate did not finish within 120 s: {outcome}"
    records = read_records(outcome["out"], Trajectory)
    assert [r.task_id for r in records] == [f"numbers/{n}" for n in range(8)]
    assert [r.verdict.infra_error for r in records] == [None, None, stuck_verdict("2"), *[None] * 5]
    assert actor_processes_when_settled(ACTORS, set()) == set()


def test_a_stage_error_stops_an_actor_stuck_on_a_verification_within_seconds(tmp_path, ray_cluster):
    """Task 1's verification never returns (a bound of 600 s); task 3's stops the stage. The stuck actor is
    killed after STOP_GRACE_S, not left to the bound (the stage had waited for task 1's verdict forever)."""
    recipe = small_recipe(
        tmp_path / "run", "env.name='stuck_envs:HangsOnOneStopsOnThree'", "env.verify_timeout=600", *RAY, train=8
    )
    started = time.monotonic()
    outcome = generate_within(recipe, 120)
    assert "error" in outcome, f"generate did not stop within 120 s: {outcome}"
    assert isinstance(outcome["error"], WarmstartError)
    assert str(outcome["error"]) == "numbers: the checker's server is not configured"
    assert time.monotonic() - started < 25
    assert actor_processes_when_settled(ACTORS, set()) == set()
