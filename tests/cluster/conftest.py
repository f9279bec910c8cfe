"""One local Ray cluster per test module: Ray's start-up takes seconds, so the tests of a module share it.

Workers inherit the environment of the moment the cluster starts, as a real cluster's nodes have their own:
an OpenAI key for the loopback teacher, and this directory on PYTHONPATH, where a plugin environment
(stuck_envs.py) is installed, as a plugin would be on every node.
"""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", "test-key")
        patch.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Ray 2.52's notice of a future GPU default
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raising KeyboardInterrupt here, as in a terminal: a process started in the background of a
    non-interactive shell inherits SIGINT ignored, and Python then leaves it ignored."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)
