"""`generate` with `[ray]` on a local Ray cluster the test starts: the same records as a local run, with
the reference teacher and with a loopback `openai:` teacher, written by the driver alone."""

from __future__ import annotations

import json

from ray_helpers import comparable, ids_and_verdicts

from fake_api import FakeAPI, Teacher
from helpers import small_recipe
from warmstart.runs.jsonl import read_records
from warmstart.stages import evaluate, generate
from warmstart.types import Trajectory

TASKS = 200
RAY = ["ray.address='local'", "ray.workers=2"]
FAST = ["api.backoff_s=0.05", "api.timeout_s=10.0", "api.max_retries=2"]


def half_right(problem: str) -> float:
    return 0.5


def test_reference_teacher_on_ray_writes_the_records_of_a_local_run(tmp_path, ray_cluster):
    local = generate.run(small_recipe(tmp_path / "local", train=TASKS))
    # Two verification actors as well, though arithmetic verifies in-process locally: the actors' path.
    distributed = generate.run(small_recipe(tmp_path / "ray", *RAY, "ray.verify_workers=2", train=TASKS))
    assert len(comparable(distributed)) == TASKS
    assert comparable(distributed) == comparable(local)


def test_openai_teacher_on_ray_gives_the_ids_and_verdicts_of_a_local_run(tmp_path, ray_cluster):
    with FakeAPI(teacher=Teacher(pass_rate=half_right)) as api:
        teacher = f"generate.teacher='openai:fake-model@{api.url}/v1'"
        local = generate.run(small_recipe(tmp_path / "local", teacher, *FAST, train=TASKS))
        recipe = small_recipe(tmp_path / "ray", teacher, *FAST, *RAY, train=TASKS)
        distributed = generate.run(recipe)
        asked = len(api.log)
        rerun = generate.run(
            small_recipe(tmp_path / "ray", teacher, *FAST, *RAY, "generate.output='again'", train=TASKS)
        )
        assert len(api.log) == asked  # the rerun's replies all came from the cache the driver wrote
    assert asked == 2 * TASKS
    records = ids_and_verdicts(distributed)
    assert len(records) == TASKS and records == ids_and_verdicts(local)
    assert 0.3 < sum(json.loads(v)["passed"] for _, _, v in records) / TASKS < 0.7  # verdicts of both kinds
    cache = (tmp_path / "ray" / "cache" / "responses.jsonl").read_bytes().splitlines()
    assert len(cache) == TASKS  # one line per reply, written by the driver
    assert ids_and_verdicts(rerun) == records
    assert all(all(u.from_cache for u in t.usage) for t in read_records(rerun, Trajectory))
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    cost = manifest["stages"]["generate:teacher"]["api_cost"]
    assert cost["requests"] == TASKS and cost["requests_sent"] == TASKS  # the workers' tallies, added up


def test_eval_on_ray_scores_and_keeps_the_samples_of_a_local_eval(tmp_path, ray_cluster):
    with FakeAPI(teacher=Teacher(pass_rate=half_right)) as api:
        policies = f"eval.policies={{api='openai:fake-model@{api.url}/v1'}}"
        local = evaluate.run(small_recipe(tmp_path / "local", policies, *FAST, "eval.k=2", eval_=50))
        distributed = evaluate.run(small_recipe(tmp_path / "ray", policies, *FAST, *RAY, "eval.k=2", eval_=50))
    scores = [json.loads(path.read_text())["policies"]["api"] for path in (local, distributed)]
    for row in scores:
        del row["seconds"]
    assert scores[0] == scores[1] and 0.2 < scores[0]["pass@1"] < 0.8
    samples = [comparable(path.parent / "api.jsonl") for path in (local, distributed)]
    assert len(samples[1]) == 100 and samples[0] == samples[1]
