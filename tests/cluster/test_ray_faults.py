"""What goes wrong on a cluster: a worker killed mid-run (nothing lost, nothing written twice), the
cluster-wide rate limit and dollar cap with two workers, an address where no cluster answers, and no Ray at all
without a `[ray]` section."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from ray_helpers import actor_processes, ids_and_verdicts

from fake_api import FakeAPI, Teacher
from helpers import small_recipe, write_recipe_file
from warmstart.config import load_recipe
from warmstart.errors import WarmstartError
from warmstart.runs.jsonl import read_records
from warmstart.stages import generate
from warmstart.stages.common import load_tasks, make_environment
from warmstart.stages.estimate import PILOT_TASKS
from warmstart.types import Request, Sampling, Trajectory

WARMSTART = Path(sys.executable).with_name("warmstart")  # the console script of the venv running the tests
TASKS = 200
RAY = ["ray.address='local'", "ray.workers=2"]
FAST = ["api.backoff_s=0.05", "api.timeout_s=10.0", "api.max_retries=2"]


def half_right(problem: str) -> float:
    return 0.5


def busy_rollout_workers() -> list[int]:
    return actor_processes("ray::RolloutWorker.rollout")


def piece_of_each_problem(recipe) -> dict[str, int]:
    """After the pilot, the two workers' pieces are the remaining tasks' halves, in order (one sample each):
    the piece of each problem asked once in the whole stage (a problem two tasks share names neither)."""
    problems = [task.prompt[-1].content for task in load_tasks(recipe, make_environment(recipe), "train")]
    rest, once = problems[PILOT_TASKS:], {p for p, n in Counter(problems).items() if n == 1}
    return {problem: 2 * index // len(rest) for index, problem in enumerate(rest) if problem in once}


def pieces_begun(log: list[dict], pieces: dict[str, int]) -> int:
    """How many of the pieces the server has had a request of."""
    asked = (next(m["content"] for m in reversed(e["body"]["messages"]) if m["role"] == "user") for e in log)
    return len({pieces[text] for text in asked if text in pieces})


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path, ray_cluster):
    # After the pilot's tasks, each worker holds one piece of 90 requests, 2 in flight, 30 ms each: it is
    # killed well inside it.
    with FakeAPI(teacher=Teacher(pass_rate=half_right), delay_s=0.03) as api:
        teacher = f"generate.teacher='openai:fake-model@{api.url}/v1'"
        local = generate.run(small_recipe(tmp_path / "local", teacher, *FAST, train=TASKS))
        before = len(api.log)
        recipe = small_recipe(
            tmp_path / "ray", teacher, *FAST, *RAY, "api.concurrency=2", "generate.concurrency=200", train=TASKS
        )
        pieces = piece_of_each_problem(recipe)
        outcome: dict = {}
        thread = threading.Thread(target=lambda: outcome.update(out=generate.run(recipe)), daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        # Whichever worker is killed has sent requests of its piece: both pieces have begun.
        while pieces_begun(api.log[before:], pieces) < 2 or len(busy_rollout_workers()) < 2:
            assert thread.is_alive(), "generate ended before a worker could be killed"
            assert time.monotonic() < deadline, "the workers sent no requests within 60 s"
            time.sleep(0.005)
        os.kill(busy_rollout_workers()[0], signal.SIGKILL)
        thread.join(timeout=120)
        asked = len(api.log) - before
    assert "out" in outcome, "generate did not finish after the kill"
    records = read_records(outcome["out"], Trajectory)
    assert len(records) == len({t.key for t in records}) == TASKS  # nothing lost, nothing written twice
    assert all(t.error is None for t in records)
    assert ids_and_verdicts(outcome["out"]) == ids_and_verdicts(local)
    # The killed worker's piece was asked again by its restart: the proof the kill landed mid-piece.
    assert TASKS < asked <= TASKS + (TASKS - PILOT_TASKS) // 2
    cache = (tmp_path / "ray" / "cache" / "responses.jsonl").read_bytes().splitlines()
    assert len(cache) == TASKS  # each reply cached once, by the driver


def test_the_rpm_limit_holds_for_the_cluster_not_per_worker(tmp_path, ray_cluster):
    from warmstart.cluster.fanout import RayPolicy

    # The limiter's code with a 1-s window instead of 60, to keep the test short; two workers with 8
    # requests in flight each would send 16 at once, twice the limit, if each counted alone.
    window, rpm, count = 1.0, 8, 40
    with FakeAPI() as api:
        teacher = f"generate.teacher='openai:fake-model@{api.url}/v1'"
        recipe = small_recipe(tmp_path, teacher, *FAST, *RAY, f"api.rpm={rpm}", "api.concurrency=8")
        env = make_environment(recipe)
        requests = [Request(task, 0) for task in env.tasks("train", count, 0)]
        with RayPolicy.start(recipe.generate.teacher, env, "generate.teacher", recipe, window_s=window) as policy:
            trajectories = policy.rollout(requests, Sampling(0.0, 1.0, 16), seed=0)
    assert all(t.error is None for t in trajectories) and len(api.log) == count
    arrivals = sorted(entry["t"] for entry in api.log)
    busiest = max(sum(1 for t in arrivals[i:] if t < start + window) for i, start in enumerate(arrivals))
    assert busiest == rpm  # never above the limit, and the limit is what held the workers back
    assert policy.request_tally.sent == count  # both workers' tallies, added up


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_ray_address_is_one_error_line_and_no_records(tmp_path, scheme):
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    address = f"{scheme}127.0.0.1:{free_port()}"
    recipe = write_recipe_file(tmp_path / "recipe.toml", small_recipe(tmp_path / "run", f"ray.address='{address}'"))
    done = subprocess.run([str(WARMSTART), "generate", str(recipe)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: ray.address = '{address}': nothing answers at 127.0.0.1:{address.rsplit(':', 1)[1]} (Connection refused)"
    ]
    # The CLI reaches the cluster before it writes the resolved recipe: nothing is written.
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_auto_joining_an_unreachable_ray_address_from_the_environment_is_one_error_line(tmp_path):
    """`auto` joins RAY_ADDRESS: where nothing answers there, Ray had retried for minutes."""
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    address = f"127.0.0.1:{free_port()}"
    recipe = write_recipe_file(tmp_path / "recipe.toml", small_recipe(tmp_path / "run", "ray.address='auto'"))
    env = os.environ | {"RAY_ADDRESS": address}
    done = subprocess.run(
        [str(WARMSTART), "generate", str(recipe)], capture_output=True, text=True, timeout=60, env=env
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and errors == [
        f"error: ray.address = 'auto' joins '{address}' (the RAY_ADDRESS environment variable): nothing answers at "
        f"{address} (Connection refused)"
    ]


def test_local_starts_an_instance_of_its_own_whatever_ray_address_says(tmp_path):
    """`local` is a Ray instance for this process: not RAY_ADDRESS's cluster (ray.init(None) had joined it)."""
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    recipe = write_recipe_file(tmp_path / "recipe.toml", small_recipe(tmp_path / "run", "ray.address='local'"))
    env = os.environ | {"RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    done = subprocess.run(
        [str(WARMSTART), "generate", str(recipe)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "trajectories" / "teacher.jsonl").exists()


def test_without_a_ray_section_ray_is_never_imported(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from helpers import small_recipe
        from warmstart.stages import evaluate, generate
        recipe = small_recipe({str(tmp_path / "run")!r}, "eval.policies={{ref='reference'}}", "eval.k=1")
        generate.run(recipe)
        evaluate.run(recipe)
        assert "ray" not in sys.modules, "ray was imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("address", ["nonsense", "http://10.0.0.5:6379", "10.0.0.5"])
def test_a_ray_address_that_is_no_address_is_named_as_the_recipe_loads(address):
    with pytest.raises(WarmstartError, match=r"^recipe: ray\.address: .* is not auto, local, HOST:PORT or ray://"):
        load_recipe(None, [f"ray.address='{address}'"])
    assert load_recipe(None).ray is None  # off by default
    assert load_recipe(None, ["ray.address='ray://10.0.0.5:10001'"]).ray.workers is None


def test_a_dollar_cap_holds_for_two_workers_together_and_a_higher_one_continues(tmp_path, ray_cluster):
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."fake-model"]\ninput = 1.0\noutput = 4.0\n')  # dollars per million tokens
    with FakeAPI(teacher=Teacher(verbose=True)) as api:
        teacher = f"generate.teacher='openai:fake-model@{api.url}/v1'"
        # ~$0.09 for the job (80 replies of ~50 prompt and ~270 completion tokens); the longest reply fits.
        common = [teacher, f"api.prices='{prices}'", *FAST, *RAY, "generate.samples_per_task=2"]
        common += ["generate.max_new_tokens=600"]
        cap = 0.03
        with pytest.raises(WarmstartError, match=r"budget_usd = \$0\.03"):
            generate.run(small_recipe(tmp_path / "run", *common, f"generate.budget_usd={cap}", train=40))
        first = len(api.log)
        billed = sum(b["prompt"] * 1.0 + b["completion"] * 4.0 for b in api.billed) / 1e6
        assert 10 < first < 60 and billed <= cap  # the cap of the two workers together, not of each
        generate.run(small_recipe(tmp_path / "run", *common, "generate.budget_usd=1.0", train=40))
    bodies = [json.dumps(entry["body"], sort_keys=True) for entry in api.log]
    assert len(bodies) == len(set(bodies)) == 80  # nothing asked twice
    records = read_records(tmp_path / "run" / "trajectories" / "teacher.jsonl", Trajectory)
    assert len({t.key for t in records if t.error is None}) == 80


def test_under_a_dollar_cap_a_reply_from_a_model_with_no_price_stops_every_worker_and_keeps_what_was_paid(
    tmp_path, ray_cluster
):
    """As a local stage (tests/policies/test_api_odd_bodies.py): the cap cannot be kept, so nothing more is
    sent, the stage stops in one line, and every reply paid for is written and cached. It had stopped only
    the worker that got the reply: the other went on sending its piece until the stage killed it, and what
    both had answered but one was neither written nor cached, so the rerun paid for it again."""
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."fake-model"]\ninput = 1.0\noutput = 2.0\n')
    with FakeAPI() as api:
        api.faults = ["sibling_model"]  # the first request's reply says `fake-model-mini` answered
        teacher = f"generate.teacher='openai:fake-model@{api.url}/v1'"
        # Two pieces of 10 requests, one in flight per worker.
        common = [teacher, f"api.prices='{prices}'", *FAST, *RAY, "generate.budget_usd=1.0", "api.concurrency=1"]
        recipe = small_recipe(tmp_path / "run", *common, "generate.concurrency=20", train=20)
        with pytest.raises(WarmstartError, match="'fake-model-mini' answered, and api.prices has no price for it, so "):
            generate.run(recipe)
        sent = len(api.log)
        records = read_records(tmp_path / "run" / "trajectories" / "teacher.jsonl", Trajectory)
        cache = tmp_path / "run" / "cache" / "responses.jsonl"
        cached = cache.read_bytes().splitlines() if cache.exists() else []
        cost = json.loads((tmp_path / "run" / "costs.json").read_text())["stages"]["generate:teacher"]["api"]
        prices.write_text(prices.read_text() + '[models."fake-model-mini"]\ninput = 3.0\noutput = 4.0\n')
        generate.run(recipe)
        bodies = [json.dumps(entry["body"], sort_keys=True) for entry in api.log]
    assert sent < 10  # the requests in flight when the cluster heard of it, not the other worker's piece
    assert (len(records), len(cached)) == (sent, sent) and all(t.error is None for t in records)
    assert cost["requests_sent"] == sent and cost["unknown_price_models"] == ["fake-model-mini"]
    assert len(bodies) == len(set(bodies)) == 20  # the rerun paid for nothing twice


def test_a_ray_section_without_ray_installed_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an import finds where the package is absent
    monkeypatch.delitem(sys.modules, "warmstart.cluster.connection", raising=False)
    with pytest.raises(
        WarmstartError, match=r"^\[ray\]: Ray is not installed here \(pip install 'warmstart\[ray\]'\)$"
    ):
        generate.run(small_recipe(tmp_path / "run", "ray.address='local'"))
    assert not (tmp_path / "run" / "trajectories").exists()
