"""Policies: every model, teacher or student, behind one interface (`base.Policy`), chosen by a
`config.PolicySpec` (the forms are listed there; `spec.resolve` maps the run's own names).

    reference            the environment's own solver (the offline demo's teacher): `reference.py`
    hf:PATH              a local transformers model, batched multi-turn rollouts: `hf.py`
    openai:MODEL[@URL]   any OpenAI-compatible endpoint (default https://api.openai.com/v1): `openai_api.py`
    anthropic:MODEL[@URL] Anthropic's Messages API: `anthropic_api.py`, `anthropic_format.py`
    vllm:PATH            not available yet (`warmstart serve` or vLLM's own server with openai:MODEL@URL
                         covers serving a local model meanwhile)

The API backends share `api.py` (the turn loop, retries, concurrency), `cache.py` (the response
cache) and `limits.py` (rate limits, the retry policy). May import: envs, lm, runs and the core
modules; never the stages, distill or train.
"""

from __future__ import annotations

from ..config import PolicySpec, Recipe
from ..envs.base import Environment
from ..errors import WarmstartError
from ..runs.directory import RunDir
from .base import Policy
from .spec import resolve


def make_policy(spec: PolicySpec, env: Environment, key: str, recipe: Recipe) -> Policy:
    """The policy `spec` stands for (the run's own names resolved); `key` names the recipe setting in errors.
    Each backend is imported when chosen: a local model pulls in torch, an API its SDK."""
    spec = resolve(spec, recipe)
    if spec.kind == "reference":
        from .reference import ReferencePolicy

        return ReferencePolicy(env)
    if spec.kind == "hf":
        from ..lm.device import resolve_device
        from .hf import HFPolicy

        device = resolve_device(recipe.run.device)
        return HFPolicy(spec.name, key, env, recipe.env.max_turns, recipe.api.top_logprobs, device)
    if spec.kind in ("openai", "anthropic"):
        return make_api_policy(spec, env, key, recipe)
    raise WarmstartError(
        f"{key}: backend 'vllm' is not available in this version; serve the model and use openai:MODEL@URL"
    )


def make_api_policy(spec: PolicySpec, env: Environment, key: str, recipe: Recipe) -> Policy:
    from .api import APIPolicy, ApiSettings
    from .cache import ResponseCache
    from .limits import RateLimiter

    cfg = recipe.api
    if spec.kind == "openai":
        from .openai_api import OpenAIBackend

        backend = OpenAIBackend.connect(spec, cfg.key_env, cfg.timeout_s, key)
    else:
        from .anthropic_api import AnthropicBackend

        backend = AnthropicBackend.connect(spec, cfg.key_env, cfg.timeout_s, cfg.thinking_tokens, key)
    if cfg.top_logprobs and not backend.capabilities.top_logprobs:
        raise WarmstartError(f"{key}: {spec.kind} does not return token logprobs; set api.top_logprobs = 0")
    settings = ApiSettings(
        cfg.concurrency,
        cfg.timeout_s,
        cfg.max_retries,
        cfg.backoff_s,
        cfg.top_logprobs,
        cfg.send_seed,
        cfg.max_retry_after_s,
        cfg.deadline_s,
    )
    cache = ResponseCache(RunDir(recipe).root / "cache" / "responses.jsonl")
    return APIPolicy(backend, env, recipe.env.max_turns, settings, RateLimiter(cfg.rpm, cfg.tpm), cache)


__all__ = ["Policy", "make_policy"]
