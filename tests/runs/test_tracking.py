"""Training scalars where users watch them: metrics.jsonl always, TensorBoard when asked, one set of names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import curated_run, write_recipe_file
from warmstart.config import load_recipe
from warmstart.errors import WarmstartError
from warmstart.runs.tracking import Tracker, read_metrics, stage_dir_name
from warmstart.stages import grpo, sft

RL = ["grpo.init=student", "grpo.steps=2", "grpo.tasks_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=12"]


def test_sft_and_grpo_log_the_same_names_to_metrics_jsonl_and_tensorboard(tmp_path):
    recipe = curated_run(tmp_path, "sft.steps=4", "log.to=['jsonl', 'tensorboard']", *RL)
    sft.run(recipe)
    grpo.run(recipe)
    rows = read_metrics(tmp_path)
    sft_rows = [r for r in rows if r["stage"] == "sft:student"]
    rl_rows = [r for r in rows if r["stage"] == "grpo:student-grpo"]
    assert [r["step"] for r in sft_rows] == [1, 2, 3, 4] and all(
        {"loss", "lr", "tokens_per_s"} <= set(r) for r in sft_rows
    )
    assert [r["step"] for r in rl_rows] == [1, 2] and all({"reward", "flat_groups"} <= set(r) for r in rl_rows)
    for stage, scalar, rows_of in (("sft-student", "loss", sft_rows), ("grpo-student-grpo", "reward", rl_rows)):
        events = EventAccumulator(str(tmp_path / "tensorboard" / stage))
        events.Reload()
        logged = [(e.step, e.value) for e in events.Scalars(scalar)]
        assert logged == [(r["step"], pytest.approx(r[scalar])) for r in rows_of]


@pytest.mark.parametrize("name", ["trackio", "wandb"])
def test_a_backend_that_is_not_installed_is_one_error_naming_its_extra(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # what `import` meets where the extra is not installed
    with pytest.raises(WarmstartError, match=rf"log.to: {name} is not installed; pip install .*\[{name}\]"):
        Tracker(tmp_path, "sft:x", ["jsonl", name], "p", {})


def test_trackio_gets_the_same_scalars_where_it_is_installed(tmp_path):
    trackio = pytest.importorskip("trackio")  # an optional extra, not in the test install; checked where present
    project = f"warmstart-test-{uuid.uuid4().hex[:8]}"  # trackio keeps its projects in its own directory
    with Tracker(tmp_path, "sft:x", ["trackio"], project, {"lr": 1e-3}) as tracker:
        for step in (1, 2):
            tracker.log(step, {"loss": 1.0 / step, "kl": None})
    logs = trackio.SQLiteStorage.get_logs(project, "sft:x")
    assert [(row["step"], row["loss"]) for row in logs] == [(1, 1.0), (2, 0.5)]


def test_a_torn_last_line_of_metrics_jsonl_is_left_out(tmp_path):
    with Tracker(tmp_path, "sft:x", ["jsonl"], "p", {}) as tracker:
        tracker.log(1, {"loss": 2.0, "kl": None})
    (tmp_path / "metrics.jsonl").open("a").write('{"stage": "sft:x", "st')
    assert read_metrics(tmp_path) == [
        {"stage": "sft:x", "step": 1, "time": pytest.approx(read_metrics(tmp_path)[0]["time"]), "loss": 2.0}
    ]


def test_an_unknown_backend_is_refused_in_the_recipe(tmp_path):
    recipe_file = write_recipe_file(tmp_path / "r.toml", curated_run(tmp_path / "run"))
    result = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "sft", str(recipe_file), "--set", "log.to=['mlflow']"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "log.to.0" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"].get("sft:student") is None


def test_a_line_a_kill_cut_short_is_cut_before_the_resumed_stage_appends(tmp_path):
    with Tracker(tmp_path, "sft:student", ["jsonl"], "p", {}) as tracker:
        tracker.log(1, {"loss": 2.0})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"stage": "sft:student", "step": 2, "lo')  # a kill mid-write
    with Tracker(tmp_path, "sft:student", ["jsonl"], "p", {}) as tracker:  # the resumed stage
        tracker.log(2, {"loss": 1.5})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 2.0), (2, 1.5)]


def test_a_backend_that_is_not_installed_is_refused_before_any_stage_works(tmp_path):
    """Not when the stage opens its tracker: eval opens it after sampling everything, sft after generate and
    curate (paid, with an API teacher) have run."""
    recipe_file = write_recipe_file(tmp_path / "r.toml", curated_run(tmp_path / "run"))
    without_wandb = (
        "import sys; sys.modules['wandb'] = None; from warmstart.cli import app; "
        "sys.argv = ['warmstart', *sys.argv[1:]]; app()"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_wandb, "sft", str(recipe_file), "--set", "log.to=['jsonl', 'wandb']"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and lines == [
        "error: log.to: wandb is not installed; pip install -c constraints-cpu.txt -e '.[wandb]'"
    ]
    assert not (tmp_path / "run" / "models" / "student").exists()
    demo = subprocess.run(  # every command that loads a recipe: the demo too, before its 5 minutes of work
        [sys.executable, "-c", without_wandb, "demo", "--dir", str(tmp_path / "demo"), "--set", "log.to=['wandb']"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 1 and demo.stderr.strip().splitlines() == lines
    assert not (tmp_path / "demo").exists()


def test_a_backend_named_twice_is_refused_in_the_recipe(tmp_path):
    with pytest.raises(WarmstartError, match="log.to: tensorboard is named more than once"):
        load_recipe(None, ["log.to=['tensorboard', 'jsonl', 'tensorboard']"])


def test_tensorboard_shows_the_last_run_of_a_stage_not_two_spliced(tmp_path):
    """Trained anew (or resumed from an earlier step), a stage writes another event file beside the first:
    TensorBoard shows the new run from its first step on, not the old run's later steps (nor a line that
    jumps back)."""
    for steps, scale in ((range(1, 5), 1.0), (range(1, 3), 10.0), (range(2, 4), 100.0)):
        with Tracker(tmp_path, "sft:x", ["tensorboard"], "p", {}) as tracker:
            for step in steps:
                tracker.log(step, {"loss": scale * step})
    events = EventAccumulator(str(tmp_path / "tensorboard" / "sft-x"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 10.0), (2, 200.0), (3, 300.0)]


def test_stage_names_that_clean_alike_get_directories_of_their_own():
    """Cleaned alone, `学生` and `助手` had both been `sft-`, and `student v2` and `student-v2` one directory:
    each run's session start dropped the other's curves from TensorBoard."""
    names = ["sft:学生", "sft:助手", "sft:student v2", "sft:student-v2", "sft:student", "grpo:student"]
    directories = [stage_dir_name(name) for name in names]
    assert len(set(directories)) == len(names)
    assert directories[-3:] == ["sft-student-v2", "sft-student", "grpo-student"]  # plain names as they were
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", d) for d in directories)


def test_a_backend_that_cannot_start_is_one_error_and_one_that_fails_later_is_left_out(tmp_path, caplog):
    (tmp_path / "tensorboard").write_text("a file where the directory goes")
    with pytest.raises(WarmstartError, match="log.to: tensorboard could not start for eval"):
        Tracker(tmp_path, "eval", ["jsonl", "tensorboard"], "p", {})
    (tmp_path / "tensorboard").unlink()
    with Tracker(tmp_path, "sft:x", ["jsonl", "tensorboard"], "p", {}) as tracker:
        tracker.log(1, {"loss": 1.0})

        def broken(step, values):
            raise OSError("No space left on device")

        tracker.backends["tensorboard"].log = broken
        tracker.log(2, {"loss": 0.5})
        tracker.log(3, {"loss": 0.25})  # said once, then left out
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert caplog.text.count("log.to tensorboard failed (step 2: No space left on device)") == 1
