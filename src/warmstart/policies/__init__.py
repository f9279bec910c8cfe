"""Policies: every model, teacher or student, behind one interface, chosen by a string.

    reference            the environment's own solver (the offline demo's teacher)
    hf:PATH              a local transformers model directory or .gguf file
    openai:MODEL[@URL]   OpenAI-compatible endpoint      } not yet available: they arrive with
    anthropic:MODEL      Anthropic API                   } the API-backends issue; the recipe keys
    vllm:PATH            vLLM on a GPU                   } already accept them and say so
"""

from __future__ import annotations

from pathlib import Path

from ..envs.base import Environment
from ..errors import WarmstartError
from .base import Policy, Request, Sampling
from .hf import HFPolicy
from .reference import ReferencePolicy

LATER_BACKENDS = {"openai", "anthropic", "vllm"}


def make_policy(spec: str, env: Environment, key: str, max_turns: int) -> Policy:
    kind, _, rest = spec.partition(":")
    if spec == "reference":
        return ReferencePolicy(env)
    if kind == "hf" and rest:
        return HFPolicy(Path(rest), key, env, max_turns)
    if kind in LATER_BACKENDS:
        raise WarmstartError(
            f"{key}: backend '{kind}' is not available in this version yet (it arrives with the API backends); "
            "available now: reference, hf:PATH"
        )
    raise WarmstartError(f"{key}: unknown policy {spec!r}; expected reference, hf:PATH, openai:MODEL[@URL] or anthropic:MODEL")


__all__ = ["Policy", "Request", "Sampling", "make_policy"]
