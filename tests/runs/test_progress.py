"""Progress where stderr is not a terminal (a log file, nohup, CI, `| tee`): plain lines as the work goes,
not only the bar's final state once the stage has ended."""

from __future__ import annotations

from warmstart.runs import progress
from warmstart.runs.progress import progress_bar


def test_a_log_file_gets_a_line_every_tenth_of_the_work_and_the_end(capsys):
    with progress_bar("sft student", 40) as advance:
        for step in range(1, 41):
            advance(note=f"loss {1 / step:.3f}")
            if step == 8:  # mid-run: the log already says how far the stage is
                assert "sft student: 8/40 (20 %)" in capsys.readouterr().err
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("sft student: 40/40 (100 %)") and lines[-1].endswith("loss 0.025")
    assert len(lines) == 8  # 30 %, 40 %, ... 100 %: a line per tenth, none twice


def test_slow_work_gets_a_line_every_half_minute_and_a_stage_that_stops_early_says_where(capsys, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # every advance is "half a minute later"
    with progress_bar("generate teacher", 0) as advance:  # a total not known yet (generate's rounds)
        advance(1, note="verified 1")
        advance(1, total=1000)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "generate teacher: 1/0, 00:00:00 elapsed, verified 1"
    assert lines[1:] == ["generate teacher: 2/1,000 (0 %), 00:00:00 elapsed, verified 1"]  # said once
