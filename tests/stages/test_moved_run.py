"""A run directory moved or copied elsewhere (to a bigger machine, say) is the same run: its finished stages
are done there, and its training stages resume their own checkpoints. The inputs inside the run directory
had been fingerprinted by their paths, so a moved run trained from scratch again, or had its checkpoints
refused as "of another config or other input data"."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from helpers import small_recipe
from warmstart.runs import checkpoint
from warmstart.runs.directory import RunDir, fingerprint_of, input_digests, input_label, relabelled
from warmstart.runs.jsonl import write_json_atomic
from warmstart.stages import curate, evaluate, generate, grpo, sft

TRAINING = [
    "sft.steps=2",
    "sft.checkpoint_every=1",
    "grpo.steps=2",
    "grpo.checkpoint_every=1",
    "grpo.tasks_per_step=2",
    "grpo.group_size=2",
    "grpo.max_new_tokens=8",
    "grpo.max_refills=0",
    "eval.policies={teacher='reference', student='student'}",
]


def fingerprint(config: dict, inputs: list[Path], root: Path | None = None) -> str:
    """A stage's fingerprint as `Stage` makes it in the run directory `root`; None: as a warmstart that named
    every input by its path made it."""
    if root is None:
        return fingerprint_of(config, input_digests(inputs))
    return fingerprint_of(relabelled(config, root), input_digests(inputs, root))


def stages(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["stages"]


def test_a_moved_run_finds_its_stages_done_and_resumes_its_own_checkpoints(tmp_path, caplog):
    first = tmp_path / "first"
    recipe = small_recipe(first, *TRAINING)
    for stage in (generate, curate, sft, grpo, evaluate):
        stage.run(recipe)
    recorded = stages(first)

    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first, moved)
    recipe = small_recipe(moved, *TRAINING)
    with caplog.at_level(logging.INFO, logger="warmstart"):
        for stage in (generate, curate, sft, grpo, evaluate):
            stage.run(recipe)
    assert stages(moved) == recorded  # every stage done as it was: nothing ran again
    assert "already done" in caplog.text

    # The published models gone (a run stopped before it published): each stage resumes its last checkpoint.
    for model in ("student", "student-grpo"):
        shutil.rmtree(moved / "models" / model)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="warmstart"):
        sft.run(recipe)
        grpo.run(recipe)
    resumed = [r.getMessage() for r in caplog.records if "resuming from" in r.getMessage()]
    assert len(resumed) == 2 and all(str(moved) in line for line in resumed), resumed
    assert (moved / "models" / "student").is_dir() and (moved / "models" / "student-grpo").is_dir()


def test_records_and_checkpoints_of_an_earlier_warmstart_which_named_inputs_by_path_still_count(tmp_path, caplog):
    run = tmp_path / "run"
    recipe = small_recipe(run, "sft.steps=2", "sft.checkpoint_every=1")
    generate.run(recipe)
    curate.run(recipe)
    run_dir = RunDir(recipe)
    data = run_dir.curated("train")
    config = {"any": "settings"}
    out = run / "out.txt"
    with run_dir.stage("example", config, [data], [out]) as stage:
        out.write_text("made")
    assert stage.fingerprint != fingerprint(config, [data])  # inputs in the run are named by their place in it
    assert input_label(data, run) == "<run>/curated/train.jsonl"
    assert input_label(tmp_path / "elsewhere.jsonl", run) == str(tmp_path / "elsewhere.jsonl")

    # The record as an earlier warmstart wrote it, every input by its path: still done here.
    manifest = json.loads(run_dir.manifest_path.read_text())
    manifest["stages"]["example"]["fingerprint"] = fingerprint(config, [data])
    write_json_atomic(run_dir.manifest_path, manifest)
    with run_dir.stage("example", config, [data], [out]) as again:
        assert again.done

    # sft's checkpoint as an earlier warmstart wrote it (its fingerprint of paths), the model not yet published:
    # resumed in place.
    sft.run(recipe)
    last = checkpoint.complete_checkpoints(run / "checkpoints" / "student")[-1]
    made_of = checkpoint.read_fingerprinted(last)
    by_path = [(label.replace("<run>", str(run)), digest) for label, digest in made_of["inputs"].items()]
    (last / checkpoint.FINGERPRINT).write_text(fingerprint_of(made_of["config"], by_path))
    shutil.rmtree(run / "models" / "student")
    with caplog.at_level(logging.INFO, logger="warmstart"):
        sft.run(recipe)
    assert f"resuming from {last}" in caplog.text


def test_a_run_directory_named_relative_or_absolute_gives_one_fingerprint_wherever_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.jsonl").write_text("same content")

    def print_of(root: Path) -> str:
        config = {"eval": {"student": f"hf:{root}/models/student"}, "other": [f"{root}/x", 3]}
        return fingerprint(config, [root / "data.jsonl", tmp_path / "outside.txt"], root)

    (tmp_path / "outside.txt").write_text("user's file")
    assert len({print_of(Path("a")), print_of(Path("b")), print_of(tmp_path / "a"), print_of(tmp_path / "b")}) == 1
    (tmp_path / "b" / "data.jsonl").write_text("other content")
    assert print_of(Path("a")) != print_of(Path("b"))  # by content still
    assert fingerprint({"p": "hf:a/models/student"}, [], Path("a")) != fingerprint(
        {"p": "hf:c/models/x"}, [], Path("a")
    )


def test_an_eval_row_is_kept_only_by_a_fingerprint_its_results_record(tmp_path):
    out, samples = tmp_path / "results.json", {"student": tmp_path / "student.jsonl"}
    samples["student"].write_text("")
    row = {"pass@1": 0.5}
    write_json_atomic(out, {"policies": {"student": row}})  # results that recorded no row fingerprints
    assert evaluate.unchanged_rows(out, {"student": "new"}, samples, {"student": "by-path"}) == {}
    assert evaluate.unchanged_rows(out, {"student": "new"}, samples, {}) == {}
    write_json_atomic(out, {"policies": {"student": row}, "row_fingerprints": {"student": "by-path"}})
    assert evaluate.unchanged_rows(out, {"student": "new"}, samples, {"student": "by-path"}) == {"student": row}
    assert evaluate.unchanged_rows(out, {"student": "new"}, samples) == {}
