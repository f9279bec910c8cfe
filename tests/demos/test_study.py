"""`warmstart demo --seeds N` and `warmstart study` at reduced size: every row and experiment is reported,
with intervals."""

from __future__ import annotations

import json

from test_demo_e2e import SMALL
from test_demo_kd import SMALL as SMALL_KD

from helpers import small_recipe
from warmstart.demos import seeds, study


def small(tmp_path, *extra):
    overrides = [o for o in SMALL if not o.startswith(("tasks.", "sft.steps", "sft.checkpoint_every", "grpo.steps"))]
    return small_recipe(
        tmp_path, *overrides, "sft.steps=6", "sft.checkpoint_every=3", "grpo.steps=1", *extra, train=80, eval_=8
    )


def test_demo_seeds_reports_mean_and_spread_per_row(tmp_path):
    out = seeds.run(small(tmp_path), 2)
    per_seed = [json.loads((tmp_path / f"seed-{i}" / "eval" / "results.json").read_text()) for i in range(2)]
    table = out.read_text()
    for name in per_seed[0]["rows"]:
        values = [r["policies"][name]["pass@1"] for r in per_seed]
        line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {sum(values) / 2:.3f} |" in line
        assert f"{min(values):.3f} – {max(values):.3f}" in line
    # the seed reaches the data: the two runs drew different tasks
    drawn = [(tmp_path / f"seed-{i}" / "curated" / "train.jsonl").read_text() for i in range(2)]
    assert drawn[0] != drawn[1]


def test_study_reports_every_experiment_with_intervals(tmp_path):
    recipe = small(tmp_path, "curate.require_passed=false", "generate.max_new_tokens=48")
    # E4's KD teacher at the KD demo test's size: an untrained one writes text that does not re-tokenize as written
    out = study.run(recipe, kd_seeds=2, kd=SMALL_KD, kd_sft={"steps": 6})
    rows = json.loads((tmp_path / "study.json").read_text())["rows"]
    assert {r["experiment"] for r in rows} == {"E1", "E2", "E3", "E4", "E5", "E6"}
    for r in rows:
        assert "pass@1" in r or "diff" in r, r
        if "pass@1" in r:
            assert r["ci"][0] <= r["pass@1"] <= r["ci"][1]
        if "diff" in r:
            assert r["diff_ci"][0] <= r["diff"] <= r["diff_ci"][1]
            assert r["within_noise"] == (r["diff_ci"][0] <= 0 <= r["diff_ci"][1])
    assert len([r for r in rows if r["experiment"] == "E1" and "pass@1" in r]) == len(study.FRACTIONS)
    assert len([r for r in rows if r["experiment"] == "E6" and "pass@1" in r]) == study.GENERATIONS + 1  # + teacher
    assert "mean of 2 seeds" in out.read_text()
    # every generation of E6 learned from its predecessor's own rollouts
    for g in range(1, study.GENERATIONS):
        taught = (tmp_path / "E6" / "trajectories" / f"by-gen-{g}.jsonl").read_text().splitlines()
        assert taught and all(json.loads(line)["policy"].endswith(f"/gen-{g}") for line in taught[:3])


def test_e6_stops_its_chain_at_a_generation_with_nothing_to_teach_and_reports_it(tmp_path):
    """A 6-step generation 1 answers no training task right: the chain ends there as a row of E6, and the
    study goes on (the curate refusal had ended the whole study before E1 and E4)."""
    recipe = small(tmp_path, "generate.max_new_tokens=48")
    rows = study.iterated(recipe)
    stopped = [r for r in rows if r["what"] == "stopped after generation 1"]
    assert len(stopped) == 1 and "could teach generation 2" in stopped[0]["note"]
    assert [r["what"] for r in rows if "pass@1" in r] == ["teacher (reference)", "generation 1"]


def test_the_study_takes_set_for_e4_as_demo_kd_does(tmp_path, monkeypatch):
    """E4 starts from the KD demo's SFT settings with the user's --set over them (it had put them back)."""
    from typer.testing import CliRunner

    from warmstart.cli import app
    from warmstart.demos.recipe import KD_SFT

    taken = {}
    monkeypatch.setattr(study, "run", lambda recipe, kd_seeds, kd_recipe: taken.update(kd=kd_recipe) or "study.md")
    settings = ["--set", "sft.steps=7", "--set", "sft.tiny.hidden_size=32"]
    done = CliRunner().invoke(app, ["study", "--dir", str(tmp_path / "s"), *settings])
    assert done.exit_code == 0, done.output
    kd = taken["kd"]
    assert kd.sft.steps == 7 and kd.sft.tiny.hidden_size == 32  # the user's, over KD_SFT's
    assert kd.sft.lr == KD_SFT["lr"]  # KD_SFT's own where the user said nothing
