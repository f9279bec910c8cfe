"""Mining's filter of ids that share a JUnit entry: both of such a pair are left out, the rest kept, and each
key is counted once over the suite, not once per id (`list.count` per id made 20,000 tests take most of a
minute before a single mutation ran; measured by counting, never by a clock)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from warmstart.envs.swe import mining
from warmstart.envs.swe.junit import Outcome, junit_key
from warmstart.envs.swe.suite import SuiteRun


def test_ids_sharing_a_junit_entry_are_left_out_in_one_pass(monkeypatch):
    ids = [f"tests/test_mod{i // 50}.py::test_case[{i}]" for i in range(2_000)]
    ids.append(ids[-1].replace("tests/", "tests."))  # one pair sharing a JUnit key: both are left out
    outcomes = {junit_key(i): Outcome(True, "passed") for i in ids}
    monkeypatch.setattr(mining, "run_pytest", lambda *args, **kwargs: SuiteRun(outcomes, None, None))
    counted = []
    monkeypatch.setattr(mining, "Counter", lambda keys: counted.append(len(keys)) or Counter(keys))
    kept = mining.passing_tests(Path("."), {}, ids, None, mining.MineSettings())
    assert kept == ids[:-2]
    assert counted == [len(ids)]  # the keys counted once, together
