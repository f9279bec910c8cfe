"""Publishing a checkpoint replaces only a directory inside the run's models/, whatever path it is given."""

from __future__ import annotations

import pytest

from warmstart.errors import WarmstartError
from warmstart.runs import checkpoint


def make_checkpoint(root):
    """A checkpoint as `checkpoint.save` leaves it (the files publish copies or leaves out)."""
    path = root / "checkpoints" / "student" / "step-1"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "trainer_state.pt").write_bytes(b"state")
    (path / checkpoint.MARKER).write_text("1\n")
    return path


def test_publish_refuses_a_path_that_is_not_a_directory_inside_models(tmp_path):
    run = tmp_path / "run"
    models = run / "models"
    step = make_checkpoint(run)
    models.mkdir()
    (run / "manifest.json").write_text("{}")
    (tmp_path / "elsewhere").mkdir()
    for out in (models / "..", models / ".", models / "a" / "b", run / "elsewhere", tmp_path / "elsewhere"):
        with pytest.raises(WarmstartError, match="refusing to replace it"):
            checkpoint.publish(step, out, models)
    assert (run / "manifest.json").exists() and (step / "model.safetensors").exists()
    assert (tmp_path / "elsewhere").is_dir()
    assert sorted(p.name for p in models.iterdir()) == []


def test_publish_replaces_a_model_inside_models(tmp_path):
    models = tmp_path / "models"
    step = make_checkpoint(tmp_path)
    (models / "student").mkdir(parents=True)
    (models / "student" / "stale.bin").write_bytes(b"old")
    checkpoint.publish(step, models / "student", models)
    assert sorted(p.name for p in (models / "student").iterdir()) == ["model.safetensors"]
