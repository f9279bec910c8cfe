"""Policies behind a remote API: the multi-turn loop on messages, the response cache, limits, retries.

A backend (`openai_api.py`, `anthropic_api.py`) only turns one conversation into one assistant reply
(`Backend.complete`) and names its failures; this module does the rest, the same for every provider:

- turns: policy turn -> tool calls -> `env.step` -> tool results -> ... up to `env.max_turns`;
- concurrency: asyncio, at most `api.concurrency` requests in flight;
- limits and retries: `limits.py` (RPM / TPM windows, backoff with jitter honouring Retry-After; no
  retry on errors retrying cannot fix, which stop the stage with a clear error);
- the response cache (`ResponseCache`): every successful reply is appended (one line, fsynced by group
  commit) under a key of everything that changes the answer, and is durable before it is used. A rerun, or a rerun after SIGKILL,
  asks the cache first, so nothing is paid for twice. Replies cut by the token limit, refused or
  content-filtered are not cached as successes: they are flagged on the trajectory and `curate`
  drops them with the reason counted;
- a request that still fails after its retries becomes a trajectory with `error` set, never a gap.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from ..errors import WarmstartError
from ..jsonl import JsonlAppender, read_records
from ..rollout import tool_results
from ..types import Message, Provenance, Record, Trajectory, Usage
from .base import Request, Sampling
from .limits import Failure, RateLimiter, backoff_seconds, classify, reservation

log = logging.getLogger(__name__)
CACHEABLE = {"stop", "tool_calls"}  # finish reasons of a complete, usable reply


@dataclass(frozen=True)
class Capabilities:
    logprobs: bool = False
    top_logprobs: bool = False
    prompt_logprobs: bool = False
    tools: bool = False
    reasoning: bool = False


class Reply(Record):
    message: Message
    usage: Usage
    finish_reason: str  # stop | tool_calls | length | content_filter | refusal
    logprobs: list[Any] | None = None  # per generated token: {token, logprob, top_logprobs}


class CachedReply(Record):
    key: str
    reply: Reply


class RequestError(Exception):
    """A failed request, classified (see limits.classify)."""

    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


class Backend(Protocol):
    provider: str
    model: str
    endpoint: str  # base URL: part of the cache key, since two servers may serve one name differently
    capabilities: Capabilities

    async def complete(self, messages: list[Message], tools: list[dict], sampling: Sampling, seed: int | None, top_logprobs: int) -> Reply:
        """One assistant turn; raise RequestError on failure. `seed` None: send none."""

    async def close(self) -> None: ...


def request_error(exc: Exception, sdk) -> RequestError:
    """Both official SDKs (`sdk` is the module) raise APIStatusError with status, body and headers, or
    connection / timeout errors with no HTTP answer."""
    if isinstance(exc, sdk.APIStatusError):
        body = json.dumps(exc.body) if exc.body is not None else ""
        return RequestError(classify(exc.status_code, body, dict(exc.response.headers), exc.message))
    return RequestError(classify(None, "", None, f"{type(exc).__name__}: {exc}"))


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def parse_spec(rest: str, default_url: str) -> tuple[str, str]:
    """`MODEL[@BASE_URL]` -> (model, base URL)."""
    model, at, url = rest.rpartition("@")
    if at and url.startswith(("http://", "https://")):
        return model, url.rstrip("/")
    return rest, default_url


def api_key(base_url: str, variable: str, where: str) -> str:
    key = os.environ.get(variable)
    if key:
        return key
    if urlparse(base_url).hostname in LOOPBACK_HOSTS:
        return "unused"  # local servers usually take no key; the SDKs insist on one
    raise WarmstartError(f"{where}: the API key variable {variable} is not set (set it, or name another in api.key_env)")


def require_served(model: str, served: list[str] | None, matches, base_url: str, where: str) -> None:
    """Refuse a model the endpoint does not list (no list: the first request will tell)."""
    if served is not None and not any(matches(model, name) for name in served):
        raise WarmstartError(f"{where}: {base_url} does not serve model {model!r} (it serves: {', '.join(served[:10]) or 'nothing'})")


def served_models(client, sdk, base_url: str, where: str) -> list[str] | None:
    """The endpoint's model ids, None when it lists none (404); a clear error when it cannot be used."""
    try:
        return [m.id for m in client.models.list()]
    except sdk.APIConnectionError:
        raise WarmstartError(f"{where}: cannot reach {base_url}") from None
    except sdk.AuthenticationError:
        raise WarmstartError(f"{where}: {base_url} rejected the API key") from None
    except sdk.APIStatusError as exc:
        if exc.status_code == 404:
            return None  # no model list here: the first request will say if the model is unknown
        raise WarmstartError(f"{where}: {base_url} answered HTTP {exc.status_code} to the model list") from None
    finally:
        client.close()


class ResponseCache:
    """Successful replies by request key, appended to a JSONL file as they arrive.

    `put` returns only once the reply's line is on disk (fsynced): a reply is never used or counted
    before a kill would leave it in the cache. Durability is a group commit: one fsync, run in a
    thread so the event loop keeps serving other requests, covers every line written before it began;
    replies that arrive while it runs wait for the next one, which covers them all. So at concurrency N
    there is about one fsync per round of replies instead of one per reply, and none blocks the loop.
    """

    def __init__(self, path: Path):
        self.path = path
        self.replies = {r.key: r.reply for r in read_records(path, CachedReply)} if path.exists() else {}
        self._fd: int | None = None
        self._written = 0  # lines written through this cache
        self._durable = 0  # of which known to be on disk
        self._syncing: tuple[asyncio.Future, int] | None = None  # the fsync in progress, lines it covers

    @staticmethod
    def key(parts: dict) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> Reply | None:
        return self.replies.get(key)

    def _open(self) -> int:
        if self._fd is None:
            JsonlAppender(self.path).close()  # creates the directory, cuts a torn last line once
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        return self._fd

    async def put(self, key: str, reply: Reply) -> None:
        """Append the reply and return once it is durable (see the class docstring)."""
        line = (CachedReply(key=key, reply=reply).model_dump_json() + "\n").encode()
        fd = self._open()
        written = os.write(fd, line)  # one O_APPEND write: lines of concurrent puts never interleave
        if written != len(line):
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        self._written += 1
        mine = self._written
        while self._durable < mine:
            if self._syncing is None:  # lead a group: every line written so far
                self._syncing = (asyncio.get_running_loop().run_in_executor(None, _sync, fd), self._written)
            syncing = self._syncing
            future, covers = syncing
            try:
                # A group's fsync may have begun before this line was written: then wait, and look again.
                # Shielded: a cancelled waiter leaves the fsync to the rest of its group.
                await asyncio.shield(future)  # its error (a disk failure) is every waiter's
                self._durable = max(self._durable, covers)
            finally:
                if self._syncing is syncing:
                    self._syncing = None
        self.replies[key] = reply

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _sync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)  # fdatasync: data and the file size, no timestamps


@dataclass
class ApiSettings:
    concurrency: int
    timeout_s: float
    max_retries: int
    backoff_s: float
    top_logprobs: int  # 0: none requested
    send_seed: bool = True


class APIPolicy:
    def __init__(self, backend: Backend, env, max_turns: int, settings: ApiSettings, limiter: RateLimiter, cache: ResponseCache):
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
            self.cache.close()
            await self.backend.close()

    async def _episode(self, request: Request, sampling: Sampling, seed: int, in_flight: asyncio.Semaphore) -> Trajectory:
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
                sampling={"temperature": sampling.temperature, "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens},
                seed=seed,
                created=time.time(),
            ),
        )

    def _key(self, messages: list[Message], tools: list[dict], sampling: Sampling, seed: int, sample_index: int) -> str:
        return ResponseCache.key({
            "provider": self.backend.provider,
            "model": self.backend.model,
            "endpoint": self.backend.endpoint,
            "messages": [m.model_dump(exclude_none=True) for m in messages],
            "tools": tools,
            "sampling": [sampling.temperature, sampling.top_p, sampling.max_new_tokens, self.settings.top_logprobs],
            "seed": seed,
            "sample_index": sample_index,
        })

    async def _turn(self, messages, tools, sampling: Sampling, seed: int, sample_index: int, in_flight) -> Reply:
        key = self._key(messages, tools, sampling, seed, sample_index)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        request_seed = int(key[:8], 16)  # the provider's seed, where it honours one: per request, stable
        rng = random.Random(key)
        size = sum(len(json.dumps(m.model_dump(exclude_none=True)).encode()) for m in messages) + len(json.dumps(tools).encode())
        for attempt in range(self.settings.max_retries + 1):
            async with in_flight:
                entry = await self.limiter.acquire(reservation(size, len(messages), sampling.max_new_tokens))
                try:
                    reply = await asyncio.wait_for(
                        self.backend.complete(messages, tools, sampling, request_seed if self.settings.send_seed else None, self.settings.top_logprobs),
                        self.settings.timeout_s,
                    )
                except RequestError as exc:
                    self.limiter.release(entry, None)
                    failure = exc.failure
                except asyncio.TimeoutError:
                    self.limiter.release(entry, None)
                    failure = Failure(True, f"no answer within api.timeout_s={self.settings.timeout_s}")
                else:
                    self.limiter.release(entry, reply.usage.tokens_in + reply.usage.tokens_out)
                    if reply.finish_reason in CACHEABLE:
                        await self.cache.put(key, reply)  # durable before used; holds the slot until then
                    return reply
            if not failure.retry:
                raise WarmstartError(f"{self.spec}: {failure.message}")
            if attempt == self.settings.max_retries:
                raise RequestError(failure)
            wait = backoff_seconds(attempt, self.settings.backoff_s, failure.retry_after, rng)
            log.warning("%s: %s; retry %d in %.1f s", self.spec, failure.message, attempt + 1, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")
