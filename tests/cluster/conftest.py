"""One local Ray cluster per test module: Ray's start-up takes seconds, so the tests of a module share it.

Workers inherit the environment of the moment the cluster starts: an OpenAI key for the loopback teacher
is set before `ray.init`, as a real cluster's nodes would have theirs.
"""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", "test-key")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Ray 2.52's notice of a future GPU default
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()
