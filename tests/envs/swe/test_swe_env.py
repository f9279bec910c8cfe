"""The `swe` environment on a task set of the tiny package: tools, replayed state, reference, grading."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from swe_fixture import BROKEN, FAIL_TO_PASS, FILES, PASS_TO_PASS, make_sandbox_venv

from warmstart.config import EnvConfig
from warmstart.envs import make_env
from warmstart.envs.swe import env as env_module
from warmstart.envs.swe.env import SweEnv, SweOptions, fix_edit
from warmstart.envs.swe.taskset import read_task_set, write_task_set
from warmstart.errors import WarmstartError
from warmstart.types import Message, Provenance, ToolCall, ToolFunction, Trajectory


@pytest.fixture()
def env(tmp_path, sandbox_python):
    record = {
        "id": "calc/000",
        "repo": "calc",
        "file": "calc/core.py",
        "broken": BROKEN["calc/core.py"],
        "mutation": "clamp returns low above high",
        "problem": "calc: 1 test fails.\n- `tests/test_core.py::test_clamp_high`",
        "fail_to_pass": FAIL_TO_PASS,
        "pass_to_pass": PASS_TO_PASS,
    }
    manifest = {"name": "calc", "python": sandbox_python.host}
    write_task_set(tmp_path / "tasks" / "calc", manifest, FILES, [record], force=False)
    return SweEnv(SweOptions(tasks_dir=str(tmp_path / "tasks"), wall_s=60, tool_wall_s=60))


def call(name: str, turn: int, **arguments) -> ToolCall:
    return ToolCall(id=f"c{turn}", function=ToolFunction(name=name, arguments=json.dumps(arguments)))


def conversation(env, task, *calls: ToolCall) -> tuple[list[Message], list[str]]:
    messages, replies = list(task.prompt), []
    for c in calls:
        messages.append(Message(role="assistant", content="", tool_calls=[c]))
        replies.append(env.step(task, c, messages))
        messages.append(Message(role="tool", tool_call_id=c.id, content=replies[-1]))
    return messages, replies


def trajectory(task, messages) -> Trajectory:
    done = [*messages, Message(role="assistant", content="done")]
    return Trajectory(
        task_id=task.id, policy="test", messages=done, provenance=Provenance(provider="test", model="t", created=0.0)
    )


def only_task(env):
    (task,) = env.all_tasks
    return task


def test_the_reference_solves_and_an_empty_patch_does_not(env):
    task = only_task(env)
    reference = env.reference(task, None)
    assert env.verify(task, reference).reward == 1.0
    assert "1 passed" in reference.messages[-2].content
    assert env.verify(task, trajectory(task, list(task.prompt))).reward == 0.0


def test_tools_see_the_broken_tree_and_the_episodes_own_writes(env):
    task = only_task(env)
    messages, replies = conversation(
        env,
        task,
        call("list_files", 0),
        call("read_file", 1, path="calc/core.py"),
        call("edit_file", 2, path="calc/core.py", old="return", new="x"),
        call(
            "edit_file",
            3,
            path="calc/core.py",
            old="        return low\n    return value",
            new="        return high\n    return value",
        ),
        call(
            "run",
            4,
            command="git status --short && git log --oneline | wc -l && python -m pytest -q -p no:cacheprovider 2>&1 | tail -n 1",
        ),
        call("read_file", 5, path="../etc/passwd"),
        call("write_file", 6, path=".git/config", content="x"),
    )
    assert "calc/core.py" in replies[0].splitlines() and "tests/test_core.py" in replies[0].splitlines()
    assert replies[1] == BROKEN["calc/core.py"]
    assert "occurs" in replies[2] and replies[3].startswith("edit_file:")
    assert replies[4].startswith("exit code 0") and "M calc/core.py" in replies[4] and "6 passed" in replies[4]
    assert "\n1\n" in replies[4]  # one commit: nothing of the fix in the history
    assert replies[5].startswith("error") and replies[6].startswith("error")
    assert env.verify(task, trajectory(task, messages)).reward == 1.0
    # Another episode starts from the broken tree again: state lives in the conversation only.
    _, fresh = conversation(env, task, call("read_file", 0, path="calc/core.py"))
    assert fresh[0] == BROKEN["calc/core.py"]


def test_test_edits_through_the_tools_are_not_graded(env):
    task = only_task(env)
    passing = "def test_clamp_high():\n    pass\n"
    messages, _ = conversation(
        env,
        task,
        call("write_file", 0, path="tests/test_core.py", content=passing),
        call("write_file", 1, path="conftest.py", content="import pytest\n"),
    )
    verdict = env.verify(task, trajectory(task, messages))
    assert verdict.reward == 0.0 and verdict.details["changed_files"] == []


def test_the_sandbox_has_no_network(env):
    task = only_task(env)
    command = "python -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\" 2>&1 | tail -n 1"
    _, replies = conversation(env, task, call("run", 0, command=command))
    assert "unreachable" in replies[0] or "Errno" in replies[0]


def test_made_from_a_recipe_and_bad_options_are_one_error(env, tmp_path, sandbox_python):
    made = make_env(EnvConfig(name="swe", options={"tasks_dir": env.options.tasks_dir, "python": sandbox_python.host}))
    assert [t.id for t in made.all_tasks] == ["swe/calc/000"]
    with pytest.raises(WarmstartError, match="not a directory"):
        make_env(EnvConfig(name="swe", options={"tasks_dir": str(tmp_path / "none")}))
    with pytest.raises(WarmstartError, match="pytest"):
        make_env(EnvConfig(name="swe", options={"tasks_dir": env.options.tasks_dir, "python": "/usr/bin/python3"}))


def test_fix_edit_is_a_unique_small_replacement():
    broken = "a = 1\nb = 2\na = 1\nc = 3\n"
    fixed = "a = 1\nb = 2\na = 0\nc = 3\n"
    old, new = fix_edit(broken, fixed)
    assert broken.count(old) == 1 and broken.replace(old, new) == fixed
    old, new = fix_edit("x\ny\n", "x\nif q:\n    z\ny\n")  # a removed branch put back
    assert "x\ny\n".replace(old, new) == "x\nif q:\n    z\ny\n"


# Arguments a model can emit that no working copy can hold: each is an `error:` reply, changes nothing,
# and neither the next `run` nor the grading raises (each had raised out of step or verify, ending a stage).
ODD_CALLS = [
    ("write_file", {"path": "calc", "content": "x"}),  # a directory
    ("write_file", {"path": "calc/core.py/x.py", "content": "x"}),  # under a file
    ("write_file", {"path": "calc/a\u0000.py", "content": "x = 1"}),
    ("write_file", {"path": "calc/" + "a" * 300 + ".py", "content": "x = 1"}),
    ("write_file", {"path": "calc/\ud800.py", "content": "x = 1"}),
    ("write_file", {"path": "calc/core.py", "content": 'x = "\ud800"'}),
    ("edit_file", {"path": "calc/core.py", "old": "def both", "new": "def \ud800both"}),
    ("read_file", {"path": "calc/a\u0000.py"}),
    ("run", {"command": "echo a\u0000b"}),
    ("run", {"command": "echo \ud800"}),
]


def test_arguments_no_file_system_takes_are_errors_not_exceptions(env):
    task = only_task(env)
    calls = [
        ToolCall(id=f"c{turn}", function=ToolFunction(name=name, arguments=json.dumps(arguments)))
        for turn, (name, arguments) in enumerate(ODD_CALLS)
    ]
    messages, replies = conversation(env, task, *calls, call("run", len(calls), command="git status --short"))
    assert all(reply.startswith("error: ") for reply in replies[:-1]), replies
    assert all(reply.encode() for reply in replies)  # every reply can be written out
    assert replies[-1] == "exit code 0\n"  # nothing was written: the working copy is the broken tree
    verdict = env.verify(task, trajectory(task, messages))
    assert verdict.reward == 0.0 and verdict.details["changed_files"] == []
    assert len(verdict.details["refused_calls"]) == 7  # the writes and the edit


def test_two_task_sets_of_one_name_or_one_task_id_are_refused(tmp_path, sandbox_python):
    record = {"id": "calc/000", "repo": "calc", "file": "calc/core.py", "broken": BROKEN["calc/core.py"]}
    record |= {"problem": "p", "fail_to_pass": FAIL_TO_PASS, "pass_to_pass": PASS_TO_PASS}
    calc = {"name": "calc", "python": sandbox_python.host}
    write_task_set(tmp_path / "names" / "v1", calc, FILES, [record], force=False)
    write_task_set(tmp_path / "names" / "v2", calc, FILES, [{**record, "id": "calc/001"}], force=False)
    with pytest.raises(WarmstartError, match=r"names/v1 and .*names/v2 are both task sets named 'calc'"):
        SweEnv(SweOptions(tasks_dir=str(tmp_path / "names")))
    write_task_set(tmp_path / "ids" / "a", calc, FILES, [record], force=False)
    write_task_set(tmp_path / "ids" / "b", {**calc, "name": "calc2"}, FILES, [{**record, "repo": "calc2"}], force=False)
    with pytest.raises(WarmstartError, match=r"ids/a and .*ids/b both hold task 'calc/000'"):
        SweEnv(SweOptions(tasks_dir=str(tmp_path / "ids")))


# A folder of task sets mined with different interpreters: the second set's tests import a module only its
# own interpreter has (a package's dependency installed in its venv), as a set of another package would.
MARKER_TEST = "import only_in_b\n\n\ndef test_marker():\n    assert only_in_b.WHERE == 'b'\n"


@pytest.fixture(scope="module")
def python_b():
    """A second sandbox interpreter (swe_fixture.make_sandbox_venv) with `only_in_b` in its site-packages.
    Not under tmp_path: the sandbox runs as `nobody`."""
    root = Path(tempfile.mkdtemp(prefix="warmstart-swe-venv-b-"))
    os.chmod(root, 0o755)
    try:
        python = make_sandbox_venv(root / "venv")
        (site,) = (root / "venv").glob("lib/python3*/site-packages")
        (site / "only_in_b.py").write_text("WHERE = 'b'\n")
        yield str(python)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_two_sets(root: Path, python_a: str, python_b: str) -> None:
    """`a`: the tiny package, mined with `python_a`; `b`: the same with a test needing `only_in_b`."""
    record = {"id": "calc/000", "repo": "calc", "file": "calc/core.py", "broken": BROKEN["calc/core.py"]}
    record |= {"problem": "p", "fail_to_pass": FAIL_TO_PASS, "pass_to_pass": PASS_TO_PASS}
    write_task_set(root / "a", {"name": "calc", "python": python_a}, FILES, [record], force=False)
    files_b = {**FILES, "tests/test_marker.py": MARKER_TEST}
    record_b = {**record, "id": "calcb/000", "repo": "calcb", "pass_to_pass": [*PASS_TO_PASS, MARKER_ID]}
    write_task_set(root / "b", {"name": "calcb", "python": python_b}, files_b, [record_b], force=False)


MARKER_ID = "tests/test_marker.py::test_marker"
WHICH = "python -c 'import only_in_b; print(\"marker\", only_in_b.WHERE)' 2>&1 | tail -n 1"


def test_each_task_set_is_graded_and_run_with_its_own_interpreter(tmp_path, sandbox_python, python_b, monkeypatch):
    """Every set had been graded and run with the first set's interpreter: set b's reference scored 0 (its
    marker test could not import), and its `run` commands ran set a's Python."""
    checked = []
    check = env_module.check_pytest
    monkeypatch.setattr(env_module, "check_pytest", lambda python, given: checked.append(given) or check(python, given))
    write_two_sets(tmp_path / "sets", sandbox_python.host, python_b)
    write_task_set(  # a third set of the first interpreter: each distinct interpreter is checked once
        tmp_path / "sets" / "c",
        {"name": "calcc", "python": sandbox_python.host},
        FILES,
        [{**read_task_set(tmp_path / "sets" / "a").tasks[0], "id": "calcc/000", "repo": "calcc"}],
        force=False,
    )
    env = SweEnv(SweOptions(tasks_dir=str(tmp_path / "sets"), wall_s=60, tool_wall_s=60))
    tasks = {t.hidden["repo"]: t for t in env.all_tasks}
    for name, task in tasks.items():
        assert env.verify(task, env.reference(task, None)).reward == 1.0, name
        assert env.verify(task, trajectory(task, list(task.prompt))).reward == 0.0, name
    _, (in_b,) = conversation(env, tasks["calcb"], call("run", 0, command=WHICH))
    _, (in_a,) = conversation(env, tasks["calc"], call("run", 0, command=WHICH))
    assert "marker b" in in_b, in_b
    assert "No module named 'only_in_b'" in in_a, in_a
    assert sorted(checked) == sorted([sandbox_python.host, python_b])  # once each, though three sets


def test_a_sets_missing_interpreter_is_one_error_naming_the_set(tmp_path, sandbox_python, python_b):
    write_two_sets(tmp_path / "sets", sandbox_python.host, "/nonexistent/venv/bin/python")
    with pytest.raises(WarmstartError) as raised:
        SweEnv(SweOptions(tasks_dir=str(tmp_path / "sets")))
    message = str(raised.value)
    assert "task set 'calcb'" in message and "/nonexistent/venv/bin/python" in message and "\n" not in message
    assert str(tmp_path / "sets" / "b") in message
    # env.options.python overrides every set's: the missing one is not needed, and it grades every set.
    env = SweEnv(SweOptions(tasks_dir=str(tmp_path / "sets"), python=python_b))
    for task in env.all_tasks:
        assert env.verify(task, env.reference(task, None)).reward == 1.0, task.id


def test_writes_into_the_working_copy_are_capped(env):
    """The working copy had been the host's own directory, bound writable: a command wrote 287 MB to the
    host's disk in 0.37 s. It is a capped tmpfs now (the sandbox's tmpfs_bytes beyond the repository)."""
    task = only_task(env)
    command = (
        "for i in $(seq 1 12); do head -c 8000000 /dev/zero > blob$i || break; done; "
        "echo blobs $(ls blob* | wc -l); rm blob*; echo x >> README.md; git status --short"
    )
    _, (reply,) = conversation(env, task, call("run", 0, command=command))
    assert "No space left on device" in reply, reply
    blobs = int(reply.split("blobs ")[1].split()[0])
    assert blobs <= 9, reply  # 64 MB of room: 8 blobs, and the one cut short
    assert "\n M README.md\n" in reply  # the room came back: still the working copy, a git repository
