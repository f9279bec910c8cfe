"""Environments: task families with a verifier (`base.Environment`), chosen by `env.name` in the recipe.

`arithmetic` (reasoning chains), `calculator` (when to call a tool), `python` (functions graded by hidden
tests in the sandbox), `repo` (SWE-style fixes through tools), `swe` (bugs mined from real packages, graded by
their own pytest suites: envs/swe/); `verification.py` runs a stage's
verification (in worker processes where an environment asks for them); `judge.py` wraps an environment
with an LLM judge; `sandbox/` runs model-written code under bubblewrap.

May import `lm.toolcalls` and the core modules, never torch (a verification worker starts in ~0.3 s).
See ARCHITECTURE.md, "Where to add things".
"""

from __future__ import annotations

from pydantic import ValidationError

from ..config import EnvConfig, describe_validation_error
from ..errors import WarmstartError
from .arithmetic import Arithmetic, ArithmeticOptions
from .base import Environment
from .calculator import Calculator, CalculatorOptions
from .math import MathEnv, MathOptions
from .plugins import make_plugin_env
from .python import PythonEnv, PythonOptions
from .repo import RepoEnv, RepoOptions
from .swe.env import SweEnv, SweOptions

# name -> (environment class, its options model); the recipe's EnvConfig.name lists the same names.
BUILT_IN = {
    "arithmetic": (Arithmetic, ArithmeticOptions),
    "calculator": (Calculator, CalculatorOptions),
    "math": (MathEnv, MathOptions),
    "python": (PythonEnv, PythonOptions),
    "repo": (RepoEnv, RepoOptions),
    "swe": (SweEnv, SweOptions),
}


def make_env(config: EnvConfig) -> Environment:
    if config.name not in BUILT_IN:  # a plugin: `module.path:ClassName` or an entry point's name
        return make_plugin_env(config)
    env_class, _ = BUILT_IN[config.name]
    return env_class(built_in_options(config, "recipe"))


def built_in_options(config: EnvConfig, source: str):
    """A built-in environment's options, validated; an error names `source` (the recipe file, where known).
    None for a plugin, whose options its own class reads."""
    if config.name not in BUILT_IN:
        return None
    try:
        return BUILT_IN[config.name][1].model_validate(config.options)
    except ValidationError as exc:
        raise WarmstartError(describe_validation_error(source, exc, prefix="env.options")) from None
