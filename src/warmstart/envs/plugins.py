"""Environments from outside warmstart: `env.name = "my_package.module:MyEnv"`, or the name of an entry
point in group `warmstart.environments` (an installed package's `[project.entry-points."warmstart.environments"]`).

A plugin is a class with the protocol of `base.Environment`: the methods `tasks`, `verify`, `reference` and
`step`, and a `name`; `tools` defaults to () (single turn) and `verify_workers` to 1 (verify in this
process). Its options model is its `Options` attribute (a pydantic model), which gets `env.options` and
is passed to the constructor; without one it takes no options and is constructed with no arguments.

Whatever goes wrong in loading it (the import, a missing method, a bad `Options`, the constructor) is one
`WarmstartError` line, and an exception from its `verify` is the verdict's `infra_error` (masked and
counted, never a reward of 0): see `PluginEnvironment`. docs/environments.md, "Write your own environment".
"""

from __future__ import annotations

import importlib
import logging
import math
import pickle
from importlib.metadata import entry_points

from pydantic import BaseModel, ValidationError

from ..config import ENV_ENTRY_POINT_GROUP, EnvConfig, describe_validation_error, unknown_env_message
from ..errors import WarmstartError, first_line
from ..runs.jsonl import why
from ..types import Message, Task, ToolCall, Trajectory, Verdict

log = logging.getLogger(__name__)

METHODS = ("tasks", "verify", "reference", "step")

# What a plugin's method may raise that is its own bug: every Exception, and SystemExit (a `sys.exit()` left
# in a verifier would otherwise end warmstart silently, with the plugin's exit code and no error line).
PLUGIN_BUGS = (Exception, SystemExit)


def make_plugin_env(config: EnvConfig) -> PluginEnvironment:
    where = f"env.name {config.name!r}"
    env_class, options_model = resolve(config.name)
    if options_model is None and config.options:
        raise WarmstartError(
            f"env.options: {config.name} takes no options (its class has no Options model), got {', '.join(config.options)}"
        )
    try:
        env = env_class(validated_options(config, options_model)) if options_model else env_class()
    except WarmstartError:
        raise
    except PLUGIN_BUGS as exc:  # noqa: BLE001 - a bug in the plugin, said in one line naming it
        raise WarmstartError(f"{where}: {env_class.__qualname__}() raised {describe(exc)}") from None
    wrong = wrong_attributes(env)
    if wrong:
        raise WarmstartError(f"{where}: {not_an_environment(env_class)}: {', '.join(wrong)}")
    plugin = PluginEnvironment(env)
    place_verification(plugin, where)
    return plugin


def place_verification(plugin: PluginEnvironment, where: str) -> None:
    """Verification workers get the environment pickled (verification.py): with verify_workers > 1 one that
    cannot travel is an error here (it would stop the first verified batch with pickle's traceback, after
    the stage has written its first records). With 1, it verifies in a worker of its own where it can
    travel, so that env.verify_timeout can stop a `verify` that never returns; else in this process, said once."""
    problem = pickling_problem(plugin)
    if problem and plugin.verify_workers > 1:
        raise WarmstartError(
            f"{where}: verify_workers = {plugin.verify_workers} sends the environment to worker processes, "
            f"but it cannot be pickled ({problem}); keep verify_workers = 1 or make it picklable"
        )
    if problem:
        log.warning(
            "%s: verify runs in this process, where env.verify_timeout cannot stop it: the environment cannot be "
            "pickled for a worker process (%s)",
            where,
            problem,
        )
    plugin.verifies_in_worker = problem is None


def pickling_problem(plugin: PluginEnvironment) -> str | None:
    try:
        pickle.loads(pickle.dumps(plugin))
    except Exception as exc:  # noqa: BLE001 - pickle raises many types (TypeError, PicklingError, AttributeError)
        return describe(exc)
    return None


def not_an_environment(env_class: type) -> str:
    return f"{env_class.__qualname__} is not a warmstart environment (docs/environments.md), missing or wrong"


def wrong_attributes(env) -> list[str]:
    """What is wrong with the attributes of `env` (an instance: they may be set by its constructor);
    `tools` and `verify_workers` may be left out."""
    wrong = [] if isinstance(getattr(env, "name", None), str) and env.name else ["name (a non-empty string)"]
    tools = getattr(env, "tools", ())
    if not isinstance(tools, (tuple, list)) or not all(isinstance(tool, dict) for tool in tools):
        wrong.append("tools (a tuple of OpenAI tool schemas, dicts)")
    workers = getattr(env, "verify_workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        wrong.append("verify_workers (an integer >= 1)")
    return wrong


def resolve(name: str) -> tuple[type, type[BaseModel] | None]:
    """The environment class `name` stands for, and its options model (None: it takes no options)."""
    env_class = import_class(name) if ":" in name else entry_point_class(name)
    if not isinstance(env_class, type):
        raise WarmstartError(f"env.name {name!r}: {env_class!r} is not a class")
    missing = [f"{method}()" for method in METHODS if not callable(getattr(env_class, method, None))]
    if missing:
        raise WarmstartError(f"env.name {name!r}: {not_an_environment(env_class)}: {', '.join(missing)}")
    options_model = getattr(env_class, "Options", None)
    if options_model is not None and not (isinstance(options_model, type) and issubclass(options_model, BaseModel)):
        raise WarmstartError(f"env.name {name!r}: {env_class.__qualname__}.Options is not a pydantic model")
    return env_class, options_model


def import_class(name: str) -> object:
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except PLUGIN_BUGS as exc:  # noqa: BLE001 - the plugin's import, whatever it raised, said in one line
        raise WarmstartError(f"env.name {name!r}: importing {module_name} raised {describe(exc)}") from None
    if not hasattr(module, attribute):
        raise WarmstartError(f"env.name {name!r}: module {module_name} has no {attribute}")
    return getattr(module, attribute)


def entry_point_class(name: str) -> object:
    found = {entry.value: entry for entry in entry_points(group=ENV_ENTRY_POINT_GROUP) if entry.name == name}
    if not found:
        raise WarmstartError(f"env.name: {unknown_env_message(name)}")
    if len(found) > 1:  # two installed packages claim the name: choosing one silently would hide it
        raise WarmstartError(f"env.name {name!r}: entry points of several packages have this name: {', '.join(found)}")
    (entry,) = found.values()
    try:
        return entry.load()
    except PLUGIN_BUGS as exc:  # noqa: BLE001 - as for an import
        raise WarmstartError(f"env.name {name!r}: loading entry point {entry.value} raised {describe(exc)}") from None


def validated_options(config: EnvConfig, options_model: type[BaseModel]) -> BaseModel:
    try:
        return options_model.model_validate(config.options)
    except ValidationError as exc:
        raise WarmstartError(describe_validation_error("recipe", exc, prefix="env.options")) from None


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class PluginEnvironment:
    """A plugin's environment as the stages see it: the protocol's optional attributes filled in, and its
    `verify` unable to turn a bug into a reward. Everything else is the plugin's own."""

    def __init__(self, env):
        self.env = env
        self.name: str = env.name
        self.tools: tuple[dict, ...] = tuple(getattr(env, "tools", ()))
        self.verify_workers: int = getattr(env, "verify_workers", 1)
        self.verifies_in_worker = False  # set as it loads: place_verification

    def tasks(self, split: str, n: int, seed: int) -> list[Task]:
        """The plugin's tasks, checked against the protocol: `n` Task records of this environment and
        `split` (a ValueError is the plugin saying it has fewer: the stage reports it as `tasks.SPLIT`)."""
        try:
            tasks = self.env.tasks(split, n, seed)
        except WarmstartError:
            raise
        except ValidationError as exc:  # a Task built wrong: a bug, not "fewer tasks" (pydantic's is a ValueError)
            raise WarmstartError(f"{self.name}.tasks built an invalid Task ({why(exc)})") from None
        except ValueError as exc:  # the protocol's "fewer than asked"; the stage says it as `tasks.SPLIT: ...`
            raise ValueError(f"{self.name}.tasks: {exc}") from None
        except PLUGIN_BUGS as exc:  # noqa: BLE001 - a bug in the plugin, said in one line naming it
            raise WarmstartError(f"{self.name}.tasks raised {describe(exc)}") from None
        problem = tasks_problem(tasks, self.name, split, n)
        if problem:
            raise WarmstartError(f"{self.name}.tasks({split!r}, {n}, {seed}) {problem}")
        return tasks

    def step(self, task: Task, call: ToolCall, messages: list[Message]) -> str:
        """The plugin's tool reply. The protocol answers a bad argument with an error text, so an exception
        or a reply that is not text is a bug of the plugin: one line naming it, the tool and the task
        (not pydantic's or the plugin's traceback out of the rollout)."""
        try:
            reply = self.env.step(task, call, messages)
        except WarmstartError:
            raise
        except PLUGIN_BUGS as exc:  # noqa: BLE001 - see the docstring
            raise WarmstartError(
                f"{self.name}.step raised {describe(exc)} on tool {call.function.name!r} of task {task.id}"
            ) from None
        if not isinstance(reply, str):
            raise WarmstartError(
                f"{self.name}.step returned {type(reply).__name__}, not a str, on tool {call.function.name!r} of task {task.id}"
            )
        return reply

    def reference(self, task: Task, rng) -> Trajectory:
        """The plugin's own solution of `task` (the offline teacher); an exception or something that is not
        a Trajectory stops the stage in one line naming the plugin (no trajectory can stand for it)."""
        try:
            trajectory = self.env.reference(task, rng)
        except WarmstartError:
            raise
        except PLUGIN_BUGS as exc:  # noqa: BLE001 - see the docstring
            raise WarmstartError(f"{self.name}.reference raised {describe(exc)} on task {task.id}") from None
        if not isinstance(trajectory, Trajectory):
            raise WarmstartError(
                f"{self.name}.reference returned {type(trajectory).__name__}, not a Trajectory (task {task.id})"
            )
        if trajectory.task_id != task.id:  # the stage files it under its task_id: another task's would be lost
            raise WarmstartError(
                f"{self.name}.reference returned a trajectory of task {trajectory.task_id!r} for task {task.id}"
            )
        return trajectory

    def verify(self, task: Task, trajectory: Trajectory) -> Verdict:
        """The plugin's verdict; an exception or something that is not a Verdict is an infra error (the
        trajectory masked and counted), never a 0 that would train against a right answer. A
        WarmstartError is the plugin saying the user must fix something: it stops the stage as one line."""
        try:
            # Copies: a verify that changes its task (`task.hidden["answer"] += 1`) would change the later samples'
            # verdicts, by how the samples happened to be chunked across workers (not reproducible).
            verdict = self.env.verify(task.model_copy(deep=True), trajectory.model_copy(deep=True))
        except WarmstartError:
            raise
        except PLUGIN_BUGS as exc:  # noqa: BLE001 - see the docstring
            return infra_error(f"{self.name}.verify raised {describe(exc)}")
        if not isinstance(verdict, Verdict):
            return infra_error(f"{self.name}.verify returned {type(verdict).__name__}, not a Verdict")
        if not math.isfinite(verdict.reward):
            # NaN would poison GRPO's group mean and is written to JSON as null, which no stage can read back.
            return infra_error(f"{self.name}.verify returned a reward of {verdict.reward}, not a finite number")
        problem = unrecordable(verdict)
        if problem:
            return infra_error(f"{self.name}.verify returned a Verdict that cannot be recorded ({problem})")
        return verdict

    def close(self) -> None:
        """Called by a verification worker as it exits: the plugin's own `close`, where it has one."""
        close = getattr(self.env, "close", None)
        if close is not None:
            close()


def tasks_problem(tasks, name: str, split: str, n: int) -> str | None:
    """What is wrong with what a plugin's `tasks` returned, or None."""
    if not isinstance(tasks, list):
        return f"returned {type(tasks).__name__}, not a list of Task records"
    not_tasks = [t for t in tasks if not isinstance(t, Task)]
    if not_tasks:
        return f"returned a {type(not_tasks[0]).__name__} among its tasks, not a Task record"
    strangers = [t for t in tasks if t.env != name or t.split != split]
    if strangers:
        t = strangers[0]
        return f"returned task {t.id} of env {t.env!r}, split {t.split!r} (asked: env {name!r}, split {split!r})"
    if len(tasks) != n:
        return f"returned {len(tasks)} tasks, not the {n} asked (raise ValueError when there are fewer)"
    return None


def unrecordable(verdict: Verdict) -> str | None:
    """Why a verdict cannot be written to its JSONL file or sent back from a verification worker (`details`
    holding a numpy scalar, a function), or None: checked here, it is that sample's infra error; found as it
    is written, it had stopped the stage with a traceback, or killed the worker."""
    try:
        verdict.model_dump_json()
        pickle.dumps(verdict)
    except Exception as exc:  # noqa: BLE001 - pydantic's and pickle's errors for whatever a plugin put there
        return first_line(exc, 160)
    return None


def infra_error(message: str) -> Verdict:
    return Verdict(reward=0.0, passed=False, infra_error=message)
