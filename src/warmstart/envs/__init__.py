"""Built-in environments, chosen by `env.name` in the recipe."""

from __future__ import annotations

from pydantic import ValidationError

from ..config import EnvConfig, describe_validation_error
from ..errors import WarmstartError
from .arithmetic import Arithmetic, ArithmeticOptions
from .base import Environment
from .calculator import Calculator, CalculatorOptions
from .python import PythonEnv, PythonOptions
from .repo import RepoEnv, RepoOptions

# name -> (environment class, its options model); the recipe's EnvConfig.name lists the same names.
BUILT_IN = {
    "arithmetic": (Arithmetic, ArithmeticOptions),
    "calculator": (Calculator, CalculatorOptions),
    "python": (PythonEnv, PythonOptions),
    "repo": (RepoEnv, RepoOptions),
}


def make_env(config: EnvConfig) -> Environment:
    env_class, options_model = BUILT_IN[config.name]
    try:
        options = options_model.model_validate(config.options)
    except ValidationError as exc:
        raise WarmstartError(describe_validation_error("recipe", exc, prefix="env.options")) from None
    return env_class(options)
