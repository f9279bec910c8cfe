"""The `repo` environment: tools over a stateless working copy, history with nothing to dig up,
grading on a fresh copy with hidden probes, and the whole pipeline through the tool loop."""

from __future__ import annotations

import json
import random

import pytest

from helpers import small_recipe
from warmstart.envs.repo import RepoEnv
from warmstart.stages import curate, evaluate, generate, sft
from warmstart.types import Message, Provenance, ToolCall, ToolFunction, Trajectory

ENV = RepoEnv()
MEDIAN = next(t for t in ENV.all_tasks if t.id == "repo/median-even")


def call(name: str, turn: int, **arguments) -> ToolCall:
    return ToolCall(id=f"call-{turn}-0", function=ToolFunction(name=name, arguments=json.dumps(arguments)))


def agent(task, *calls: ToolCall) -> Trajectory:
    """A conversation that makes `calls` (tool results computed by the environment), then answers."""
    messages = list(task.prompt)
    for c in calls:
        messages.append(Message(role="assistant", content="", tool_calls=[c]))
        messages.append(Message(role="tool", tool_call_id=c.id, content=ENV.step(task, c, messages)))
    messages.append(Message(role="assistant", content="Done."))
    return Trajectory(
        task_id=task.id, policy="test", messages=messages, provenance=Provenance(provider="t", model="t", created=0)
    )


def stats_with(median_body: str, mean_body: str = "    return sum(values) / len(values)\n") -> str:
    return f"def mean(values):\n{mean_body}\n\ndef median(values):\n{median_body}"


FIXED_MEDIAN = "    s = sorted(values)\n    m = len(s) // 2\n    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2\n"


@pytest.mark.parametrize("task", ENV.all_tasks, ids=[t.id for t in ENV.all_tasks])
def test_the_reference_fixes_each_repository_through_the_tools(task):
    trajectory = ENV.reference(task, random.Random(0))
    tool_names = [c.function.name for m in trajectory.messages for c in m.tool_calls or []]
    assert tool_names == ["list_files", "read_file", "write_file", "run"]
    assert trajectory.messages[-2].content.startswith("exit code 0")  # the visible tests ran in the sandbox
    verdict = ENV.verify(task, trajectory)
    assert verdict.passed and verdict.details["fail_to_pass"] == 2 and verdict.details["pass_to_pass"] == 2
    untouched = ENV.verify(task, agent(task))
    assert not untouched.passed and untouched.details["fail_to_pass"] == 0 and untouched.details["pass_to_pass"] == 2


def test_only_non_test_changes_are_graded():
    hacked_tests = agent(
        MEDIAN,
        call("write_file", 0, path="tests/test_stats.py", content="import unittest\n"),
        call("write_file", 1, path="pystats/test_hidden.py", content="X = 1\n"),
    )
    verdict = ENV.verify(MEDIAN, hacked_tests)
    assert not verdict.passed and verdict.details["changed_files"] == []


@pytest.mark.parametrize(
    "content",
    [
        stats_with(FIXED_MEDIAN, mean_body="    return 0\n"),  # fixes one thing, breaks another: pass-to-pass fails
        "import sys\nsys.exit(0)\n",
        "class Yes(float):\n    def __eq__(self, other):\n        return True\n\ndef mean(values):\n    return Yes(0)\n\ndef median(values):\n    return Yes(0)\n",
        "import os\nos._exit(0)\n",
    ],
    ids=["breaks-mean", "exit", "always-equal", "os-exit"],
)
def test_a_fix_that_breaks_or_cheats_fails(content):
    verdict = ENV.verify(MEDIAN, agent(MEDIAN, call("write_file", 0, path="pystats/stats.py", content=content)))
    assert not verdict.passed


def test_a_real_fix_written_by_hand_passes_with_extra_files_ignored():
    trajectory = agent(
        MEDIAN,
        call("write_file", 0, path="pystats/stats.py", content=stats_with(FIXED_MEDIAN)),
        call("write_file", 1, path="conftest.py", content="raise SystemExit\n"),
        call("write_file", 2, path="sitecustomize.py", content="import os\nos._exit(0)\n"),
    )
    verdict = ENV.verify(MEDIAN, trajectory)
    assert verdict.passed, verdict.details


def test_history_holds_nothing_but_the_buggy_commit():
    command = (
        "git log --all --oneline | wc -l; git reflog | wc -l; git tag | wc -l; git stash list | wc -l; "
        "git cat-file --batch-all-objects --batch | grep -c 'middle - 1' || true"
    )
    trajectory = agent(MEDIAN, call("run", 0, command=command))
    output = trajectory.messages[-2].content.splitlines()
    assert output[0] == "exit code 0"
    assert [line.strip() for line in output[1:6]] == [
        "1",
        "1",
        "0",
        "0",
        "0",
    ]  # one commit, one reflog entry, no fix anywhere


def test_tools_refuse_paths_outside_and_report_missing_files():
    assert ENV.step(MEDIAN, call("write_file", 0, path="../escape.py", content="x"), MEDIAN.prompt).startswith("error:")
    assert ENV.step(MEDIAN, call("write_file", 0, path=".git/config", content="x"), MEDIAN.prompt).startswith("error:")
    assert ENV.step(MEDIAN, call("read_file", 0, path="nope.py"), MEDIAN.prompt) == "error: no such file: nope.py"
    written = agent(
        MEDIAN, call("write_file", 0, path="notes.txt", content="hello"), call("read_file", 1, path="notes.txt")
    )
    assert written.messages[-2].content == "hello"  # state replayed from the conversation


def test_the_pipeline_runs_on_repo_tasks(tmp_path):
    recipe = small_recipe(
        tmp_path,
        "env.name=repo",
        "env.max_turns=6",
        "sft.steps=2",
        "sft.seq_len=4096",
        "sft.tiny.max_positions=8192",
        "eval.k=1",
        "eval.max_new_tokens=16",
        'eval.policies={teacher="teacher", student="student"}',
        train=1,
        eval_=2,
    )
    generate.run(recipe)
    curate.run(recipe)
    curated = [json.loads(line) for line in (tmp_path / "curated" / "train.jsonl").read_text().splitlines()]
    assert len(curated) == 1 and [m["role"] for m in curated[0]["messages"]].count("tool") == 4  # multi-turn SFT data
    sft.run(recipe)
    summary = json.loads(evaluate.run(recipe).read_text())
    assert summary["policies"]["teacher"]["pass@1"] == 1.0
    assert summary["policies"]["student"]["pass@1"] == 0.0


@pytest.mark.parametrize(
    "name, arguments",
    [
        ("write_file", {"path": "pystats", "content": "x"}),  # a directory
        ("write_file", {"path": "pystats/stats.py/x.py", "content": "x"}),  # under a file
        ("write_file", {"path": "pystats/a\u0000.py", "content": "x"}),
        ("write_file", {"path": "pystats/" + "a" * 300 + ".py", "content": "x"}),
        ("write_file", {"path": "pystats/stats.py", "content": 'x = "\ud800"'}),
        ("run", {"command": "echo a\u0000b"}),
        ("run", {"command": "echo \ud800"}),
    ],
    ids=["directory", "under-a-file", "nul", "long-name", "surrogate", "nul-command", "surrogate-command"],
)
def test_arguments_no_file_system_takes_are_errors_not_exceptions(name, arguments):
    odd = ToolCall(id="call-0-0", function=ToolFunction(name=name, arguments=json.dumps(arguments)))
    trajectory = agent(MEDIAN, odd, call("run", 1, command="git status --short"))
    replies = [m.content for m in trajectory.messages if m.role == "tool"]
    assert replies[0].startswith("error: ") and replies[1] == "exit code 0\n", replies
    verdict = ENV.verify(MEDIAN, trajectory)  # graded on the untouched copy: no exception
    assert not verdict.passed and verdict.infra_error is None and verdict.details["changed_files"] == []
