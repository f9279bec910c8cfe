"""The swe tools hold every file the snapshot keeps: a task mined in a 1.5 MB module (the snapshot keeps
files up to 2 MB) can be fixed with edit_file and write_file (both refused anything over 1,000,000 bytes)."""

from __future__ import annotations

from warmstart.envs.swe.snapshot import MAX_FILE_BYTES as SNAPSHOT_BYTES
from warmstart.envs.swe.tools import edit, write

BIG = "def f():\n    return 1\n" + "# " + "x" * 70 + "\n" * 1 + ("# " + "x" * 70 + "\n") * 20_000


def test_a_module_the_snapshot_keeps_can_be_edited_and_written():
    assert 1_000_000 < len(BIG.encode()) < SNAPSHOT_BYTES
    files = {"pkg/big.py": BIG}
    assert edit(files, {"path": "pkg/big.py", "old": "return 1\n", "new": "return 2\n"}) is None
    assert files["pkg/big.py"].startswith("def f():\n    return 2\n")
    assert write(files, {"path": "pkg/big.py", "content": BIG}) is None and files["pkg/big.py"] == BIG


def test_a_file_over_the_snapshot_cap_is_still_refused():
    files = {"pkg/big.py": "x = 1\n"}
    assert write(files, {"path": "pkg/big.py", "content": "#" * (SNAPSHOT_BYTES + 1)}) is not None
    assert files["pkg/big.py"] == "x = 1\n"
