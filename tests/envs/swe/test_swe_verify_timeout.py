"""A grading stopped at env.verify_timeout (its worker killed) leaves no temporary directory behind: the
worker's temporary files all lie under one directory the parent removes once the worker has ended (the
grading's copy of the repository and its results directory had stayed in /tmp for good)."""

from __future__ import annotations

import glob
import json
import tempfile
import time

from swe_fixture import BROKEN, FAIL_TO_PASS, FILES, PASS_TO_PASS

from warmstart.envs.swe.env import SweEnv, SweOptions
from warmstart.envs.swe.taskset import write_task_set
from warmstart.envs.verification import Verifier
from warmstart.types import Message, Provenance, ToolCall, ToolFunction, Trajectory


def test_a_grading_killed_at_the_timeout_leaves_no_directory(tmp_path, sandbox_python):
    record = {
        "id": "calc/000", "repo": "calc", "file": "calc/core.py", "broken": BROKEN["calc/core.py"],
        "problem": "calc: 1 test fails.", "fail_to_pass": FAIL_TO_PASS, "pass_to_pass": PASS_TO_PASS,
    }  # fmt: skip
    write_task_set(tmp_path / "set", {"name": "calc", "python": sandbox_python.host}, FILES, [record], force=False)
    env = SweEnv(SweOptions(tasks_dir=str(tmp_path / "set"), wall_s=30))
    task = env.all_tasks[0]
    content = FILES["calc/core.py"] + "\nwhile True:\n    pass\n"  # the grading never returns
    arguments = json.dumps({"path": "calc/core.py", "content": content})
    hang = ToolCall(id="c1", function=ToolFunction(name="write_file", arguments=arguments))
    messages = [*task.prompt, Message(role="assistant", content="", tool_calls=[hang])]
    messages += [Message(role="tool", tool_call_id="c1", content="ok"), Message(role="assistant", content="done")]
    provenance = Provenance(provider="x", model="x", created=time.time())
    trajectory = Trajectory(task_id=task.id, policy="x", messages=messages, provenance=provenance)
    pattern = tempfile.gettempdir() + "/warmstart-*"
    before = set(glob.glob(pattern))
    with Verifier(env, timeout=4) as verifier:
        verdicts = verifier.verify_all([(task, trajectory)] * 2)  # two: one alone is verified in-process
    assert all("did not return within 4 s" in (v.infra_error or "") for v in verdicts), verdicts
    assert set(glob.glob(pattern)) - before == set()
