"""Client-side rate limits and the retry policy shared by the API backends.

RateLimiter keeps requests-per-minute and tokens-per-minute under their limits over a sliding window,
as the provider counts them. A request is counted from the moment it is sent until a full window after
its response came back: the provider saw it arrive somewhere in between, so no window the provider can
draw holds more than the limits. Its tokens are reserved up front with an upper bound (prompt bytes +
max tokens) and settled to the real count when the usage comes back.

Retry policy: connection errors, timeouts, 408/409/425, 5xx (but 501/505/511: `NEVER_RETRYABLE_5XX`),
rate-limit 429s and replies that cannot be used are retried with exponential backoff and full jitter,
waiting at least what `Retry-After` asks, up to `api.max_retry_after_s`. 400/401/403/404/422 and a 429
that says a spend or quota limit was reached are not: retrying cannot fix them and may cost money, so the
stage stops with the provider's message. But for a request too long for the model (a prompt over
its context window, a 413): that is the request's own fault, not the stage's, so its rollout ends in an
error and the others go on (a multi-turn rollout's conversation grows until one does not fit).

A spend-limit 429 is told from a rate-limit one by the error's code or type where it is one that says
which (`insufficient_quota`, `billing_hard_limit_reached`, `billing_not_active` / `rate_limit_exceeded`,
`rate_limit_error`), else by phrases of its message with its URLs left out: ordinary rate-limit messages
link to quota and billing pages ("https://aka.ms/oai/quotaincrease", ".../account/billing"). A 429 that says
when to ask again (a per-minute quota's id, a Retry-After, "Please retry in 2.5s": Gemini words its per-minute
limit "You exceeded your current quota") is a rate limit whatever its words.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import time
from dataclasses import dataclass

from ..errors import WarmstartError

RETRYABLE_BELOW_500 = {408, 409, 425, 429}
# Every 5xx is a server's or a proxy's fault a moment may end (Cloudflare's 520-524 in front of OpenAI's API and
# many OpenAI-compatible hosts, a 507 of a full disk, Anthropic's 529), as the official SDKs retry it, but for
# those that say the request itself can never be served, the same on every try: 501 (its method or endpoint not
# implemented), 505 (its HTTP version), 511 (the network wants a login first: a captive portal, which no wait
# logs into). Those stop the stage, with the server's words.
NEVER_RETRYABLE_5XX = {501, 505, 511}
SPEND_LIMIT_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}
RATE_LIMIT_CODES = {"rate_limit_exceeded", "rate_limit_error"}
# Gemini words every quota 429 as "You exceeded your current quota", per-minute rate limits included; its
# quota's id (`details[].violations[].quotaId`) says which: a per-minute or per-second one is a rate limit.
SHORT_QUOTA_IDS = ("PerMinute", "PerSecond")
RETRY_DELAY = re.compile(r"(?:retry|try again) (?:in|after) \d")  # "Please retry in 2.5s", "try again in 20ms"
SPEND_LIMIT_PHRASES = (
    "exceeded your current quota",
    "spend limit",
    "spending limit",
    "credit balance",
    "billing hard limit",
)
URL = re.compile(r"\w+://\S+")
MAX_BACKOFF_S = 60.0


# A request too long for the model: its prompt (or prompt + max_tokens) over the context window, or a body
# over the server's size limit. By the error's code where the server gives one (OpenAI's, llama.cpp's,
# Anthropic's 413), else by its words (vLLM, SGLang, TGI, Anthropic's "prompt is too long").
TOO_LONG_CODES = {
    "context_length_exceeded",
    "exceed_context_size_error",
    "string_above_max_length",
    "request_too_large",
}
TOO_LONG_PHRASES = (
    "context length",
    "context window",
    "context size",
    "context limit",
    "prompt is too long",
    "input is too long",
    "too many input tokens",
    # Gemini: "The input token count (N) exceeds the maximum number of tokens allowed (M)"
    "maximum number of tokens allowed",
)
# TGI, as Together and Hugging Face's router word it (a 422): "Input validation error: `inputs` tokens +
# `max_new_tokens` must be <= 2048. Given: ...", or "`inputs` must have less than 4096 tokens".
TOO_LONG_PATTERN = re.compile(
    r"inputs\W{0,3} tokens \+ \W{0,3}max_new_tokens\W{0,3} must be <=|inputs\W{0,3} must have less than"
)


@dataclass
class Failure:
    retry: bool
    message: str
    retry_after: float | None = None  # seconds the server asked for
    answered: bool = False  # the server did answer, unusably: the next try asks with another seed
    # Not retried, but this request's alone (too long for the model): its rollout ends in an error and the
    # stage goes on, where any other failure retrying cannot fix (a key, a quota) stops it.
    this_request_only: bool = False


def classify(status: int | None, body: str, headers: dict[str, str] | None, message: str) -> Failure:
    """What to do after a failed request. `status` None: no HTTP answer (connection, timeout, bad body)."""
    if status is None:
        return Failure(True, message)
    wait = retry_after_seconds(headers or {})
    if status == 429 and is_spend_limit(body, wait):
        return Failure(False, f"HTTP 429, a spend or quota limit was reached: {message}")
    if is_retryable_status(status):
        return Failure(True, f"HTTP {status}: {message}", wait)
    if status in (400, 413, 422) and is_too_long(status, body, message):
        return Failure(
            False, f"HTTP {status}, the request is too long for the model: {message}", this_request_only=True
        )
    return Failure(False, f"HTTP {status}: {message}")


def is_retryable_status(status: int) -> bool:
    """Whether an error status may be gone when asked again (`RETRYABLE_BELOW_500`, `NEVER_RETRYABLE_5XX`)."""
    return status in RETRYABLE_BELOW_500 or 500 <= status < 600 and status not in NEVER_RETRYABLE_5XX


def is_too_long(status: int, body: str, message: str) -> bool:
    """Whether a 4xx says the request is too long for the model (`TOO_LONG_CODES`, `TOO_LONG_PHRASES`,
    `TOO_LONG_PATTERN`)."""
    error = error_object(body)
    codes = {str(error.get(field)) for field in ("code", "type")}
    if status == 413 or codes & TOO_LONG_CODES:
        return True
    text = (error_message(error) or message).lower()
    return any(phrase in text for phrase in TOO_LONG_PHRASES) or TOO_LONG_PATTERN.search(text) is not None


def is_spend_limit(body: str, retry_after: float | None = None) -> bool:
    """Whether a 429's body (JSON as the provider sent it, or text) says a spend or quota limit was reached.
    `retry_after`: the seconds its headers ask to wait, if they do."""
    error = error_object(body)
    codes = {str(error.get(field)) for field in ("code", "type")}
    if codes & SPEND_LIMIT_CODES:
        return True
    if codes & RATE_LIMIT_CODES:
        return False
    text = URL.sub("", error_message(error) or body).lower()
    if lifts_soon(error, text, retry_after):
        return False
    return any(phrase in text for phrase in SPEND_LIMIT_PHRASES)


def lifts_soon(error: dict, text: str, retry_after: float | None) -> bool:
    """Whether a 429 says when to ask again, so is a rate limit whatever its words (Gemini's per-minute limit
    reads "You exceeded your current quota ..."): by its quota's id where it names one (a per-day quota is
    spent for the day: the stage stops), else by a delay to wait (a Retry-After, "Please retry in 2.5s")."""
    quota_ids = [str(v.get("quotaId")) for v in quota_violations(error) if v.get("quotaId")]
    if quota_ids:
        return all(any(short in quota for short in SHORT_QUOTA_IDS) for quota in quota_ids)
    return retry_after is not None or RETRY_DELAY.search(text) is not None


def quota_violations(error: dict) -> list[dict]:
    """The `violations` of a Google-style error's QuotaFailure details."""
    details = error.get("details")
    found = []
    for detail in details if isinstance(details, list) else []:
        violations = detail.get("violations") if isinstance(detail, dict) else None
        found += [v for v in violations if isinstance(v, dict)] if isinstance(violations, list) else []
    return found


def error_object(body: str) -> dict:
    """The error object of an error body: OpenAI's `{"error": {...}}` (the SDK hands over what is inside),
    Anthropic's `{"type": "error", "error": {...}}`, Azure's, and Google's, which Gemini sends in a list of
    one (its first is read); empty where the body is not a JSON object."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        return {}
    inner = parsed.get("error")
    return inner if isinstance(inner, dict) else parsed


def error_message(error: dict) -> str | None:
    """What an error object says: its `message`, or TGI's `{"error": "...", "error_type": ...}` text."""
    said = error.get("message")
    if not isinstance(said, str):
        said = error.get("error")
    return said if isinstance(said, str) and said else None


def retry_after_seconds(headers: dict[str, str]) -> float | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return float(lowered["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None  # unreadable: the backoff alone decides


def backoff_seconds(attempt: int, base_s: float, retry_after: float | None, rng: random.Random, cap_s: float) -> float:
    """Full jitter over base * 2^attempt (capped), but never less than the server's Retry-After, which is
    itself obeyed only up to `cap_s` (`api.max_retry_after_s`): a server asking for a week waits `cap_s`."""
    jittered = rng.uniform(0, min(MAX_BACKOFF_S, base_s * 2**attempt))
    return max(jittered, min(retry_after or 0.0, cap_s))


def longest_backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """The longest `backoff_seconds` can wait before retry `attempt + 1`."""
    return max(min(MAX_BACKOFF_S, base_s * 2**attempt), cap_s)


class RateLimiter:
    """Sliding-window RPM / TPM limits for one backend, shared by all its concurrent requests.

    Single-threaded asyncio makes check-then-append atomic (no await in between), so no lock is needed;
    the state is plain data and survives across event loops (one per `rollout` call)."""

    def __init__(self, rpm: int | None, tpm: int | None, window_s: float = 60.0):
        self.rpm, self.tpm, self.window_s = rpm, tpm, window_s
        self.entries: list[list] = []  # [sent at, finished at or None while in flight, tokens]

    @property
    def counts_tokens(self) -> bool:
        """Whether `acquire` needs a request's token reservation (without a TPM limit it is never read)."""
        return self.tpm is not None

    def _expire(self, now: float) -> None:
        self.entries = [e for e in self.entries if e[1] is None or e[1] + self.window_s > now]

    def _fits(self, tokens: int) -> bool:
        if self.rpm is not None and len(self.entries) >= self.rpm:
            return False
        return self.tpm is None or sum(e[2] for e in self.entries) + tokens <= self.tpm

    async def acquire(self, tokens: int) -> list:
        if self.tpm is not None and tokens > self.tpm:
            raise WarmstartError(
                f"api.tpm: one request may use up to {tokens} tokens, more than the limit of {self.tpm}"
            )
        if self.rpm is None and self.tpm is None:
            return [time.monotonic(), None, tokens]  # no limits: nothing to count, nothing kept
        while True:
            now = time.monotonic()
            self._expire(now)
            if self._fits(tokens):
                entry = [now, None, tokens]
                self.entries.append(entry)
                return entry
            finished = [e[1] for e in self.entries if e[1] is not None]
            # The next slot opens when the oldest finished entry leaves the window; in-flight ones
            # must finish first, so poll briefly when every entry is still in flight.
            wait = min(finished) + self.window_s - now if finished else 0.05
            await asyncio.sleep(max(wait, 0.005))

    def release(self, entry: list, tokens: int | None) -> None:
        """The request is over; `tokens` is what it really used (None: keep the reservation)."""
        entry[1] = time.monotonic()
        if tokens is not None:
            entry[2] = tokens


def reservation(messages_bytes: int, message_count: int, max_tokens: int) -> int:
    """An upper bound on a request's tokens: byte-level tokenizers never give more tokens than bytes."""
    return messages_bytes + 8 * message_count + max_tokens
