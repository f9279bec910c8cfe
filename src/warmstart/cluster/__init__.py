"""`generate` and `eval` on a Ray cluster: the `[ray]` section of a recipe (docs/ray.md).

The stages ask this package for their teacher (`make_policy`) and their verifier (`make_verifier`);
without a `[ray]` section it hands back the local ones (`policies.make_policy`, `envs.verification.Verifier`)
and Ray is never imported. With one:

    connection.py   `connect`: the cluster reached (or one error line naming the address)
    fanout.py       `RayPolicy`: a batch of requests split across rollout actors; the driver merges their
                    records (deduplicated by task and sample), writes the replies they got to the response
                    cache and adds up their request tallies
    workers.py      `RolloutWorker`: the actor holding one policy (one async API client, or one local model
                    on its GPU); `WorkerCache`: the driver's replies, read-only, plus the worker's new ones;
                    how many workers, with what resources
    results.py      a worker's answer or its error as one line; records merged; tallies added
    limiter.py      `LimitsActor`: one named actor per API model holding the RPM / TPM windows every
                    worker asks before each request; `SharedRateLimiter`: a worker's handle on it
    budget.py       `BudgetActor`: the stage's `generate.budget_usd`, kept for all workers together
    verifiers.py    `RayVerifier`: batches verified by sandbox actors, each verification bounded by
                    `env.verify_timeout` as locally (its actor killed and replaced past it)

Only the driver (the process running the stage) writes: the JSONL records, the response cache, the
ledger, the manifest. A worker that dies is restarted by Ray and the piece of work it held is asked
again; what it had answered is merged once (`results.merge`). May import: policies, envs, runs, config;
never the stages or torch.
"""

from __future__ import annotations

from contextlib import nullcontext

from ..config import PolicySpec, Recipe
from ..envs.base import Environment
from ..envs.verification import Verifier
from ..errors import WarmstartError
from ..policies import Policy
from ..policies import make_policy as make_local_policy


def connect(recipe: Recipe) -> None:
    """Reach the recipe's Ray cluster before the stage writes anything; nothing without `[ray]`."""
    if recipe.ray is None:
        return
    try:
        # Imported here: Ray (a second or so and an optional extra) is loaded only by recipes that use it.
        from .connection import connect as connect_to_ray
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise WarmstartError("[ray]: Ray is not installed here (pip install 'warmstart[ray]')") from None
    connect_to_ray(recipe.ray)


def make_policy(spec: PolicySpec, env: Environment, key: str, recipe: Recipe) -> Policy:
    """The policy `spec` stands for: in this process, or spread over the cluster's rollout actors."""
    if recipe.ray is None:
        return make_local_policy(spec, env, key, recipe)
    from .fanout import RayPolicy  # Ray only where the recipe asks for it (see `connect`)

    return RayPolicy.start(spec, env, key, recipe)


def make_verifier(env: Environment, recipe: Recipe):
    """The stage's verifier: the local pool, or sandbox actors where the environment verifies in workers
    (or `ray.verify_workers` asks for them)."""
    count = None if recipe.ray is None else (recipe.ray.verify_workers or env.verify_workers)
    if count is None or count <= 1:
        return Verifier(env, recipe.env.verify_timeout)
    from .verifiers import RayVerifier  # Ray only where the recipe asks for it (see `connect`)

    return RayVerifier.start(env, count, recipe.ray.max_restarts, recipe.env.verify_timeout)


def stopping(policy: Policy, recipe: Recipe):
    """A context that stops a Ray policy's workers on leaving (a local policy has none to stop)."""
    return nullcontext() if recipe.ray is None else policy
