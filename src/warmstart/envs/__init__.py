"""Built-in environments, chosen by `env.name` in the recipe."""

from __future__ import annotations

from pydantic import ValidationError

from ..config import EnvConfig, describe_validation_error
from ..errors import WarmstartError
from .arithmetic import Arithmetic, ArithmeticOptions
from .base import Environment


def make_env(config: EnvConfig) -> Environment:
    # One family for now; a mapping of names to classes arrives with the second one.
    try:
        options = ArithmeticOptions.model_validate(config.options)
    except ValidationError as exc:
        raise WarmstartError(describe_validation_error("recipe", exc, prefix="env.options")) from None
    return Arithmetic(options)
