"""Policies behind a remote API: the multi-turn loop on messages, the response cache, limits, retries.

A backend (`openai_api.py`, `anthropic_api.py`) only turns one conversation into one assistant reply
(`Backend.complete`) and names its failures; this module does the rest, the same for every provider:

- turns: policy turn -> tool calls -> `env.step` -> tool results -> ... up to `env.max_turns`;
- concurrency: asyncio, at most `api.concurrency` requests in flight;
- limits and retries: `limits.py` (RPM / TPM windows, backoff with jitter honouring Retry-After up to
  `api.max_retry_after_s`; no retry on errors retrying cannot fix, which stop the stage with a clear
  error, but for a request too long for the model, whose rollout alone ends in an error). Every wait is
  bounded: a request, its retries included, gives up at `api.deadline_s` (by default the retry policy's
  own worst case, `ApiSettings.worst_case_s`);
- replies are checked before use (`reply_problem`): text that is not Unicode (lone surrogates), an empty
  reply (but for one cut by the token limit, content-filtered or refused: kept, flagged) are refused and
  asked again, with another seed (a server that honours seeds answers the same seed the same unusable way,
  each try billed), and the usage they carried is kept on the trajectory (`rejected_usage`: the provider bills it). Token counts that are impossible (negative) or implausible
  (`usage_problem`: more than 4 x the request's bound + 4096 in, 4 x `max_new_tokens` + 4096 out;
  providers add template and tool-prompt tokens) are refused and asked again too, but never billed: the
  bill is unknown, and under a dollar cap it counts at the request's largest possible cost, as a request
  that never answered does. A reply far longer than `max_new_tokens` allows is cut and flagged
  `oversized` (`flag_oversized`). The model the provider says answered is
  recorded on each turn's usage, and pricing follows it; one that is not the model asked for is warned of;
- the response cache (`cache.py`): every successful reply is appended (one line) under a key of
  everything that changes the answer, before it is used. A rerun asks the cache first (a turn answered
  from it is marked `from_cache`: nothing was paid for it): after a SIGKILL nothing is paid for twice
  except the requests that were in flight. Replies cut by the token limit, refused, content-filtered or
  oversized are not cached as successes: they are flagged on the trajectory and `curate` drops them; nor
  is a reply that names no finish reason ("unknown");
- a request that still fails after its retries becomes a trajectory with `error` set, never a gap; an
  error retrying cannot fix stops the whole call, once its other requests are cancelled and have ended;
- a dollar cap (`runs/budget.py`, `generate.budget_usd`): a request is sent only when its largest
  possible cost fits beside the requests in flight; a reply from a model with no price stops the call
  (`APIPolicy._note_unpriced`); reasoning a model writes inside `<think>` tags
  becomes the message's reasoning (`reasoning_tags.py`);
- `RequestTally` counts requests sent, failed, retried and answered from the cache, for the stage's ledger.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property

from ..errors import WarmstartError
from ..lm.toolcalls import tool_results
from ..runs.budget import BudgetExhausted, BudgetGuard
from ..runs.costs import SNAPSHOT_SUFFIX, price_of
from ..types import Message, Provenance, Request, Sampling, Trajectory, Usage
from .backend import Backend, Reply, RequestError
from .cache import ResponseCache
from .limits import Failure, RateLimiter, backoff_seconds, longest_backoff, reservation
from .reasoning_tags import split_reasoning_tags

log = logging.getLogger(__name__)
CACHEABLE = {"stop", "tool_calls"}  # finish reasons of a complete, usable reply
# Finish reasons that end a reply for good, text or none: cut by the token limit (its tokens spent thinking),
# content-filtered (OpenAI, Azure), refused (Anthropic). Asked again, such a request ends the same way, each
# try billed: the reply is kept, flagged by its finish reason (not cached; curate drops it).
FINAL_WITHOUT_TEXT = {"length", "content_filter", "refusal"}
TOO_LONG_BEFORE_STOP = 8  # requests refused as too long, none ever answered: the settings', not a prompt's
LEAST_TRY_S = 1.0  # the least time a retry is sent with (or api.timeout_s, if less): else it is not sent
NOT_SENT = "not sent (budget)"  # the error of a rollout the dollar cap stopped: asked again by a rerun


@dataclass
class ApiSettings:
    concurrency: int
    timeout_s: float
    max_retries: int
    backoff_s: float
    top_logprobs: int  # 0: none requested
    send_seed: bool = True
    max_retry_after_s: float = 300.0
    deadline_s: float | None = None  # None: the retry policy's worst case

    def worst_case_s(self) -> float:
        """The longest one request can take, its retries and their waits included (rate-limit queueing aside)."""
        waits = sum(longest_backoff(a, self.backoff_s, self.max_retry_after_s) for a in range(self.max_retries))
        policy = (self.max_retries + 1) * self.timeout_s + waits
        return min(policy, self.deadline_s) if self.deadline_s else policy


@dataclass
class RequestTally:
    """What a policy's requests came to in this process (the ledger's figures that no record holds)."""

    sent: int = 0  # requests sent to the provider, retries included
    failed: int = 0  # of which ended without a usable reply (an error, a timeout, a reply refused)
    retried: int = 0  # failures that were asked again
    rejected: int = 0  # replies that came back and were refused as unusable, whatever the body (their usage,
    # where it has counts to believe, is billed: see rejected_usage)
    cache_hits: int = 0  # turns answered from the response cache: nothing sent
    answered: int = 0  # requests whose reply was usable
    too_long: int = 0  # requests refused as too long for the model (each ends its rollout)
    worst_case_s: float = 0.0  # the longest one request may take

    def summary(self) -> dict:
        return {
            "requests_sent": self.sent,
            "requests_failed": self.failed,
            "retries": self.retried,
            "replies_rejected": self.rejected,
            # This process's own: the ledger's `cache_hits` counts every record's, earlier runs' included.
            "cache_hits_this_run": self.cache_hits,
        }


# A token's text is rarely over a few bytes; a reply whose text exceeds this many bytes per token of
# `max_new_tokens` (or whose reported output tokens exceed the limit by a tenth) was not bounded by it.
MAX_BYTES_PER_TOKEN = 32
# How far a reply's token counts may exceed what its request could use before they are not believed:
# providers add tokens no request shows (chat templates, tool prompts, a system prompt of their own).
PLAUSIBLE_FACTOR, PLAUSIBLE_SLACK = 4, 4096


def reply_problem(reply: Reply, ask: Ask) -> str | None:
    """Why a reply cannot be used (it is asked again), or None."""
    problem = usage_problem(reply.usage, ask)
    if problem:
        return problem
    message = reply.message
    if not (message.content or message.tool_calls) and reply.finish_reason not in FINAL_WITHOUT_TEXT:
        return "an empty reply (no text and no tool call)"
    try:
        reply.model_dump_json()
    except ValueError:  # pydantic's serializer refuses lone surrogates: such text cannot be stored or sent on
        return "text that is not valid Unicode (lone surrogates)"
    return None


def usage_problem(usage: Usage, ask: Ask) -> str | None:
    """Why a reply's token counts cannot be billed as sent (they are not: the real bill is unknown), or None."""
    counts = f"in {usage.tokens_in}, out {usage.tokens_out}, cached {usage.tokens_cached}"
    if min(usage.tokens_in, usage.tokens_out, usage.tokens_cached) < 0 or usage.tokens_cached > usage.tokens_in:
        return f"impossible token counts ({counts})"
    most_in = PLAUSIBLE_FACTOR * reservation(*ask.prompt, 0) + PLAUSIBLE_SLACK
    most_out = PLAUSIBLE_FACTOR * ask.sampling.max_new_tokens + PLAUSIBLE_SLACK
    if usage.tokens_in > most_in or usage.tokens_out > most_out:
        return f"implausible token counts ({counts}; this request could use at most {most_in} in, {most_out} out)"
    return None


def billable(usage: Usage | None, ask: Ask) -> Usage | None:
    """The usage a reply carried, where its counts can be billed as sent."""
    return usage if usage is not None and usage_problem(usage, ask) is None else None


def flag_oversized(reply: Reply, sampling: Sampling) -> Reply:
    """A reply longer than `max_new_tokens` allows, cut to that bound and flagged `oversized` (not cached,
    dropped by curate); any other reply as it is. What is measured is everything the model wrote, as the
    limit counts it: text, reasoning (thinking is part of `max_tokens` at every provider) and tool calls."""
    limit = sampling.max_new_tokens * MAX_BYTES_PER_TOKEN + 1024
    too_many_tokens = reply.usage.tokens_out > sampling.max_new_tokens * 1.1 + 16
    if not too_many_tokens and not too_long(written_parts(reply.message), limit):
        return reply
    return reply.model_copy(
        update={"message": cut_message(reply.message, limit), "finish_reason": "oversized", "logprobs": None}
    )


def written_parts(message: Message) -> list[str]:
    """The texts of a reply's message that its output tokens pay for."""
    calls = [part for c in message.tool_calls or [] for part in (c.id, c.function.name, c.function.arguments)]
    return [message.content or "", message.reasoning or "", message.reasoning_signature or "", *calls]


def too_long(parts: list[str], limit: int) -> bool:
    chars = sum(map(len, parts))  # encoded only where it could matter: a reply's bytes are up to 4 per character
    return chars > limit or (4 * chars > limit and sum(len(p.encode()) for p in parts) > limit)


def cut_message(message: Message, limit: int) -> Message:
    """`message` within `limit` bytes: its text first, then its reasoning; a reasoning signature no longer
    matching the cut reasoning, and tool calls that do not fit, are left out (the record is dropped by curate
    and never sent back)."""
    content = cut_to(message.content or "", limit)
    reasoning = cut_to(message.reasoning or "", limit - len(content.encode())) or None
    cut = message.model_copy(update={"content": content, "reasoning": reasoning})
    if reasoning != message.reasoning:
        cut.reasoning_signature = None
    if too_long(written_parts(cut), limit):
        cut = cut.model_copy(update={"reasoning_signature": None, "tool_calls": None})
    return cut


def cut_to(text: str, limit: int) -> str:
    return text if len(text) * 4 <= limit else text.encode()[: max(0, limit)].decode(errors="ignore")


class APIPolicy:
    def __init__(
        self, backend: Backend, env, max_turns: int, settings: ApiSettings, limiter: RateLimiter, cache: ResponseCache
    ):
        self.backend, self.env, self.max_turns, self.settings = backend, env, max_turns, settings
        self.limiter, self.cache = limiter, cache
        self.spec = f"{backend.provider}:{backend.model}"
        self.request_tally = RequestTally(worst_case_s=settings.worst_case_s())
        self.served_elsewhere: set[str] = set()  # served models already warned of
        self.budget: BudgetGuard | None = None  # a dollar cap, set by the stage that has one
        self.unpriced: str | None = None  # under the cap: a model that answered with no price (`_note_unpriced`)
        # Called with each billed reply's usage as it arrives (a usable one or one refused), before anything
        # else keeps it: set by a stage that must bill replies a kill keeps from its records (generate).
        self.paid: Callable[[Usage], None] | None = None

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        return asyncio.run(self._rollout_all(requests, sampling, seed))

    async def _rollout_all(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        in_flight = asyncio.Semaphore(self.settings.concurrency)
        episodes = [asyncio.ensure_future(self._episode(r, sampling, seed, in_flight)) for r in requests]
        try:
            rollouts = await asyncio.gather(*episodes)
            self._stop_if_unpriced()  # once every request sent has ended, its reply kept
            return rollouts
        except BaseException as stop:
            # One episode stopped the call (an error retrying cannot fix, a cancellation): the others must end
            # before the backend closes under them, or each would report the closed client as a connection error.
            for episode in episodes:
                episode.cancel()
            await asyncio.gather(*episodes, return_exceptions=True)
            # What had finished was paid for: the caller keeps it (`finished_rollouts`).
            stop.finished_rollouts = [e.result() for e in episodes if not e.cancelled() and e.exception() is None]
            raise
        finally:
            try:
                self.cache.close()  # everything durable, even against a machine crash
            finally:
                await self.backend.close()

    async def _episode(
        self, request: Request, sampling: Sampling, seed: int, in_flight: asyncio.Semaphore
    ) -> Trajectory:
        task, tools = request.task, list(self.env.tools)
        messages, usage, logprobs, finish, rejected = list(task.prompt), [], [], "stop", []
        try:
            for turn in range(self.max_turns):
                reply = await self._turn(messages, tools, sampling, seed, request.sample_index, in_flight, rejected)
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
            error = f"request failed: {exc}"
        except BudgetExhausted as exc:
            error = f"{NOT_SENT}: {exc}"
        return Trajectory(
            task_id=task.id,
            sample_index=request.sample_index,
            policy=self.spec,
            messages=messages,
            usage=usage,
            rejected_usage=rejected,
            logprobs=logprobs if any(lp is not None for lp in logprobs) else None,
            finish_reason=None if error else ("stop" if finish == "tool_calls" else finish),
            error=error,
            provenance=self._provenance(sampling, seed),
        )

    def _provenance(self, sampling: Sampling, seed: int) -> Provenance:
        return Provenance(
            provider=self.backend.provider,
            model=self.backend.model,
            endpoint=self.backend.endpoint,
            sampling=asdict(sampling),
            seed=seed,
            created=time.time(),
        )

    def _sample(self, messages: list[Message], tools: list[dict], sampling: Sampling, seed: int, sample_index: int):
        """What names one turn's sample: model, conversation, sampling, run seed, sample index. The response
        cache's key adds the server (another endpoint may serve other weights under the model's name); the
        seed sent to the provider does not (`provider_seed`), so the same recipe asks a model for the same
        samples wherever it is served (a local server on another port, a mirror)."""
        return {
            "provider": self.backend.provider,
            "model": self.backend.model,
            "messages": [m.model_dump(exclude_none=True) for m in messages],
            "tools": tools,
            "sampling": [sampling.temperature, sampling.top_p, sampling.max_new_tokens, self.settings.top_logprobs],
            "seed": seed,
            "sample_index": sample_index,
        }

    def _answer_options(self) -> dict:
        """The settings beside the sample that change the answer, for the response cache's key: the backend's
        own (Anthropic's thinking budget: a reply without thinking is no answer to a request with it) and
        whether a seed is sent. Only those not at their defaults: a default leaves every key as it was, so a
        cache filled before a setting was keyed is still read."""
        options = dict(getattr(self.backend, "answer_options", {}))  # a backend with none may leave it out
        if not self.settings.send_seed:
            options["send_seed"] = False
        return options

    async def _turn(
        self, messages, tools, sampling: Sampling, seed: int, sample_index: int, in_flight, rejected
    ) -> Reply:
        """One policy turn: from the cache, or asked of the provider with retries until `api.deadline_s`.
        The usage of replies refused on the way goes to `rejected` (they were billed)."""
        sample = self._sample(messages, tools, sampling, seed, sample_index)
        key = ResponseCache.key(sample | {"endpoint": self.backend.endpoint} | self._answer_options())
        cached = self.cache.get(key)
        if cached is not None:
            self.request_tally.cache_hits += 1
            return cached.model_copy(update={"usage": cached.usage.model_copy(update={"from_cache": True})})
        ask = Ask(messages, tools, sampling, provider_seed(sample))
        rng = None  # the backoff's jitter, seeded by the key: made on the first retry, not per request
        for attempt in range(self.settings.max_retries + 1):
            reply, failure = await self._attempt(ask, in_flight, rejected)
            if reply is not None:
                if reply.finish_reason in CACHEABLE:
                    self.cache.put(key, reply)  # written (a kill cannot lose it) before it is used
                return reply
            if not failure.retry:
                self._stop_unless_this_request_only(failure)
                raise RequestError(failure)
            if attempt == self.settings.max_retries:
                raise RequestError(Failure(False, f"{failure.message} (after {attempt} retries)"))
            if failure.answered:  # the same seed would draw the same unusable reply (module docstring)
                ask.seed = provider_seed(sample | {"retry": attempt + 1})
            rng = rng or random.Random(key)
            await self._wait_to_retry(attempt, failure, rng, ask.deadline)  # set by the first try
        raise AssertionError("unreachable")

    def _stop_unless_this_request_only(self, failure: Failure) -> None:
        """A failure retrying cannot fix stops the call (a key, a quota), unless it is this request's alone
        (too long for the model), as long as some request of the policy was ever answered: when none was after
        `TOO_LONG_BEFORE_STOP` such failures, they are the settings' (max_new_tokens over the model's context),
        and the stage stops rather than send every request to be refused."""
        tally = self.request_tally
        if not failure.this_request_only:
            raise WarmstartError(f"{self.spec}: {failure.message}")
        tally.too_long += 1
        if not (tally.answered or tally.cache_hits) and tally.too_long >= TOO_LONG_BEFORE_STOP:
            raise WarmstartError(
                f"{self.spec}: {failure.message} ({tally.too_long} requests refused as too long and none answered: "
                "is the max_new_tokens asked for (generate's, eval's, grpo's or env.judge's, as this policy serves) more "
                "than the model's context allows?)"
            )

    async def _wait_to_retry(self, attempt: int, failure: Failure, rng: random.Random, deadline: float) -> None:
        cap = self.settings.max_retry_after_s
        wait = backoff_seconds(attempt, self.settings.backoff_s, failure.retry_after, rng, cap)
        # A retry left less than a try's least time would be sent only to be abandoned (and maybe billed).
        if time.monotonic() + wait + min(self.settings.timeout_s, LEAST_TRY_S) >= deadline:
            raise RequestError(
                Failure(
                    False, f"{failure.message}; gave up after {attempt + 1} tries: another would pass api.deadline_s"
                )
            )
        capped = (
            f" (Retry-After {failure.retry_after:.0f} s capped by api.max_retry_after_s)"
            if (failure.retry_after or 0) > cap
            else ""
        )
        log.warning("%s: %s; retry %d in %.1f s%s", self.spec, failure.message, attempt + 1, wait, capped)
        self.request_tally.retried += 1
        await asyncio.sleep(wait)

    async def _attempt(self, ask: Ask, in_flight, rejected: list[Usage]) -> tuple[Reply | None, Failure | None]:
        """One request: (a usable reply, None) or (None, why not). Under a dollar cap (`budget`) it is sent
        only once its largest possible cost fits (`BudgetExhausted` when it never will)."""
        largest = self._largest_cost(ask)
        queued = time.monotonic()  # waiting from here until sent is not the request's (`_send`)
        async with in_flight:
            if self.unpriced is not None:  # the cap cannot be kept: nothing more is sent (`_note_unpriced`)
                raise BudgetExhausted(self._unpriced_said())
            if self.budget is not None:
                await self.budget.reserve(largest)
            sent = None
            try:
                sent = await self._send(ask, rejected, queued)
                if sent.billed is not None:
                    sent.billed.reply_id = uuid.uuid4().hex
                    if self.paid is not None:
                        self.paid(sent.billed)
                return sent.reply, sent.failure
            finally:
                if self.budget is not None:  # a bill not known (a timeout, a cancellation) counts at its largest
                    known = sent is not None and sent.bill_known
                    await self.budget.settle(largest, sent.billed if known else None, 0.0 if known else largest)
                    self._note_unpriced(sent.billed if sent is not None else None)

    def _note_unpriced(self, billed: Usage | None) -> None:
        """Under a dollar cap, note the first billed reply served by a model the price table has no price for.

        The cap is kept by each reply's price. The guard would settle this one at the asked model's
        (runs/budget.py), which a dearer model's may exceed many times over, while the ledger records its price
        as unknown (null), rightly: no price is known. A cap kept on a guessed price is no cap, so nothing more
        is sent and the call stops once the requests in flight have ended (`_stop_if_unpriced`): their replies
        are kept and cached, the ledger names the model, and a rerun with its price in api.prices goes on
        (a rerun without one is refused when the stage starts, as the cap cannot be kept)."""
        if billed is None or billed.model is None or self.unpriced is not None:
            return
        if price_of(billed.model, cap_prices(self.budget)) is None:
            self.unpriced = billed.model

    def _stop_if_unpriced(self) -> None:
        if self.unpriced is not None:
            raise WarmstartError(self._unpriced_said())

    def _unpriced_said(self) -> str:
        return (
            f"{self.spec}: the server says {self.unpriced!r} answered, and api.prices has no price for it, so "
            f"generate.budget_usd cannot be kept; everything answered is kept: add {self.unpriced!r} to api.prices "
            "and run again"
        )

    def _largest_cost(self, ask: Ask) -> float:
        if self.budget is None:
            return 0.0
        return self.budget.largest_cost(*ask.prompt, ask.sampling.max_new_tokens)

    async def _send(self, ask: Ask, rejected: list[Usage], queued: float) -> Sent:
        """Send one request within the rate limits and `api.timeout_s`; check the reply. `queued`: when it
        began to wait for a slot (`api.concurrency`), the dollar cap and the rate limits."""
        seed = ask.seed if self.settings.send_seed else None
        # the most tokens the request may use, read by a TPM limit only
        tokens = reservation(*ask.prompt, ask.sampling.max_new_tokens) if self.limiter.counts_tokens else 0
        entry = await self.limiter.acquire(tokens)
        now = time.monotonic()
        # From the first send, and waiting to send is not the request's: a retry queued behind slow requests
        # would otherwise be sent with no time left, the provider billing a request the client abandons.
        if ask.deadline is None:
            ask.deadline = now + self.request_tally.worst_case_s
        else:
            ask.deadline += now - queued
        limit_s = max(0.001, min(self.settings.timeout_s, ask.deadline - now))
        self.request_tally.sent += 1
        try:
            # asyncio.timeout, not wait_for: no extra task and event-loop rounds per request
            async with asyncio.timeout(limit_s):
                reply = await self.backend.complete(
                    ask.messages, ask.tools, ask.sampling, seed, self.settings.top_logprobs
                )
        except RequestError as exc:
            if exc.failure.answered:  # a reply came back, refused by the backend (not JSON, no choices, ...)
                self.request_tally.rejected += 1
            billed = billable(exc.billed, ask)
            self.limiter.release(entry, billed.tokens_in + billed.tokens_out if billed else None)
            # unknown: a reply without counts, or with counts not to believe
            known = not exc.bill_unknown and (exc.billed is None or billed is not None)
            return Sent(None, self._failed(exc.failure, billed, rejected), billed, bill_known=known)
        except TimeoutError:  # asyncio.timeout's; the SDK's own timeout is an APITimeoutError
            self.limiter.release(entry, None)
            failure = Failure(True, self._no_answer_said(limit_s))
            return Sent(None, self._failed(failure, None, rejected), None, bill_known=False)
        except asyncio.CancelledError:  # the call is stopping (`_rollout_all`): the slot is not held for good
            self.limiter.release(entry, None)
            raise
        billed = billable(reply.usage, ask)
        self.limiter.release(entry, billed.tokens_in + billed.tokens_out if billed else None)
        problem = reply_problem(reply, ask)
        if problem:
            self.request_tally.rejected += 1
            failure = self._failed(Failure(True, f"invalid reply: {problem}", answered=True), billed, rejected)
            return Sent(None, failure, billed, bill_known=billed is not None)
        self._note_served_model(reply.usage.model)
        self.request_tally.answered += 1
        return Sent(split_reasoning_tags(flag_oversized(reply, ask.sampling)), None, billed)

    def _no_answer_said(self, limit_s: float) -> str:
        """What ended a try that got no answer in `limit_s`: `api.timeout_s`, or what was left of the deadline."""
        if limit_s >= self.settings.timeout_s:
            return f"no answer within api.timeout_s={self.settings.timeout_s}"
        deadline = f"api.deadline_s={self.settings.deadline_s}" if self.settings.deadline_s else "api.deadline_s"
        return f"no answer within the {limit_s:.1f} s left before {deadline} (the request's retries and waits included)"

    def _failed(self, failure: Failure, billed: Usage | None, rejected: list[Usage]) -> Failure:
        self.request_tally.failed += 1
        if billed is not None:
            rejected.append(billed)
        return failure

    def _note_served_model(self, served: str | None) -> None:
        """Warn, once per model, of a reply served by a model other than the one asked for (a dated
        snapshot of it, `gpt-4o-2024-08-06` for `gpt-4o`, is the same model; `gpt-4o-mini` is not)."""
        if served is None or same_model(served, self.backend.model) or served in self.served_elsewhere:
            return
        self.served_elsewhere.add(served)
        log.warning(
            "%s: the server says %r answered; its replies are priced as %r by api.prices (recorded without a price "
            "where it has none)",
            self.spec,
            served,
            served,
        )


def cap_prices(budget) -> dict[str, dict]:
    """The price table a dollar cap settles by: a `BudgetGuard`'s own, or (with [ray]) that of the guard a
    `cluster.budget.SharedBudget` prices requests by."""
    return getattr(budget, "pricing", budget).prices


def same_model(served: str, asked: str) -> bool:
    """Whether the model a server says answered is the one asked for, or a dated snapshot of it (the rule
    prices follow: `runs.costs.SNAPSHOT_SUFFIX`); an alias ending in "-latest" names its snapshots too."""
    base = asked.removesuffix("-latest")
    return served == asked or (served.startswith(base) and SNAPSHOT_SUFFIX.fullmatch(served[len(base) :]) is not None)


def finished_rollouts(stop: BaseException | None) -> list[Trajectory]:
    """The rollouts that had finished when `stop` ended a `rollout` call. Ctrl-C reaches the call as a
    cancellation, which asyncio.run turns into a KeyboardInterrupt raised while handling it: the list is on
    that cancellation, the interrupt's context."""
    while stop is not None:
        found = getattr(stop, "finished_rollouts", None)
        if found is not None:
            return found
        stop = stop.__context__
    return []


@dataclass
class Sent:
    """What one request came to: a usable reply or a failure, and what the provider billed for it
    (`bill_known` false where no answer came back: a provider may still bill a request that timed out)."""

    reply: Reply | None
    failure: Failure | None
    billed: Usage | None
    bill_known: bool = True


def prompt_size(messages: list[Message], tools: list[dict]) -> tuple[int, int]:
    """A request's prompt as (bytes of its messages and tool schemas, message count): bounds its tokens."""
    size = sum(len(json.dumps(m.model_dump(exclude_none=True)).encode()) for m in messages)
    return size + len(json.dumps(tools).encode()), len(messages)


def provider_seed(sample: dict) -> int:
    """The seed a provider is sent for a sample (`APIPolicy._sample`): stable across runs and servers."""
    return int(ResponseCache.key(sample)[:8], 16)


@dataclass
class Ask:
    """What one turn asks the provider, the same on every try but for the seed after an unusable reply."""

    messages: list[Message]
    tools: list[dict]
    sampling: Sampling
    seed: int  # the provider's seed, where it honours one: per request, stable
    deadline: float | None = None  # time.monotonic() by which the turn gives up: set when it is first sent

    @cached_property
    def prompt(self) -> tuple[int, int]:
        """`prompt_size`: measured once a try needs it (a TPM limit, a dollar cap, a reply's counts), then kept."""
        return prompt_size(self.messages, self.tools)
