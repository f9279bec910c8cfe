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
import hashlib
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from ..errors import WarmstartError
from ..jsonl import JsonlAppender, read_records
from ..toolcalls import tool_results
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


# The background fdatasync runs at most once per this many seconds. It guards only against a machine or
# OS crash (a killed process loses nothing written: the lines are in the kernel's page cache), so this is
# the most a crash can cost: about a second of replies, asked for again. One fdatasync a second is a few
# ms of disk time on an SSD, tens on a network disk, run in a thread: negligible at any request rate. A
# shorter interval buys little (an API run pays for minutes or hours of replies) for more disk flushes,
# a longer one widens the loss for no measurable gain. Redis's `appendfsync everysec` is the same rule.
SYNC_INTERVAL_S = 1.0


def sdk_tls_context():
    """The TLS settings (CA certificates loaded: 25-40 ms) exactly as the openai / anthropic SDKs make them,
    for a backend to make once: it makes a client per event loop (one per `rollout`: per chunk in
    generate, per judgement for a judge), and each would load them again."""
    try:  # the SDKs' HTTP library: httpx2 in recent releases, httpx before (pyproject allows both)
        import httpx2 as sdk_http
    except ImportError:  # pragma: no cover - only with older SDKs
        import httpx as sdk_http
    return sdk_http.create_ssl_context()


class ResponseCache:
    """Successful replies by request key, appended to a JSONL file as they arrive.

    What survives what:
    - a kill (SIGKILL, the OOM killer, Ctrl-C): `put` writes the reply's line with one `write` to an
      O_APPEND descriptor before it returns, and a reply is used only after its `put`. A written line is in
      the kernel's page cache, which outlives the process, so a rerun finds every reply that was used and
      pays again only for the requests that were in flight;
    - a machine or OS crash (power loss, kernel panic): lines reach the disk by a background fdatasync
      (`PeriodicSync`) at most once per `sync_interval_s`, each covering every line written before it
      began, and `close` syncs the rest. A crash loses at most about the last second of replies (plus an
      fdatasync in progress), which the rerun asks for again;
    - a disk error: a failed fdatasync is raised, naming the file, from the next `put` and every later one
      until `close` (such a put writes nothing: a disk that lost writes is not trusted with more), or else
      from `close`.

    `put` never waits for the disk: the event loop never blocks on it, and no request waits for a disk
    round trip, at concurrency 1 or 64. The same rule as `JsonlAppender`: flushed per line, fsynced at close.
    """

    def __init__(self, path: Path, sync_interval_s: float = SYNC_INTERVAL_S):
        self.path = path
        self.sync_interval_s = sync_interval_s
        self.replies = {r.key: r.reply for r in read_records(path, CachedReply)} if path.exists() else {}
        self._fd: int | None = None
        self._syncer: PeriodicSync | None = None  # the background fdatasync of the open descriptor
        self._failure_raised = False  # the syncer's failure was raised by a put: close need not repeat it
        self._tail_checked = False  # a killed writer's torn last line is cut once, before the first write

    @staticmethod
    def key(parts: dict) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> Reply | None:
        return self.replies.get(key)

    def put(self, key: str, reply: Reply) -> None:
        """Append the reply's line; return without waiting for the disk (see the class docstring)."""
        self._raise_disk_failure()
        line = (CachedReply(key=key, reply=reply).model_dump_json() + "\n").encode()
        fd = self._open()
        written = os.write(fd, line)  # one O_APPEND write: lines of concurrent puts never interleave
        if written != len(line):
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        self._syncer.wrote()
        self.replies[key] = reply

    def close(self) -> None:
        """Make every written line durable (a final fdatasync), then close the file."""
        if self._fd is None:
            return
        fd, syncer, already_raised = self._fd, self._syncer, self._failure_raised
        self._fd, self._syncer, self._failure_raised = None, None, False
        try:
            syncer.stop()  # the thread is joined before the descriptor is closed: it never syncs a reused fd
        finally:
            os.close(fd)
        if syncer.failure is not None and not already_raised:
            raise syncer.failure

    def _open(self) -> int:
        if self._fd is None:
            if not self._tail_checked:  # once per cache: every line it writes itself is whole
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not ends_with_newline(self.path):
                    JsonlAppender(self.path).close()  # cuts the torn last line a killed writer left
                self._tail_checked = True
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._syncer = PeriodicSync(self._fd, self.path, self.sync_interval_s)
        return self._fd

    def _raise_disk_failure(self) -> None:
        if self._syncer is not None and self._syncer.failure is not None:
            self._failure_raised = True
            raise self._syncer.failure


def ends_with_newline(path: Path) -> bool:
    """No torn last line to cut: the file is absent, empty or ends with a newline (one byte read, not the file)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return True
            f.seek(size - 1)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True


class PeriodicSync:
    """A time-based group commit for one append-only descriptor: one thread (per descriptor, not per
    reply) runs fdatasync at most once per `interval_s`, and only when lines were written since the last;
    each covers every line written before it began. Nobody waits for it but `stop`."""

    def __init__(self, fd: int, path: Path, interval_s: float):
        self.fd, self.path, self.interval_s = fd, path, interval_s
        self.failure: OSError | None = None  # the first failed fdatasync, for the cache to raise
        self._changed = threading.Condition()
        self._written = 0  # lines written, as told by `wrote`
        self._synced = 0  # of which covered by a finished fdatasync
        self._stopping = False
        # A daemon: a cache never closed (a crashed caller) must not keep the interpreter alive.
        self._thread = threading.Thread(target=self._run, name=f"fdatasync {path.name}", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        with self._changed:
            was_clean = self._written == self._synced
            self._written += 1
            if was_clean:  # only then can the thread be waiting for a line; later ones it finds itself
                self._changed.notify()

    def stop(self) -> None:
        """End the thread (after the fdatasync it may be running), then sync what is left."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join()
        if self.failure is None and self._written > self._synced:
            self._sync_covering(self._written)

    def _run(self) -> None:
        began = time.monotonic() - self.interval_s  # the first line is synced at once
        while self.failure is None:  # after a failure, syncing again could report a lost write as success
            with self._changed:
                self._changed.wait_for(lambda: self._stopping or self._written > self._synced)
                # Let the interval since the previous fdatasync began run out: lines written meanwhile share the next.
                self._changed.wait_for(lambda: self._stopping, timeout=began + self.interval_s - time.monotonic())
                if self._stopping:
                    return  # `stop` syncs what is left
                covers = self._written
            began = time.monotonic()
            self._sync_covering(covers)

    def _sync_covering(self, lines: int) -> None:
        try:
            _sync(self.fd)
        except OSError as exc:
            self.failure = disk_failure(self.path, exc)
            return
        with self._changed:
            self._synced = lines


def _sync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)  # fdatasync: data and the file size, no timestamps


def disk_failure(path: Path, exc: OSError) -> OSError:
    """The error a failed fdatasync is reported as: the file named, the replies at risk said."""
    failure = OSError(exc.errno, f"the response cache could not be synced to disk ({exc.strerror or exc}); "
                      "replies cached since its last successful sync may not survive a machine crash", str(path))
    failure.__cause__ = exc
    return failure


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
            try:
                self.cache.close()  # everything durable, even against a machine crash
            finally:
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

    @staticmethod
    def _reservation(messages: list[Message], tools: list[dict], sampling: Sampling) -> int:
        """The tokens a request may use at most, for a TPM limit (a few microseconds: only when one is set)."""
        size = sum(len(json.dumps(m.model_dump(exclude_none=True)).encode()) for m in messages) + len(json.dumps(tools).encode())
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
                        reply = await self.backend.complete(messages, tools, sampling, request_seed if self.settings.send_seed else None, self.settings.top_logprobs)
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
