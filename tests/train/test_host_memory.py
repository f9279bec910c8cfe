"""train/host_memory.py against glibc itself: page faults counted in a child process (not timed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from warmstart.train import host_memory

pytestmark = pytest.mark.skipif(not host_memory.glibc(), reason="glibc's malloc only")

# A step's pattern in a fresh process: 128 blocks of 1 MiB written, all freed, then the same again. By
# default glibc maps such blocks apart (its mmap threshold starts at 128 KiB) and unmaps them when freed,
# so the second round takes its 32k pages back by faults (a later round may not: glibc raises the
# threshold as it sees blocks freed, and a step's blocks vary more than these).
CHILD = """
import resource, sys
import torch
from warmstart.train import host_memory
if sys.argv[1] in ("keep", "release"):
    assert host_memory.keep_freed_memory()
faults = []
for round in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(256 * 1024) for _ in range(128)]
    del blocks
    if sys.argv[1] == "release":
        host_memory.release_freed_memory()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[1])
"""
PAGES = 128 * 1024 * 1024 // 4096  # the pages a round writes


def second_round_faults(mode: str) -> int:
    # glibc's own defaults in the child: no malloc tunables from the environment
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.split()[-1])


def test_kept_memory_is_reused_without_taking_pages_back():
    assert second_round_faults("default") > PAGES // 2  # seen: every page again
    assert second_round_faults("keep") < PAGES // 4  # seen: 1.8-4.4k of 32k


def test_release_gives_the_kept_memory_back():
    assert second_round_faults("release") > PAGES // 2  # trimmed after the first round: taken back again


def test_other_c_libraries_keep_their_defaults(monkeypatch, caplog):
    monkeypatch.setattr(host_memory.platform, "libc_ver", lambda: ("", ""))
    with caplog.at_level("INFO", logger="warmstart.train.host_memory"):
        assert host_memory.keep_freed_memory() is False
    assert "keeps its own defaults" in caplog.text
