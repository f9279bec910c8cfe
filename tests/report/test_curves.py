"""Training curves show the run of a stage that made its model: not steps of an earlier run spliced in."""

from __future__ import annotations

import pytest

from warmstart.report.figures import funnel_figure, series, training_curves


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


@pytest.mark.parametrize("name", ["student $x_$", "cost $x^$ a", "a $\\frac$ b", "student $5 vs $10 teacher"])
def test_names_on_a_figure_are_drawn_as_written_never_as_tex(name):
    """A name with two `$` had been parsed as mathtext: invalid TeX stopped the report with matplotlib's
    traceback, and valid TeX was drawn as maths (review 83)."""
    funnel = funnel_figure([{"name": name, "generated": 3, "verified": 2, "kept": 1, "dropped": {name: 1}}])
    assert funnel.count(name) == 2
    curves = training_curves([{"stage": name, "step": s, "loss": 1.0 / s} for s in (1, 2, 3)])
    assert name in curves
