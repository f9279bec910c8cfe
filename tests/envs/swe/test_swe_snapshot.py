"""The snapshot keeps a tree's files as they are and records what it leaves out: CRLF stays CRLF (a test
that reads a data file's bytes passed in the tree and failed in the sandbox), a file name that is not
UTF-8 is dropped and recorded (it broke writing trajectories), and a subpackage named `build`, `dist` or
`node_modules` is kept (such folders are left out, and recorded, only where they are not a package).
Also: mutations count lines as `ast` does (a form feed is not a line break)."""

from __future__ import annotations

import ast
import json
import os

from warmstart.envs.swe.mutations import mutations, removed_statement
from warmstart.envs.swe.snapshot import dropped_note, read_snapshot
from warmstart.envs.swe.suite import write_tree


def test_crlf_files_are_kept_byte_for_byte(tmp_path):
    (tmp_path / "rows.csv").write_bytes(b"a,b\r\n1,2\r\n")
    (tmp_path / "mod.py").write_bytes(b"x = 1\r\ny = 2\r\n")
    files = read_snapshot(tmp_path).files
    assert files == {"rows.csv": "a,b\r\n1,2\r\n", "mod.py": "x = 1\r\ny = 2\r\n"}
    write_tree(tmp_path / "copy", files)
    assert (tmp_path / "copy" / "rows.csv").read_bytes() == b"a,b\r\n1,2\r\n"


def test_a_file_name_that_is_not_utf8_is_dropped_and_recorded(tmp_path):
    (tmp_path / "ok.py").write_text("x = 1\n")
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt"), "w") as f:
        f.write("hello\n")
    snapshot = read_snapshot(tmp_path)
    assert snapshot.files == {"ok.py": "x = 1\n"}
    assert snapshot.dropped == {"caf\\xe9.txt": "its name is not UTF-8"}
    json.dumps(snapshot.dropped, ensure_ascii=False).encode()  # nothing unencodable anywhere
    assert "caf\\xe9.txt" in dropped_note(snapshot.dropped)


def test_build_folders_are_kept_when_they_are_packages_and_recorded_when_left_out(tmp_path):
    write_tree(
        tmp_path,
        {
            "calc/__init__.py": "from .build import make\n",
            "calc/build/__init__.py": "def make(x):\n    return [x]\n",
            "calc/dist/__init__.py": "",
            "build/lib/calc/__init__.py": "",
            "docs/node_modules/x.js": "1\n",
            "calc/__pycache__/core.txt": "cache\n",
        },
    )
    snapshot = read_snapshot(tmp_path)
    assert sorted(snapshot.files) == ["calc/__init__.py", "calc/build/__init__.py", "calc/dist/__init__.py"]
    assert sorted(snapshot.dropped) == ["build/", "docs/node_modules/"]
    assert "build/ (build output" in dropped_note(snapshot.dropped)


def test_removing_an_if_counts_lines_as_ast_does():
    source = "x = 1\n\x0c\ndef f(x):\n    if x:\n        x = 2\n    return x\n# \x1c \x85 \u2028 end\n"
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.If))
    assert removed_statement(source, node) == source.replace("    if x:\n        x = 2\n", "")
    removed = [m for m in mutations("m.py", source) if m.kind == "removed if branch"]
    assert [m.source for m in removed] == [source.replace("    if x:\n        x = 2\n", "")]
