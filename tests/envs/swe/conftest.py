import os
import shutil
import tempfile
from pathlib import Path

import pytest
from swe_fixture import make_sandbox_venv

from warmstart.envs.sandbox import bubblewrap as sandbox
from warmstart.envs.sandbox.interpreter import interpreter


@pytest.fixture(scope="session")
def sandbox_python():
    """An interpreter with pytest that runs inside the sandbox (swe_fixture.py says how it is made).
    Not under pytest's tmp_path: that is private to root, and the sandbox runs as `nobody`."""
    if sandbox.bwrap_path() is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 to make the sandbox's venv from")
    root = Path(tempfile.mkdtemp(prefix="warmstart-swe-venv-"))
    os.chmod(root, 0o755)
    try:
        yield interpreter(str(make_sandbox_venv(root / "venv")))
    finally:
        shutil.rmtree(root, ignore_errors=True)
