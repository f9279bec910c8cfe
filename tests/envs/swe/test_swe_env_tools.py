"""`list_files` is cut like `read_file` (20,000 files were a 720,000-character reply), and `run` puts the
repository's source roots on PYTHONPATH as the grader's sys.path has them."""

from __future__ import annotations

from warmstart.envs.swe.env import file_list, run_script


def test_list_files_is_cut_like_read_file():
    paths = [f"pkg/module_{i:05}.py" for i in range(20_000)]
    text = file_list(paths)
    assert len(text) < 21_000 and text.startswith("pkg/module_00000.py\n")
    assert text.endswith("more files: use run with `git ls-files` (and grep)]")
    assert file_list(paths[:3]) == "\n".join(paths[:3])


def test_run_puts_the_source_roots_on_pythonpath():
    """A src-layout package: `python -m pytest` in `run` could not import it (the grader's sys.path had src)."""
    script = run_script("/venv/bin", ["", "src"], "python -m pytest")
    assert 'PYTHONPATH="/work:/work/src"' in script and script.endswith("; python -m pytest")
