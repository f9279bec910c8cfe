"""export refuses curated data whose last curate run failed, as sft does: the file is an earlier run's."""

from __future__ import annotations

import pytest

from helpers import small_recipe
from warmstart.errors import WarmstartError
from warmstart.export.exporter import export_run
from warmstart.stages import curate, generate


def test_export_refuses_the_data_of_a_curate_run_that_failed_since(tmp_path):
    run = tmp_path / "run"
    recipe = small_recipe(run, "generate.samples_per_task=2", train=30)
    generate.run(recipe)
    curate.run(recipe)
    assert export_run(run, "jsonl", out=tmp_path / "first").is_dir()  # the last run succeeded: exported
    with pytest.raises(curate.NothingKept):  # rates are 0, 0.5 or 1: none in [0.3, 0.3]
        curate.run(small_recipe(run, "generate.samples_per_task=2", "curate.teacher_pass_rate=[0.3, 0.3]", train=30))
    assert (run / "curated" / "train.jsonl").is_file()  # the earlier run's data, kept
    with pytest.raises(WarmstartError, match="the last one failed"):
        export_run(run, "jsonl", out=tmp_path / "second")
    assert not (tmp_path / "second").exists()
