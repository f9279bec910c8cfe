"""eval: infra errors are left out of pass@k and counted, never scored 0."""

from __future__ import annotations

import json

import pytest

from fake_api import FakeAPI
from helpers import small_recipe
from warmstart.config import PolicySpec
from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions
from warmstart.errors import WarmstartError
from warmstart.metrics.tally import unscored
from warmstart.runs.costs import CostLedger
from warmstart.runs.directory import model_files
from warmstart.stages import evaluate
from warmstart.stages.evaluate import evaluate_policy
from warmstart.types import Verdict


class FlakyVerifier(Arithmetic):
    """Its verifier 'crashes' on chosen sample indices, as a sandbox or judge can."""

    def __init__(self, broken: set[int]):
        super().__init__(ArithmeticOptions(teacher_error_rate=0.0))
        self.broken = broken

    def verify(self, task, trajectory):
        if trajectory.sample_index in self.broken:
            return Verdict(reward=0.0, passed=False, infra_error="verifier crashed")
        return super().verify(task, trajectory)


def test_infra_errors_are_left_out_of_pass_at_k(tmp_path):
    recipe = small_recipe(tmp_path, "eval.k=2", "eval.max_error_rate=0.5")
    env = FlakyVerifier(broken={0})
    tasks = env.tasks("eval", 10, 0)
    row = evaluate_policy("teacher", PolicySpec.parse("reference"), recipe, env, tasks, CostLedger({}, False))
    # The flawless reference passes every judged sample: scoring the crashes 0 would give 0.5.
    assert row["pass@1"] == 1.0
    assert row["infra_errors"] == 10
    assert row["pass@2"] is None  # no task kept two judged samples


def test_infra_errors_past_the_error_rate_stop_eval(tmp_path):
    """Left out, every sample its verifier could not judge would leave the row scored on the rest: another
    test than the other rows' (a verifier that crashes on wrong answers makes any policy look right)."""
    recipe = small_recipe(tmp_path, "eval.k=2", "eval.max_error_rate=0.4")
    env = FlakyVerifier(broken={0})
    message = r"eval.policies.teacher: 10 of 20 samples could not be verified, more than eval.max_error_rate = 0.4"
    with pytest.raises(WarmstartError, match=message + r" \(first: verifier crashed\)"):
        evaluate_policy(
            "teacher", PolicySpec.parse("reference"), recipe, env, env.tasks("eval", 10, 0), CostLedger({}, False)
        )


def test_a_policy_whose_every_sample_crashed_the_verifier_is_an_error(tmp_path):
    recipe = small_recipe(tmp_path, "eval.k=2", "eval.max_error_rate=1")
    env = FlakyVerifier(broken={0, 1})
    with pytest.raises(WarmstartError, match="infra error"):
        evaluate_policy(
            "teacher", PolicySpec.parse("reference"), recipe, env, env.tasks("eval", 5, 0), CostLedger({}, False)
        )


def test_eval_reports_intervals_paired_differences_and_keeps_every_sample_with_its_verdict(tmp_path):
    from warmstart.runs.jsonl import read_records
    from warmstart.types import Trajectory

    recipe = small_recipe(
        tmp_path,
        "eval.k=2",
        "eval.policies.base='reference'",  # a "base" row: every other row is compared with it
        "eval.policies.teacher='reference'",
        "eval.compare=[['teacher', 'base']]",
        "env.options.teacher_error_rate=0.5",
        eval_=40,
    )
    summary = json.loads(evaluate.run(recipe).read_text())
    teacher = summary["policies"]["teacher"]
    low, high = teacher["pass@1_ci"]
    assert low <= teacher["pass@1"] <= high and high - low > 0.05  # slips half the time: real uncertainty
    assert sorted(teacher["per_task"]) == sorted(t.id for t in Arithmetic().tasks("eval", 40, 0))
    assert sum(c for _, c in teacher["per_task"].values()) / 80 == pytest.approx(teacher["pass@1"])
    [versus_base] = summary["comparisons"]  # "teacher - base" once, though asked for twice
    assert (versus_base["a"], versus_base["b"]) == ("teacher", "base")
    assert versus_base["diff"] == pytest.approx(0.0, abs=0.01) and versus_base["within_noise"]
    samples = read_records(tmp_path / "eval" / "teacher.jsonl", Trajectory)
    assert len(samples) == 80 and all(s.verdict is not None for s in samples)
    assert sum(s.verdict.passed for s in samples) == sum(c for _, c in teacher["per_task"].values())


class CrashesOnSecondFailures(Arithmetic):
    """A teacher that slips half the time, whose verifier crashes on the second sample whenever it fails:
    the tasks left with both samples judged are the easy ones."""

    def __init__(self):
        super().__init__(ArithmeticOptions(teacher_error_rate=0.5))

    def verify(self, task, trajectory):
        verdict = super().verify(task, trajectory)
        if trajectory.sample_index == 1 and not verdict.passed:
            return Verdict(reward=0.0, passed=False, infra_error="verifier crashed")
        return verdict


def test_pass_at_k_over_fewer_tasks_than_pass_at_1_says_over_how_many(tmp_path):
    recipe = small_recipe(tmp_path, "eval.k=2", "eval.max_error_rate=0.5")
    env = CrashesOnSecondFailures()
    row = evaluate_policy(
        "teacher", PolicySpec.parse("reference"), recipe, env, env.tasks("eval", 40, 0), CostLedger({}, False)
    )
    kept_two = sum(1 for n, _ in row["per_task"].values() if n == 2)
    assert row["tasks_scored"] == 40 and 0 < kept_two < 40
    assert row["tasks_scored_k"] == kept_two  # pass@2 is over these only (1.0 here, a biased share)
    assert unscored(row) == f"{row['infra_errors']} infra errors; pass@2 over {kept_two} of 40 tasks"


def test_a_comparison_of_a_row_with_itself_is_refused(tmp_path):
    recipe = small_recipe(tmp_path, "eval.policies.teacher='reference'", "eval.compare=[['teacher', 'teacher']]")
    with pytest.raises(WarmstartError, match=r"eval.compare: \['teacher', 'teacher'\] compares a row with itself"):
        evaluate.run(recipe)


def test_a_comparison_of_a_policy_eval_does_not_have_is_refused(tmp_path):
    recipe = small_recipe(tmp_path, "eval.policies.teacher='reference'", "eval.compare=[['teacher', 'nobody']]")
    with pytest.raises(WarmstartError, match="eval.compare: 'nobody' is not a policy of eval.policies"):
        evaluate.run(recipe)


def api_policy_row(tmp_path, faults: list[str], *overrides: str) -> dict:

    with FakeAPI() as api:
        api.faults = faults
        recipe = small_recipe(
            tmp_path, "eval.k=2", "api.max_retries=0", "api.timeout_s=5.0", "api.concurrency=1", *overrides
        )
        env = Arithmetic()
        spec = PolicySpec.parse(f"openai:fake-model@{api.url}/v1")
        return evaluate_policy("api", spec, recipe, env, env.tasks("eval", 10, 0), CostLedger({}, False))


def test_failed_requests_are_counted_apart_and_past_eval_max_error_rate_eval_stops(tmp_path):
    # One of 20 samples failed (5 %): scored over the others, and the row says what it left out.
    row = api_policy_row(tmp_path / "one", ["500"])
    assert row["pass@1"] == 1.0 and row["request_errors"] == 1 and row["infra_errors"] == 0
    assert row["tasks_scored"] == 10
    assert unscored(row) == "1 failed requests; pass@2 over 9 of 10 tasks"  # one task kept 1 sample of 2
    # Past the cap: an error, not a pass@1 over what happened to be answered.
    with pytest.raises(WarmstartError, match=r"eval.policies.api: 2 of 20 samples' requests failed, more than eval"):
        api_policy_row(tmp_path / "two", ["500", "500"])
    # Every request failed: said as such, not as a verifier's infra errors.
    with pytest.raises(WarmstartError, match=r"no sample could be scored \(20 requests failed, 0 verifier infra"):
        api_policy_row(tmp_path / "all", ["500"] * 20, "eval.max_error_rate=1.0")


def test_eval_is_done_again_when_its_task_file_or_a_models_files_change(tmp_path):
    env = Arithmetic()
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(t.model_dump_json() + "\n" for t in env.tasks("eval", 6, 0)))
    recipe = small_recipe(
        tmp_path / "run", "eval.k=1", "eval.policies={teacher='reference'}", f"tasks.eval_file='{eval_file}'"
    )
    results = tmp_path / "run" / "eval" / "results.json"
    assert json.loads(evaluate.run(recipe).read_text())["policies"]["teacher"]["tasks"] == 6
    eval_file.write_text("".join(t.model_dump_json() + "\n" for t in env.tasks("eval", 3, 0)))  # same path
    assert json.loads(evaluate.run(recipe).read_text())["policies"]["teacher"]["tasks"] == 3
    assert results.exists()
    # A model directory counts by every file in it: shards, a .bin, the tokenizer, its chat template.
    model = tmp_path / "model"
    model.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.json"):
        (model / name).write_text(name)
    (model / "sub").mkdir()
    assert [p.name for p in model_files(model)] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "tokenizer.json",
    ]
    assert model_files(tmp_path / "missing") == [] and model_files(eval_file) == [eval_file]


def test_a_missing_model_is_refused_before_any_policy_is_evaluated_and_long_names_fit(tmp_path):
    recipe = small_recipe(tmp_path / "run", "eval.k=1", "eval.policies={first='reference', gone='run:missing'}")
    with pytest.raises(WarmstartError, match=r"eval.policies.gone: no model directory or .gguf file at .*missing"):
        evaluate.run(recipe)
    assert not (tmp_path / "run" / "eval").exists()  # the first policy's samples were not written either
    long_name = "a very long row name " * 15
    recipe = small_recipe(tmp_path / "run", "eval.k=1", f"eval.policies={{'{long_name}'='reference'}}")
    evaluate.run(recipe)
    [samples] = (tmp_path / "run" / "eval").glob("*.jsonl")
    assert len(samples.name) <= 106


def test_a_stopped_eval_bills_what_it_spent_and_eval_money_is_not_per_accepted_trajectory(tmp_path):
    with FakeAPI() as api:
        api.faults = ["500"] * 5
        recipe = priced_api_recipe(tmp_path, api, "eval.k=2", "api.max_retries=0", "api.concurrency=1", eval_=10)
        with pytest.raises(WarmstartError, match="5 of 20 samples' requests failed"):
            evaluate.run(recipe)
    costs = json.loads((tmp_path / "run" / "costs.json").read_text())
    entry = costs["stages"]["eval"]
    assert entry["status"] == "failed" and entry["api"]["requests"] == 15
    assert entry["api"]["usd"] == pytest.approx(15 * (20 * 1.0 + 6 * 2.0) / 1e6)
    assert costs["total"]["usd_per_accepted_trajectory"] is None  # no teacher data was bought


def test_what_earlier_eval_runs_paid_stays_in_costs_json_when_eval_runs_again(tmp_path):
    unit = (20 * 1.0 + 6 * 2.0) / 1e6  # one reply's price
    with FakeAPI() as api:
        api.faults = ["500"] * 5
        overrides = ("eval.k=2", "api.max_retries=0", "api.concurrency=1")
        with pytest.raises(WarmstartError, match="5 of 20 samples' requests failed"):
            evaluate.run(priced_api_recipe(tmp_path, api, *overrides, eval_=10))
        evaluate.run(priced_api_recipe(tmp_path, api, *overrides, eval_=10))  # 15 from the cache, 5 asked again
        costs = json.loads((tmp_path / "run" / "costs.json").read_text())
        entry = costs["stages"]["eval"]
        assert entry["api"]["requests"] == 5 and entry["api"]["cache_hits"] == 15
        assert entry["api_earlier_runs"]["runs"] == 1 and entry["api_earlier_runs"]["requests"] == 15
        assert costs["total"]["usd"] == pytest.approx(20 * unit)
        # Another setting: every sample asked again, and both earlier runs' bills carried.
        evaluate.run(priced_api_recipe(tmp_path, api, *overrides, "eval.temperature=0.5", eval_=10))
    costs = json.loads((tmp_path / "run" / "costs.json").read_text())
    entry = costs["stages"]["eval"]
    assert entry["api"]["requests"] == 20 and entry["api_earlier_runs"]["runs"] == 2
    assert entry["api_earlier_runs"]["requests"] == 20 and entry["api_earlier_runs"]["usd"] == pytest.approx(20 * unit)
    assert costs["total"]["usd"] == pytest.approx(40 * unit) and len(api.billed) == 40


def test_an_eval_stopped_mid_call_bills_the_requests_that_had_finished(tmp_path):
    with FakeAPI(slow_s=1.0) as api:
        api.faults = [None, None, None, "late_401"]  # the key refused once three replies were paid for
        recipe = priced_api_recipe(tmp_path, api, "eval.k=1", "eval.batch_size=4", "api.concurrency=4", eval_=4)
        with pytest.raises(WarmstartError, match="HTTP 401"):
            evaluate.run(recipe)
    entry = json.loads((tmp_path / "run" / "costs.json").read_text())["stages"]["eval"]
    assert entry["status"] == "failed" and entry["api"]["requests"] == 3


def priced_api_recipe(tmp_path, api, *overrides: str, eval_: int):
    """A run whose one eval row is the loopback API `api`, priced at $1 / $2 per million tokens in / out."""
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."fake-model"]\ninput = 1.0\noutput = 2.0\n')
    policy = f"eval.policies={{api='openai:fake-model@{api.url}/v1'}}"
    return small_recipe(tmp_path / "run", *overrides, f"api.prices='{prices}'", policy, eval_=eval_)


def run_stopped_by_its_api_row(run_dir, api):
    """An eval at k = 2 of the reference teacher and then `api`, whose every request fails: it stops at that
    row, after the teacher's samples were written. The recipe, for a rerun."""
    api.faults = ["500"] * 10
    rows = f"eval.policies={{teacher='reference', api='openai:fake-model@{api.url}/v1'}}"
    recipe = small_recipe(run_dir, "eval.k=2", rows, "tasks.eval=5", "api.max_retries=0", "api.concurrency=1")
    with pytest.raises(WarmstartError, match="eval.policies.api"):
        evaluate.run(recipe)
    return recipe


def test_a_rerun_stopped_by_a_later_row_leaves_the_samples_of_the_results_on_disk(tmp_path):
    """eval/<row>.jsonl holds the samples results.json counted: a rerun (here with k = 2) that a later row
    stopped had replaced the first row's file with its own samples while results.json kept the run before."""
    run_dir = tmp_path / "run"
    first = small_recipe(run_dir, "eval.k=1", "eval.policies={teacher='reference'}", "tasks.eval=5")
    evaluate.run(first)
    samples = run_dir / "eval" / "teacher.jsonl"
    before = samples.read_bytes()
    with FakeAPI() as api:
        run_stopped_by_its_api_row(run_dir, api)
    assert samples.read_bytes() == before
    assert json.loads((run_dir / "eval" / "results.json").read_text())["k"] == 1


def test_a_row_added_to_eval_policies_is_the_only_one_evaluated_again(tmp_path, caplog):
    """Each row's results are kept where nothing they depend on changed: adding a row had sampled every
    local model again. A changed setting shared by the rows evaluates them all."""
    run_dir = tmp_path / "run"
    first = small_recipe(run_dir, "eval.k=2", "eval.policies={teacher='reference'}", "tasks.eval=5")
    evaluate.run(first)
    teacher_samples = run_dir / "eval" / "teacher.jsonl"
    before, first_row = teacher_samples.stat().st_mtime_ns, json.loads((run_dir / "eval" / "results.json").read_text())
    rows = "eval.policies={teacher='reference', again='reference'}"
    with caplog.at_level("INFO", logger="warmstart"):
        results = json.loads(evaluate.run(small_recipe(run_dir, "eval.k=2", rows, "tasks.eval=5")).read_text())
    assert "eval: teacher as in the last results" in caplog.text
    assert teacher_samples.stat().st_mtime_ns == before  # not sampled again
    assert results["policies"]["teacher"]["per_task"] == first_row["policies"]["teacher"]["per_task"]
    assert results["policies"]["again"]["per_task"] == first_row["policies"]["teacher"]["per_task"]  # same seed
    assert (
        results["rows"] == ["teacher", "again"]
        and len((run_dir / "eval" / "again.jsonl").read_text().splitlines()) == 10
    )
    caplog.clear()
    with caplog.at_level("INFO", logger="warmstart"):
        results = json.loads(evaluate.run(small_recipe(run_dir, "eval.k=1", rows, "tasks.eval=5")).read_text())
    assert "as in the last results" not in caplog.text  # k is every row's
    assert teacher_samples.stat().st_mtime_ns != before and len(teacher_samples.read_text().splitlines()) == 5


def test_a_rerun_after_a_stopped_one_keeps_each_sample_once(tmp_path):
    """A stopped run leaves a row's samples unpublished beside its file; the next run writes them anew
    (it had appended to them: every sample twice)."""
    run_dir = tmp_path / "run"
    with FakeAPI() as api:
        stopped = run_stopped_by_its_api_row(run_dir, api)
        api.faults = []
        evaluate.run(stopped)
    lines = (run_dir / "eval" / "teacher.jsonl").read_text().splitlines()
    assert len(lines) == 10 and len({(json.loads(x)["task_id"], json.loads(x)["sample_index"]) for x in lines}) == 10


def test_a_tracker_that_cannot_start_stops_eval_before_it_samples_or_replaces_the_results(tmp_path):
    """The tracker had opened after results.json was replaced: its failure (W&B online without a key, a
    directory it cannot write) left the manifest's "done" of the earlier settings beside the new results, so
    eval with the earlier settings said "already done" and showed the others."""
    teacher_only = ("eval.policies={teacher='reference'}",)
    out = evaluate.run(small_recipe(tmp_path, *teacher_only, "eval.k=1"))
    before = out.read_bytes()
    (tmp_path / "tensorboard").mkdir(exist_ok=True)
    (tmp_path / "tensorboard" / "eval").write_text("a file where the tracker's directory goes")
    with pytest.raises(WarmstartError, match="log.to: tensorboard could not start for eval"):
        evaluate.run(small_recipe(tmp_path, *teacher_only, "eval.k=2", "log.to=['jsonl', 'tensorboard']"))
    assert out.read_bytes() == before and json.loads(before)["k"] == 1


def test_row_names_are_printed_as_written_never_read_as_markup(tmp_path, capsys):
    """A name is the user's text: `teacher [/]` had stopped eval (rich's MarkupError) after its samples were
    paid for, and `teacher [run 2]` was printed as `teacher ` (review 83)."""
    recipe = small_recipe(
        tmp_path,
        "eval.k=1",
        "eval.policies={'teacher [/]'='reference', 'teacher [run 2]'='reference', 'teacher [red]v2'='reference'}",
        "eval.compare=[['teacher [/]', 'teacher [run 2]']]",
    )
    evaluate.run(recipe)
    out = capsys.readouterr()
    for name in ("teacher [/]", "teacher [run 2]", "teacher [red]v2"):
        assert name in out.out and f"eval {name}" in out.err, name
