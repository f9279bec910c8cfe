"""Training curves show the run of a stage that made its model: not steps of an earlier run spliced in."""

from __future__ import annotations

from warmstart.report.figures import series


def rows(stage: str, steps: range, scale: float) -> list[dict]:
    return [{"stage": stage, "step": s, "loss": scale * s} for s in steps]


def test_a_stage_trained_again_from_scratch_shows_only_the_new_run():
    metrics = rows("sft:student", range(1, 5), 1.0) + rows("sft:student", range(1, 3), 10.0)
    assert series(metrics, "loss") == {"sft:student": ([1, 2], [10.0, 20.0])}


def test_a_resumed_stage_continues_its_line_from_the_checkpoint():
    """Killed at step 32, resumed from its step-20 checkpoint: steps 21-32 of the killed run are not this one's."""
    metrics = rows("sft:student", range(1, 33), 1.0) + rows("sft:student", range(21, 61), 10.0)
    steps, values = series(metrics, "loss")["sft:student"]
    assert steps == list(range(1, 61))
    assert values[:20] == [float(s) for s in range(1, 21)] and values[20:] == [10.0 * s for s in range(21, 61)]


def test_stages_interleaved_in_the_file_keep_their_own_lines():
    metrics = [r for pair in zip(rows("sft:a", range(1, 4), 1.0), rows("grpo:b", range(1, 4), 2.0)) for r in pair]
    assert series(metrics, "loss") == {"sft:a": ([1, 2, 3], [1.0, 2.0, 3.0]), "grpo:b": ([1, 2, 3], [2.0, 4.0, 6.0])}
