"""Policies: every model, teacher or student, behind one interface, chosen by a string.

    reference            the environment's own solver (the offline demo's teacher)
    hf:PATH              a local transformers model directory or .gguf file
    openai:MODEL[@URL]   any OpenAI-compatible endpoint (default https://api.openai.com/v1)
    anthropic:MODEL[@URL] Anthropic's Messages API
    vllm:PATH            vLLM on a GPU: not available yet (`warmstart serve` or vLLM's own server with
                         openai:MODEL@URL covers serving a local model meanwhile)
"""

from __future__ import annotations

from pathlib import Path

from ..config import Recipe
from ..envs.base import Environment
from ..errors import WarmstartError
from ..runs import RunDir
from .base import Policy, Request, Sampling

KNOWN = "reference, hf:PATH, openai:MODEL[@URL] or anthropic:MODEL[@URL]"


def make_policy(spec: str, env: Environment, key: str, recipe: Recipe) -> Policy:
    kind, _, rest = spec.partition(":")
    if spec == "reference":
        from .reference import ReferencePolicy

        return ReferencePolicy(env)
    if kind == "hf" and rest:
        # Imported here: the local policy pulls in the rollout loop and torch, which an API teacher never
        # needs; and the rollout loop imports generation, which needs policies.base (a cycle at the top).
        from .hf import HFPolicy

        return HFPolicy(Path(rest), key, env, recipe.env.max_turns, recipe.api.top_logprobs)
    if kind in ("openai", "anthropic") and rest:
        return make_api_policy(kind, rest, env, key, recipe)
    if kind == "vllm":
        raise WarmstartError(f"{key}: backend 'vllm' is not available in this version; serve the model and use openai:MODEL@URL")
    raise WarmstartError(f"{key}: unknown policy {spec!r}; expected {KNOWN}")


def make_api_policy(kind: str, rest: str, env: Environment, key: str, recipe: Recipe) -> Policy:
    from .api import APIPolicy, ApiSettings, ResponseCache  # the SDKs load only when used
    from .limits import RateLimiter

    cfg = recipe.api
    if kind == "openai":
        from .api import api_key, parse_spec
        from .openai_api import DEFAULT_BASE_URL, OpenAIBackend, check_endpoint

        model, base_url = parse_spec(rest, DEFAULT_BASE_URL)
        secret = api_key(base_url, cfg.key_env or "OPENAI_API_KEY", key)
        check_endpoint(base_url, secret, model, key)
        backend = OpenAIBackend(model, base_url, secret, cfg.timeout_s)
    else:
        from .anthropic_api import AnthropicBackend

        backend = AnthropicBackend.connect(rest, cfg.key_env, cfg.timeout_s, cfg.thinking_tokens, key)
    if cfg.top_logprobs and not backend.capabilities.top_logprobs:
        raise WarmstartError(f"{key}: {kind} does not return token logprobs; set api.top_logprobs = 0")
    settings = ApiSettings(cfg.concurrency, cfg.timeout_s, cfg.max_retries, cfg.backoff_s, cfg.top_logprobs, cfg.send_seed)
    cache = ResponseCache(RunDir(recipe).root / "cache" / "responses.jsonl")
    return APIPolicy(backend, env, recipe.env.max_turns, settings, RateLimiter(cfg.rpm, cfg.tpm), cache)


__all__ = ["Policy", "Request", "Sampling", "make_policy"]
