"""Environment plugins (envs/plugins.py): named `module.path:ClassName` or by an entry point of group
`warmstart.environments`; every mistake in one is one `error:` line, and a `verify` that raises is an
infra error (masked and counted), never a reward of 0.

The plugin classes here are module-level: verification workers unpickle them by importing this module.
Entry points come from a fake dist-info directory on sys.path, so no test installs anything."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from helpers import TINY, small_recipe
from warmstart.config import BUILT_IN_ENVS, load_recipe
from warmstart.envs import BUILT_IN, make_env
from warmstart.envs.plugins import PluginEnvironment, resolve
from warmstart.envs.verification import Verifier, verify_all
from warmstart.errors import WarmstartError
from warmstart.lm.toolcalls import tool_results
from warmstart.runs.jsonl import read_records
from warmstart.stages import curate, evaluate, generate
from warmstart.types import Message, Provenance, Task, ToolCall, ToolFunction, Trajectory, Verdict

HERE = __name__  # this module as the plugins' `module.path`, however pytest imported it
EXAMPLE = Path(__file__).parents[2] / "examples" / "warmstart-wordcount"


class Echo:
    """A minimal plugin: say the task's number. No Options, no tools, no verify_workers (the defaults)."""

    name = "echo"

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        first = 1000 if split == "eval" else 0  # disjoint splits
        return [
            Task(
                id=f"echo/{i}",
                env=self.name,
                prompt=[Message(role="user", content=f"Say {i}.")],
                hidden={"n": i},
                split=split,
            )
            for i in range(first, first + n)
        ]

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        passed = trajectory.messages[-1].content == str(task.hidden["n"])
        return Verdict(reward=float(passed), passed=passed)

    def reference(self, task: Task, rng) -> Trajectory:
        answer = Message(role="assistant", content=str(task.hidden["n"]))
        provenance = Provenance(provider="reference", model="echo", created=time.time())
        return Trajectory(task_id=task.id, policy="reference", messages=[*task.prompt, answer], provenance=provenance)

    def step(self, task, call, messages) -> str:
        raise ValueError("echo has no tools")


class EchoWithOptions(Echo):
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        loud: bool = False

    def __init__(self, options: Options):
        self.options = options


class RaisesOnOdd(Echo):
    """A plugin with a bug in its verifier, hit on every odd task."""

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        if task.hidden["n"] % 2:
            raise KeyError("a bug in verify")
        return super().verify(task, trajectory)


class RaisesOnOddInWorkers(RaisesOnOdd):
    verify_workers = 2


class ReturnsAFloat(Echo):
    def verify(self, task: Task, trajectory: Trajectory) -> float:
        return 1.0


class NaNReward(Echo):
    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        return Verdict(reward=float("nan"), passed=True)


class InfiniteReward(Echo):
    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        return Verdict(reward=float("inf"), passed=True)


class ExitsInVerify(Echo):
    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        raise SystemExit(3)


class NumpyDetails(Echo):
    verify_workers = 2

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        import numpy

        return Verdict(reward=1.0, passed=True, details={"n": numpy.int64(task.hidden["n"])})


class FunctionInDetails(Echo):
    verify_workers = 2

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        return Verdict(reward=1.0, passed=True, details={"check": lambda: True})


class ChangesItsTask(Echo):
    """A verify that changes the task it was given: the next sample of the task would be judged against 1 more."""

    verify_workers = 2

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        verdict = super().verify(task, trajectory)
        task.hidden["n"] += 1
        return verdict


class EndsItsWorker(Echo):
    verify_workers = 2

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        os._exit(3)


class WithATool(Echo):
    tools = ({"type": "function", "function": {"name": "say", "parameters": {"type": "object", "properties": {}}}},)

    def step(self, task, call, messages) -> str:
        raise KeyError("a bug in step")


class StepReturnsAnInt(WithATool):
    def step(self, task, call, messages) -> int:
        return 42


class Unpicklable(Echo):
    verify_workers = 2

    def __init__(self):
        self.numbers = (n for n in range(3))  # a generator: pickle refuses it


class HangsOnOdd(Echo):
    """A verifier that never returns on odd tasks (a request to a server that never answers)."""

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        if task.hidden["n"] % 2:
            time.sleep(3600)
        return super().verify(task, trajectory)


class UnpicklableInProcess(Echo):
    def __init__(self):
        self.numbers = (n for n in range(3))  # a generator: pickle refuses it


class NoVerify:
    name = "no-verify"

    def tasks(self, split, n, seed):
        return []


class BadAttributes(Echo):
    name = ""
    verify_workers = 0


class ConstructorRaises(Echo):
    def __init__(self):
        raise RuntimeError("no config file")


class TasksAsDicts(Echo):
    def tasks(self, split, n, seed):
        return [task.model_dump() for task in super().tasks(split, n, seed)]


class TasksNone(Echo):
    def tasks(self, split, n, seed):
        return None


class TasksRaise(Echo):
    def tasks(self, split, n, seed):
        raise KeyError("a bug in tasks")


class TooFewTasks(Echo):
    def tasks(self, split, n, seed):
        return super().tasks(split, n, seed)[:-1]


class TasksValueError(Echo):
    def tasks(self, split, n, seed):
        return [int("seven")]


class TasksInvalid(Echo):
    def tasks(self, split, n, seed):
        return [Task(id="echo/0", env="echo", prompt=[], hidden={}, split=split)]


class TasksOfAnotherEnv(Echo):
    def tasks(self, split, n, seed):
        return [t.model_copy(update={"env": "arithmetic"}) for t in super().tasks(split, n, seed)]


class TasksOfTheOtherSplit(Echo):
    def tasks(self, split, n, seed):
        return super().tasks("eval" if split == "train" else "train", n, seed)


class ReferenceRaises(Echo):
    def reference(self, task, rng):
        raise IndexError("a bug in reference")


class ReferenceNone(Echo):
    def reference(self, task, rng):
        return None


class ReferenceOfAnotherTask(Echo):
    def reference(self, task, rng):
        return super().reference(task, rng).model_copy(update={"task_id": "echo/other"})


def env_config(name: str, **options):
    return load_recipe(
        None, [f"env.name='{name}'", *[f"env.options.{k}={json.dumps(v)}" for k, v in options.items()]]
    ).env


def answered(task: Task, content: str) -> Trajectory:
    reply = Message(role="assistant", content=content)
    return Trajectory(
        task_id=task.id,
        policy="test",
        messages=[*task.prompt, reply],
        provenance=Provenance(provider="test", model="m", created=0.0),
    )


@pytest.fixture()
def installed_example(tmp_path, monkeypatch):
    """The example package as if installed: its source and a dist-info naming its entry points (copied from
    its pyproject.toml) on sys.path, for this test only. The entry point's name is returned."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    points = project["entry-points"]["warmstart.environments"]
    dist_info = tmp_path / "site" / "warmstart_wordcount-0.1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: warmstart-wordcount\nVersion: 0.1.0\n")
    lines = [f"{name} = {value}" for name, value in points.items()]
    (dist_info / "entry_points.txt").write_text("[warmstart.environments]\n" + "\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    yield next(iter(points))
    sys.modules.pop("warmstart_wordcount", None)


def test_the_recipe_knows_the_same_built_ins_as_make_env():
    assert set(BUILT_IN_ENVS) == set(BUILT_IN)


def test_a_module_path_resolves_to_the_class_and_its_options_model():
    assert resolve(f"{HERE}:EchoWithOptions") == (EchoWithOptions, EchoWithOptions.Options)
    assert resolve(f"{HERE}:Echo") == (Echo, None)
    env = make_env(env_config(f"{HERE}:EchoWithOptions", loud=True))
    assert isinstance(env, PluginEnvironment) and isinstance(env.env, EchoWithOptions)
    assert env.env.options.loud is True
    assert (env.name, env.tools, env.verify_workers) == ("echo", (), 1)  # the defaults of what Echo lacks
    assert [t.id for t in env.tasks("train", 2, 0)] == ["echo/0", "echo/1"]


def test_the_recipe_keeps_the_name_as_written():
    name = f"{HERE}:Echo"
    assert load_recipe(None, [f"env.name='{name}'"]).model_dump()["env"]["name"] == name


def test_an_entry_point_name_resolves_through_installed_metadata(installed_example):
    env = make_env(env_config(installed_example, max_words=3))
    assert type(env.env).__module__ == "warmstart_wordcount" and env.name == "wordcount"
    tasks = env.tasks("eval", 5, 0)
    assert all(len(t.prompt[0].content.split('"')[1].split()) <= 3 for t in tasks)
    verdicts = verify_all(env, [(t, env.reference(t, random.Random(0))) for t in tasks])
    assert [v.passed for v in verdicts] == [True] * 5


def test_an_unknown_name_lists_the_built_ins_and_installed_entry_points(installed_example):
    with pytest.raises(WarmstartError) as error:
        load_recipe(None, ["env.name='wordcout'"])
    message = str(error.value)
    assert "unknown environment 'wordcout'" in message and "\n" not in message
    assert "arithmetic" in message and f"installed: {installed_example}" in message


@pytest.mark.parametrize(
    "name, options, fragments",
    [
        (f"{HERE}:NoVerify", {}, ["NoVerify is not a warmstart environment", "verify()", "reference()", "step()"]),
        (f"{HERE}:BadAttributes", {}, ["name (a non-empty string)", "verify_workers (an integer >= 1)"]),
        (f"{HERE}:Missing", {}, [f"module {HERE} has no Missing"]),
        (f"{HERE}:ConstructorRaises", {}, ["ConstructorRaises() raised RuntimeError: no config file"]),
        (f"{HERE}:Echo", {"loud": True}, ["env.options", "takes no options"]),
        (f"{HERE}:EchoWithOptions", {"lowd": True}, ["unknown key env.options.lowd"]),
        (f"{HERE}:HERE", {}, ["is not a class"]),
        (f"{HERE}:Unpicklable", {}, ["verify_workers = 2", "cannot be pickled (TypeError: cannot pickle 'generator'"]),
    ],
    ids=[
        "protocol-incomplete",
        "bad-attributes",
        "no-such-class",
        "constructor-raises",
        "options-without-model",
        "option-typo",
        "not-a-class",
        "unpicklable-for-workers",
    ],
)
def test_a_bad_plugin_is_one_line_naming_what_is_wrong(name, options, fragments):
    with pytest.raises(WarmstartError) as error:
        make_env(env_config(name, **options))
    assert "\n" not in str(error.value)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_a_verify_that_raises_or_returns_no_verdict_is_an_infra_error_not_a_zero():
    env = make_env(env_config(f"{HERE}:RaisesOnOdd"))
    odd, even = env.tasks("train", 2, 0)[::-1]
    assert env.verify(odd, answered(odd, "1")) == Verdict(
        reward=0.0, passed=False, infra_error="echo.verify raised KeyError: 'a bug in verify'"
    )
    assert env.verify(even, answered(even, "0")).passed
    returns_float = make_env(env_config(f"{HERE}:ReturnsAFloat"))
    assert returns_float.verify(even, answered(even, "0")).infra_error == "echo.verify returned float, not a Verdict"


@pytest.mark.parametrize(
    "plugin, infra_error",
    [
        ("NaNReward", "echo.verify returned a reward of nan, not a finite number"),
        ("InfiniteReward", "echo.verify returned a reward of inf, not a finite number"),
        ("ExitsInVerify", "echo.verify raised SystemExit: 3"),
    ],
)
def test_a_verify_that_returns_no_finite_reward_or_exits_is_an_infra_error(plugin, infra_error):
    # NaN reaches JSON as null (no stage reads that record back) and GRPO's group mean; sys.exit() ended
    # warmstart with the plugin's exit code and no error line.
    env = make_env(env_config(f"{HERE}:{plugin}"))
    task = env.tasks("train", 1, 0)[0]
    assert env.verify(task, answered(task, "0")) == Verdict(reward=0.0, passed=False, infra_error=infra_error)


@pytest.mark.parametrize(
    "plugin, fragment",
    [
        ("WithATool", "echo.step raised KeyError: 'a bug in step' on tool 'say' of task echo/0"),
        ("StepReturnsAnInt", "echo.step returned int, not a str, on tool 'say' of task echo/0"),
    ],
)
def test_a_step_that_raises_or_returns_no_text_is_one_line_naming_the_tool(plugin, fragment):
    env = make_env(env_config(f"{HERE}:{plugin}"))
    task = env.tasks("train", 1, 0)[0]
    call = ToolCall(id="c1", function=ToolFunction(name="say", arguments="{}"))
    with pytest.raises(WarmstartError) as error:
        tool_results(env, task, [*task.prompt, Message(role="assistant", tool_calls=[call])])
    assert str(error.value) == fragment


@pytest.mark.parametrize(
    "plugin, fragment",
    [("NumpyDetails", "Unable to serialize unknown type: <class 'numpy.int64'>"), ("FunctionInDetails", "")],
)
def test_a_verdict_that_cannot_be_recorded_is_that_samples_infra_error(plugin, fragment):
    """A numpy scalar in `details` had stopped generate with a traceback as the verdict was written; a function
    had killed the verification worker as it sent the verdict back ("killed from outside, or out of memory")."""
    env = make_env(env_config(f"{HERE}:{plugin}"))
    tasks = env.tasks("train", 4, 0)
    for verdicts in (
        [env.verify(t, answered(t, str(t.hidden["n"]))) for t in tasks],  # in this process
        verify_all(env, [(t, answered(t, str(t.hidden["n"]))) for t in tasks]),  # in verification workers
    ):
        assert all(
            v.infra_error.startswith("echo.verify returned a Verdict that cannot be recorded (") for v in verdicts
        )
        assert all(fragment in v.infra_error for v in verdicts)


def test_a_verify_that_changes_its_task_changes_no_other_samples_verdict():
    """Its change had carried over to the task's later samples in the same worker's chunk (not across chunks):
    verdicts depended on how samples were chunked (review 81)."""
    env = make_env(env_config(f"{HERE}:ChangesItsTask"))
    task = env.tasks("train", 1, 0)[0]
    pairs = [(task, answered(task, "0").model_copy(update={"sample_index": i})) for i in range(4)]
    assert [v.passed for v in verify_all(env, pairs)] == [True] * 4
    assert [env.verify(*pair).passed for pair in pairs] == [True] * 4
    assert task.hidden["n"] == 0


def test_a_verify_that_ends_its_worker_process_is_said_to_have_done_so():
    env = make_env(env_config(f"{HERE}:EndsItsWorker"))
    tasks = env.tasks("train", 2, 0)
    with pytest.raises(WarmstartError, match=r"exit code 3\), twice .* \(it ended itself: the environment's verify"):
        verify_all(env, [(t, answered(t, "0")) for t in tasks])


def test_a_verify_that_raises_in_verification_workers_is_an_infra_error_too():
    env = make_env(env_config(f"{HERE}:RaisesOnOddInWorkers"))
    tasks = env.tasks("train", 6, 0)
    verdicts = verify_all(env, [(t, answered(t, str(t.hidden["n"]))) for t in tasks])
    assert [v.infra_error is not None for v in verdicts] == [False, True] * 3
    assert [v.passed for v in verdicts] == [True, False] * 3


def test_a_verify_that_never_returns_is_an_infra_error_after_env_verify_timeout():
    env = make_env(env_config(f"{HERE}:HangsOnOdd"))  # verify_workers = 1: one worker, which can be stopped
    assert env.verifies_in_worker
    tasks = env.tasks("train", 4, 0)
    started = time.monotonic()
    with Verifier(env, timeout=1.5) as verifier:
        odd = tasks[1]
        (alone,) = verifier.verify_all([(odd, answered(odd, "1"))])  # one pair is bounded too
        verdicts = verifier.verify_all([(t, answered(t, str(t.hidden["n"]))) for t in tasks])
    expected = "echo.verify did not return within 1.5 s (env.verify_timeout); its worker process was stopped"
    assert alone.infra_error == expected
    assert [v.infra_error for v in verdicts] == [None, expected, None, expected]
    assert [v.passed for v in verdicts] == [True, False, True, False]
    assert time.monotonic() - started < 60


def test_a_plugin_that_cannot_be_pickled_verifies_in_this_process_and_says_so(caplog):
    with caplog.at_level("WARNING", logger="warmstart"):
        env = make_env(env_config(f"{HERE}:UnpicklableInProcess"))
    assert not env.verifies_in_worker
    (warning,) = [r.getMessage() for r in caplog.records if "env.verify_timeout" in r.getMessage()]
    assert "verify runs in this process" in warning and "cannot pickle 'generator'" in warning
    task = env.tasks("train", 1, 0)[0]
    with Verifier(env, timeout=1.0) as verifier:
        (verdict,) = verifier.verify_all([(task, answered(task, "0"))])
    assert verdict.passed


def test_generate_goes_on_past_a_verify_that_never_returns(tmp_path):
    recipe = small_recipe(tmp_path / "run", f"env.name='{HERE}:HangsOnOdd'", "env.verify_timeout=1", train=4, eval_=2)
    generate.run(recipe)
    records = list(read_records(tmp_path / "run" / "trajectories" / "teacher.jsonl", Trajectory))
    assert len(records) == 4
    stuck = [r for r in records if r.verdict.infra_error]
    assert sorted(r.task_id for r in stuck) == ["echo/1", "echo/3"]
    assert all("did not return within 1 s" in r.verdict.infra_error for r in stuck)


def test_infra_errors_of_a_plugin_are_dropped_by_curate_and_counted_by_eval(tmp_path):
    recipe = small_recipe(
        tmp_path / "run",
        f"env.name='{HERE}:RaisesOnOdd'",
        "eval.policies={teacher='teacher'}",
        "eval.k=1",
        "eval.max_error_rate=0.5",  # half the samples: at the default 0.05 eval stops (tests/stages/test_eval.py)
        train=6,
        eval_=4,
    )
    trajectories = read_records(generate.run(recipe), Trajectory)
    assert [t.verdict.infra_error is not None for t in trajectories] == [False, True] * 3
    curate.run(recipe)
    dropped = json.loads((tmp_path / "run" / "curated" / "train.dropped.json").read_text())
    assert "verifier infra error" in json.dumps(dropped)
    results = json.loads(evaluate.run(recipe).read_text())["policies"]["teacher"]
    assert results["infra_errors"] == 2 and results["pass@1"] == 1.0  # two of four masked, the rest all right


# --- through the command line ------------------------------------------------------------------------


def warmstart(*args: str, pythonpath: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "warmstart.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


BROKEN_PLUGINS = """
import json_that_is_not_installed_anywhere
"""

INCOMPLETE_PLUGIN = """
class Incomplete:
    name = "incomplete"
    def tasks(self, split, n, seed):
        return []
"""


@pytest.mark.parametrize(
    "name, fragments",
    [
        ("broken_plugin:Env", ["importing broken_plugin raised ModuleNotFoundError", "json_that_is_not"]),
        ("incomplete_plugin:Incomplete", ["Incomplete is not a warmstart environment", "verify()"]),
        ("not_a_module_anywhere:Env", ["importing not_a_module_anywhere raised ModuleNotFoundError"]),
        ("no-such-environment", ["unknown environment 'no-such-environment'", "arithmetic"]),
        ("broken_plugin:", ["env.name", "is not module.path:ClassName"]),
    ],
    ids=["import-fails", "protocol-incomplete", "no-such-module", "unknown-name", "malformed"],
)
def test_cli_a_bad_plugin_is_one_error_line_and_writes_nothing(tmp_path, name, fragments):
    (tmp_path / "broken_plugin.py").write_text(BROKEN_PLUGINS)
    (tmp_path / "incomplete_plugin.py").write_text(INCOMPLETE_PLUGIN)
    (tmp_path / "recipe.toml").write_text("")  # every default but the name
    run_dir = tmp_path / "run"
    result = warmstart(
        "generate", str(tmp_path / "recipe.toml"), "--set", f"env.name='{name}'", "--set", f"run.dir='{run_dir}'",
        pythonpath=tmp_path, cwd=tmp_path,
    )  # fmt: skip
    assert_one_error_line(result, *fragments)
    # A name the recipe shows wrong, or one found wrong on import, stops before the run directory exists.
    assert not run_dir.exists()


def test_cli_the_example_plugin_runs_generate_curate_sft_eval(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        "env.name='warmstart_wordcount:WordCount'",  # by module path: nothing installed
        f"run.dir='{run_dir}'",
        "tasks.train=40",
        "tasks.eval=10",
        "sft.steps=5",
        "eval.k=1",
        "eval.max_new_tokens=16",
        *TINY,
    ]
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = warmstart("run", str(EXAMPLE / "wordcount.toml"), *sets, pythonpath=EXAMPLE / "src", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads((run_dir / "eval" / "results.json").read_text())["policies"]
    assert set(results) == {"base", "student", "teacher"}
    assert len(results["student"]["per_task"]) == 10 and results["student"]["infra_errors"] == 0
    assert results["teacher"]["pass@1"] == 1.0  # the example's reference solver is always right
    assert (run_dir / "models" / "student").is_dir()


@pytest.mark.parametrize(
    "plugin, fragments",
    [
        ("TasksAsDicts", ["echo.tasks('train', 3, 0) returned a dict among its tasks, not a Task record"]),
        ("TasksNone", ["returned NoneType, not a list of Task records"]),
        ("TasksRaise", ["echo.tasks raised KeyError: 'a bug in tasks'"]),
        ("TooFewTasks", ["returned 2 tasks, not the 3 asked"]),
        # a ValueError had read as the count's fault (`tasks.train: invalid literal ...`) without the plugin's name,
        # and a Task built wrong as pydantic's four lines (review 81)
        ("TasksValueError", ["tasks.train: echo.tasks: invalid literal for int() with base 10: 'seven'"]),
        ("TasksInvalid", ["echo.tasks built an invalid Task (prompt: "]),
        ("TasksOfAnotherEnv", ["returned task echo/0 of env 'arithmetic'"]),
        ("TasksOfTheOtherSplit", ["split 'eval' (asked: env 'echo', split 'train')"]),
        ("ReferenceRaises", ["echo.reference raised IndexError: a bug in reference on task echo/0"]),
        ("ReferenceNone", ["echo.reference returned NoneType, not a Trajectory (task echo/0)"]),
        ("ReferenceOfAnotherTask", ["echo.reference returned a trajectory of task 'echo/other' for task echo/0"]),
    ],
)
def test_a_plugins_tasks_and_reference_are_checked_and_a_bug_is_one_line(tmp_path, plugin, fragments):
    recipe = small_recipe(tmp_path / "run", f"env.name='{HERE}:{plugin}'", train=3, eval_=2)
    with pytest.raises(WarmstartError) as error:
        generate.run(recipe)
    assert "\n" not in str(error.value)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)
    if plugin.startswith(("Tasks", "TooFew")):  # refused before the stage claims anything in the run directory
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]
