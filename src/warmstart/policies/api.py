"""Policies behind a remote API: the multi-turn loop on messages, the response cache, limits, retries.

A backend (`openai_api.py`, `anthropic_api.py`) only turns one conversation into one assistant reply
(`Backend.complete`) and names its failures; this module does the rest, the same for every provider:

- turns: policy turn -> tool calls -> `env.step` -> tool results -> ... up to `env.max_turns`;
- concurrency: asyncio, at most `api.concurrency` requests in flight;
- limits and retries: `limits.py` (RPM / TPM windows, backoff with jitter honouring Retry-After; no
  retry on errors retrying cannot fix, which stop the stage with a clear error);
- the response cache (`ResponseCache`): every successful reply is appended (one line) under a key of
  everything that changes the answer, before it is used. A rerun asks the cache first: after a SIGKILL
  nothing is paid for twice except the requests that were in flight; after a machine crash at most about
  the last second of replies is asked again (see `ResponseCache`). Replies cut by the token limit, refused or
  content-filtered are not cached as successes: they are flagged on the trajectory and `curate`
  drops them with the reason counted;
- a request that still fails after its retries becomes a trajectory with `error` set, never a gap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass

from ..errors import WarmstartError
from ..lm.toolcalls import tool_results
from ..types import Message, Provenance, Request, Sampling, Trajectory
from .backend import Backend, Reply, RequestError
from .cache import ResponseCache
from .limits import Failure, RateLimiter, backoff_seconds, reservation

log = logging.getLogger(__name__)
CACHEABLE = {"stop", "tool_calls"}  # finish reasons of a complete, usable reply


@dataclass
class ApiSettings:
    concurrency: int
    timeout_s: float
    max_retries: int
    backoff_s: float
    top_logprobs: int  # 0: none requested
    send_seed: bool = True


class APIPolicy:
    def __init__(
        self, backend: Backend, env, max_turns: int, settings: ApiSettings, limiter: RateLimiter, cache: ResponseCache
    ):
        self.backend, self.env, self.max_turns, self.settings = backend, env, max_turns, settings
        self.limiter, self.cache = limiter, cache
        self.spec = f"{backend.provider}:{backend.model}"

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        return asyncio.run(self._rollout_all(requests, sampling, seed))

    async def _rollout_all(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        in_flight = asyncio.Semaphore(self.settings.concurrency)
        try:
            return await asyncio.gather(*(self._episode(r, sampling, seed, in_flight) for r in requests))
        finally:
            try:
                self.cache.close()  # everything durable, even against a machine crash
            finally:
                await self.backend.close()

    async def _episode(
        self, request: Request, sampling: Sampling, seed: int, in_flight: asyncio.Semaphore
    ) -> Trajectory:
        task, tools = request.task, list(self.env.tools)
        messages, usage, logprobs, finish = list(task.prompt), [], [], "stop"
        try:
            for turn in range(self.max_turns):
                reply = await self._turn(messages, tools, sampling, seed, request.sample_index, in_flight)
                messages.append(reply.message)
                usage.append(reply.usage)
                logprobs.append(reply.logprobs)
                finish = reply.finish_reason
                if finish != "tool_calls" or not tools:
                    break
                if turn == self.max_turns - 1:
                    finish = "turns"
                    break
                messages += tool_results(self.env, task, messages)
            error = None
        except RequestError as exc:
            error = f"request failed after {self.settings.max_retries} retries: {exc}"
        return Trajectory(
            task_id=task.id,
            sample_index=request.sample_index,
            policy=self.spec,
            messages=messages,
            usage=usage,
            logprobs=logprobs if any(lp is not None for lp in logprobs) else None,
            finish_reason=None if error else ("stop" if finish == "tool_calls" else finish),
            error=error,
            provenance=Provenance(
                provider=self.backend.provider,
                model=self.backend.model,
                sampling={
                    "temperature": sampling.temperature,
                    "top_p": sampling.top_p,
                    "max_new_tokens": sampling.max_new_tokens,
                },
                seed=seed,
                created=time.time(),
            ),
        )

    def _key(self, messages: list[Message], tools: list[dict], sampling: Sampling, seed: int, sample_index: int) -> str:
        return ResponseCache.key(
            {
                "provider": self.backend.provider,
                "model": self.backend.model,
                "endpoint": self.backend.endpoint,
                "messages": [m.model_dump(exclude_none=True) for m in messages],
                "tools": tools,
                "sampling": [sampling.temperature, sampling.top_p, sampling.max_new_tokens, self.settings.top_logprobs],
                "seed": seed,
                "sample_index": sample_index,
            }
        )

    @staticmethod
    def _reservation(messages: list[Message], tools: list[dict], sampling: Sampling) -> int:
        """The tokens a request may use at most, for a TPM limit (a few microseconds: only when one is set)."""
        size = sum(len(json.dumps(m.model_dump(exclude_none=True)).encode()) for m in messages) + len(
            json.dumps(tools).encode()
        )
        return reservation(size, len(messages), sampling.max_new_tokens)

    async def _turn(self, messages, tools, sampling: Sampling, seed: int, sample_index: int, in_flight) -> Reply:
        key = self._key(messages, tools, sampling, seed, sample_index)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        request_seed = int(key[:8], 16)  # the provider's seed, where it honours one: per request, stable
        rng = None  # the backoff's jitter, seeded by the key: made on the first retry, not per request
        tokens = self._reservation(messages, tools, sampling) if self.limiter.counts_tokens else 0
        for attempt in range(self.settings.max_retries + 1):
            async with in_flight:
                entry = await self.limiter.acquire(tokens)
                try:
                    # asyncio.timeout, not wait_for: no extra task and event-loop rounds per request
                    async with asyncio.timeout(self.settings.timeout_s):
                        reply = await self.backend.complete(
                            messages,
                            tools,
                            sampling,
                            request_seed if self.settings.send_seed else None,
                            self.settings.top_logprobs,
                        )
                except RequestError as exc:
                    self.limiter.release(entry, None)
                    failure = exc.failure
                except TimeoutError:  # asyncio.timeout's; the SDK's own timeout is an APITimeoutError
                    self.limiter.release(entry, None)
                    failure = Failure(True, f"no answer within api.timeout_s={self.settings.timeout_s}")
                else:
                    self.limiter.release(entry, reply.usage.tokens_in + reply.usage.tokens_out)
                    if reply.finish_reason in CACHEABLE:
                        self.cache.put(key, reply)  # written (a kill cannot lose it) before it is used
                    return reply
            if not failure.retry:
                raise WarmstartError(f"{self.spec}: {failure.message}")
            if attempt == self.settings.max_retries:
                raise RequestError(failure)
            rng = rng or random.Random(key)
            wait = backoff_seconds(attempt, self.settings.backoff_s, failure.retry_after, rng)
            log.warning("%s: %s; retry %d in %.1f s", self.spec, failure.message, attempt + 1, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")
