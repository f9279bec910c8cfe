"""What an API backend is (`openai_api.py`, `anthropic_api.py`): one conversation in, one assistant reply
out (`Backend.complete`), failures named (`RequestError`, classified by `limits.classify`); and what both
check before any request is paid for (the key, the endpoint's model list) and share (TLS settings).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

import httpx2
from pydantic import ValidationError

from ..errors import WarmstartError, first_line
from ..types import Message, Record, Sampling, Usage
from .bounded_http import ReplyTooLarge, UndecodableBody, reply_too_large
from .limits import Failure, classify, error_message, error_object, is_retryable_status


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


class RequestError(Exception):
    """A failed request, classified (see limits.classify). `billed`: the usage a reply carried, where the
    request got one that could not be used (no choices, text that is not Unicode): the provider bills it.
    `bill_unknown`: a reply came back without counts to bill by (it may still have been billed)."""

    def __init__(self, failure: Failure, billed: Usage | None = None, bill_unknown: bool = False):
        super().__init__(failure.message)
        self.failure, self.billed, self.bill_unknown = failure, billed, bill_unknown


def no_usage_reply() -> RequestError:
    """A reply with no token counts: refused (its cost would be unknown, not 0) and asked again; under a
    dollar cap it counts at the request's largest possible cost."""
    said = "invalid reply: no token usage (none, or counts that are not whole numbers)"
    return RequestError(Failure(True, said, answered=True), bill_unknown=True)


def invalid_reply(problem: str, billed: Usage | None = None) -> RequestError:
    """A reply that came back but cannot be used: retried like a server error, its usage (if any) billed."""
    return RequestError(Failure(True, f"invalid reply: {problem}", answered=True), billed)


def require_parsed(response, expected: type) -> None:
    """Refuse a 200 whose body was not the JSON asked for: the SDKs return a body of another content type
    (an HTML error page from a proxy, an event stream) as its text, not as `expected`."""
    if isinstance(response, str):
        raise unreadable_reply(f"not JSON: {quoted(response)}")
    if not isinstance(response, expected):  # JSON, but a list, a number, null: not the object asked for
        raise unreadable_reply(f"JSON but not an object: {json_kind(response)}")


def unreadable_reply(what: str) -> RequestError:
    """A 200 whose body is no reply at all (`what` it is: an HTML page from a proxy or a captive portal, a
    body cut short, bytes that are not UTF-8): a server fault, asked again as one. Something came back, so
    the provider may have billed it, how much unknown: under a dollar cap it counts at the request's largest
    cost, never as $0. It is asked again with another seed (`answered`), as any reply that came back
    unusable is: a server whose own encoder spoils a reply would spoil the same seed's reply again."""
    failure = Failure(True, f"invalid reply: the server answered 200 with a body that is {what}", answered=True)
    return RequestError(failure, bill_unknown=True)


def unreadable_body(exc: BaseException | None) -> str | None:
    """What a body was that could not be decoded (`exc`, or an exception behind it: the JSON or UTF-8
    decoder's error, which holds the body, or `bounded_http`'s for a body not in its Content-Encoding),
    quoted; None where `exc` is another failure. Only a 2xx answer's body is decoded as a reply: any other
    status is an APIStatusError."""
    while exc is not None:
        if isinstance(exc, json.JSONDecodeError):
            return f"not JSON: {quoted(exc.doc)}"
        if isinstance(exc, UnicodeDecodeError):
            text = bytes(exc.object).decode(exc.encoding, errors="replace")
            return f"not {exc.encoding.upper()} text ({exc.reason} at byte {exc.start}): {quoted(text)}"
        if isinstance(exc, UndecodableBody):
            return f"{exc.what}: {quoted(exc.start.decode('utf-8', errors='replace'))}"
        exc = exc.__cause__
    return None


# How much of a body an error quotes: enough to tell a proxy's page from a reply cut short, on one line.
QUOTED_CHARS = 80


def quoted(text: str) -> str:
    """`text` as an error quotes it: on one line (its repr), its first `QUOTED_CHARS` characters."""
    if len(text) <= QUOTED_CHARS:
        return repr(text)
    return f"{text[:QUOTED_CHARS]!r} (first {QUOTED_CHARS} characters)"


# A 200's body is the server's to get wrong in any way JSON allows (usage that is a list, choices that are
# an object, a stop reason that is a number): the SDKs build their types from it without checking, so
# reading it can raise any of these. None of them may stop a stage: such a body is an unusable reply.
UNREADABLE = (ValidationError, TypeError, AttributeError, KeyError, IndexError, ValueError)


def read_usage(read) -> Usage:
    """The usage `read()` takes from a parsed reply; a reply without counts warmstart can read is refused
    (`no_usage_reply`)."""
    try:
        usage = read()
    except UNREADABLE:
        usage = None
    if usage is None:  # the cost would be unknown, not 0
        raise no_usage_reply()
    return usage


def read_reply(read, usage: Usage) -> Reply:
    """The Reply `read()` makes of a parsed reply; one it cannot read is refused, its usage billed, naming
    what is wrong where a backend checked it (`ReplyShape`), else the exception reading it raised."""
    try:
        return read()
    except UNREADABLE as exc:  # e.g. a tool call without a name, content that is not text
        said = str(exc) if isinstance(exc, ReplyShape) else type(exc).__name__
        raise invalid_reply(f"a message warmstart cannot read ({said})", usage) from None


class ReplyShape(ValueError):
    """A part of a parsed reply that is not what the API says it is, named: `choices[0].message is null`."""


def json_kind(value) -> str:
    """What a JSON value is, as an error names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "an object"


def require_kind(value, kinds: tuple[type, ...], where: str, wanted: str) -> None:
    """Raise `ReplyShape` where `value` (the reply's part at `where`) is not one of `kinds` (`wanted`)."""
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise ReplyShape(f"{where} is {json_kind(value)}, not {wanted}")


# A log-prob computed in float32 can round a hair above 0; anything more is no log-probability.
LOGPROB_SLACK = 1e-3


def logprob_problem(value) -> str | None:
    """Why `value` is not a log-probability (a finite number, at most 0), or None. A NaN or a positive one
    would pass into a distillation loss unseen; a null (None) would pass as a token with no teacher
    distribution. The one place the APIs send a null, an echoed prompt's first token, which nothing
    predicts, is its reader's to allow (`openai_scoring.prompt_scores`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{json_kind(value)}, not a number"
    if not math.isfinite(value) or value > LOGPROB_SLACK:
        return f"{value!r}, not a log-probability (a finite number, at most 0)"
    return None


# A synchronous client (a teacher's scoring, GRPO's rollout server) leaves 429s, 5xx and dropped connections
# to the SDK's own retries (`max_retries`); a 200 that is no reply (a body that cannot be decoded, one of
# the wrong shape) the SDK hands over as it came, and the client asks again itself, as many times, waiting
# as the SDK waits between its own tries.
REASK_WAIT_S = 0.5  # the openai SDK's first wait, doubled each try
REASK_MAX_WAIT_S = 8.0  # and its longest


def asked_until_usable(ask, max_retries: int, give_up, pause=time.sleep):
    """`ask()`'s answer, asked again up to `max_retries` times while it raises a retryable `RequestError`;
    then `give_up(what was wrong, "(after N retries)")`, a WarmstartError, is raised. `pause(seconds)`
    waits between tries (a client that can be closed ends the wait by raising)."""
    for attempt in range(max_retries + 1):
        try:
            return ask()
        except RequestError as exc:
            if not exc.failure.retry or attempt == max_retries:
                after = f" (after {attempt} retries)" if attempt else ""
                raise give_up(f"{exc}{after}") from None
        pause(min(REASK_MAX_WAIT_S, REASK_WAIT_S * 2**attempt))
    raise AssertionError("unreachable")


def refuse_error_body(response) -> None:
    """Refuse a 200 whose body is an error object (`{"error": {...}}`, Anthropic's `{"type": "error"}`), as
    some proxies and aggregators send a failure upstream, saying what the server said: without this it
    reads as a reply with no usage."""
    extra = getattr(response, "model_extra", None) or {}
    error = extra.get("error")
    if not error and getattr(response, "type", None) != "error":
        return
    said = error.get("message") if isinstance(error, dict) else error
    raise invalid_reply(f"a 200 whose body is an error ({first_line(said if said is not None else 'no message')})")


def whole_count(value) -> int | None:
    """A token count as an int, or None where a server sent none or something else (a float, a string)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Backend(Protocol):
    provider: str
    model: str
    endpoint: str  # base URL: part of the cache key, since two servers may serve one name differently
    capabilities: Capabilities
    # The backend's own settings that change the answer, at other than their defaults (Anthropic's thinking
    # budget): part of the cache key. A backend without any may leave it out.
    answer_options: dict

    async def complete(
        self, messages: list[Message], tools: list[dict], sampling: Sampling, seed: int | None, top_logprobs: int
    ) -> Reply:
        """One assistant turn; raise RequestError on failure. `seed` None: send none."""

    async def close(self) -> None: ...


def request_error(exc: Exception, sdk) -> RequestError:
    """Both official SDKs (`sdk` is the module) raise APIStatusError with status, body and headers, or
    connection / timeout errors with no HTTP answer."""
    if isinstance(exc, sdk.APIStatusError):
        body = json.dumps(exc.body) if exc.body is not None else ""
        return RequestError(classify(exc.status_code, body, dict(exc.response.headers), status_said(exc, body)))
    if too_large := reply_too_large(exc):  # asked again, as a server error
        answered = too_large.status == 200  # likely billed (how much: unknown); another seed may answer shorter
        return RequestError(Failure(True, f"invalid reply: {too_large}", answered=answered), bill_unknown=answered)
    if what := unreadable_body(exc):  # a 200 that came back, not a request that got no answer
        return unreadable_reply(what)
    return RequestError(classify(None, "", None, f"{type(exc).__name__}: {exc}"))


def status_said(exc, body: str) -> str:
    """The SDK's message for an error status, with the body's own words where it left them out: the openai SDK
    says only "Error code: 429" for a body that is a JSON list (Gemini's) or not JSON at all (a proxy's page)."""
    page = isinstance(exc.body, str)  # not JSON: quoted, as a 200's body that is not JSON is
    said = (exc.body if page else error_message(error_object(body))) or ""
    if not said.strip() or said.strip() in exc.message:
        return exc.message
    return f"{exc.message} - {quoted(first_line(said, 1000)) if page else first_line(said)}"


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def api_key(base_url: str, variable: str, where: str) -> str:
    key = os.environ.get(variable)
    if key:
        return key
    if urlparse(base_url).hostname in LOOPBACK_HOSTS:
        return "unused"  # local servers usually take no key; the SDKs insist on one
    raise WarmstartError(
        f"{where}: the API key variable {variable} is not set (set it, or name another in api.key_env)"
    )


def require_served(model: str, served: list[str] | None, matches, base_url: str, where: str) -> None:
    """Refuse a model the endpoint does not list (no list: the first request will tell)."""
    if served is not None and not any(matches(model, name) for name in served):
        raise WarmstartError(
            f"{where}: {base_url} does not serve model {model!r} (it serves: {', '.join(served[:10]) or 'nothing'})"
        )


# The model list is asked before anything is paid for: a few tries (a 429, a 5xx, an overloaded 529 or a
# timeout is often gone a second later), each bounded as a whole: the SDK's timeout bounds each read, and a
# server that trickles a byte at a time would never trip it.
MODEL_LIST_TRIES = 3
MODEL_LIST_TRY_S = 15.0
MODEL_LIST_BACKOFF_S = 1.0


def served_models(client, sdk, base_url: str, where: str) -> list[str] | None:
    """The endpoint's model ids, None when it lists none (404); a clear error when it cannot be used."""
    try:
        for attempt in range(MODEL_LIST_TRIES):
            outcome = list_models_once(client, sdk, base_url, where)
            if not isinstance(outcome, Retry) or attempt == MODEL_LIST_TRIES - 1:
                break
            time.sleep(MODEL_LIST_BACKOFF_S * 2**attempt)
        if isinstance(outcome, Retry):
            raise WarmstartError(f"{where}: {outcome.why} (after {MODEL_LIST_TRIES} tries)")
        return outcome
    finally:
        client.close()


@dataclass(frozen=True)
class Retry:
    """A model-list answer that may be gone when asked again, and what it was."""

    why: str


def list_models_once(client, sdk, base_url: str, where: str) -> list[str] | None | Retry:
    """One try at the model list, within `MODEL_LIST_TRY_S` in all: its ids, None (no list here: 404), a
    `Retry`, or a WarmstartError where asking again cannot help."""
    try:
        return within(MODEL_LIST_TRY_S, lambda: [m.id for m in client.models.list()])
    except TimeoutError:
        return Retry(f"{base_url} did not answer the model list within {MODEL_LIST_TRY_S:g} s")
    except sdk.APITimeoutError:
        return Retry(f"{base_url} did not answer the model list within {MODEL_LIST_TRY_S:g} s")
    except (ReplyTooLarge, sdk.APIConnectionError) as exc:
        if too_large := reply_too_large(exc):
            raise WarmstartError(f"{where}: {base_url}: {too_large}") from None
        if said := unreadable_body(exc):  # an answer came, and could not be read (anthropic's wording for it)
            raise WarmstartError(f"{where}: {base_url} answered the model list with something that is {said}") from None
        raise WarmstartError(f"{where}: cannot reach {base_url}{through(base_url)} ({root_cause(exc)})") from None
    except sdk.AuthenticationError:
        raise WarmstartError(f"{where}: {base_url} rejected the API key") from None
    except sdk.APIStatusError as exc:
        if exc.status_code == 404:
            return None  # no model list here: the first request will say if the model is unknown
        said = f"{base_url} answered HTTP {exc.status_code} to the model list ({first_line(exc.message)})"
        if is_retryable_status(exc.status_code):
            return Retry(said)
        raise WarmstartError(f"{where}: {said}") from None
    except AttributeError:  # the SDKs hand over a body that is not JSON as text, which no page can be made of
        raise WarmstartError(f"{where}: {base_url} answered the model list with something that is not JSON") from None
    except (json.JSONDecodeError, UnicodeDecodeError, UndecodableBody) as exc:  # labelled JSON, and not
        said = unreadable_body(exc)
        raise WarmstartError(f"{where}: {base_url} answered the model list with something that is {said}") from None


def root_cause(exc: BaseException) -> str:
    """What the innermost exception behind `exc` says ("[Errno -2] Name or service not known", "[Errno 111]
    Connection refused", a certificate that does not verify): an SDK's "Connection error." does not tell a
    mistyped host from a server that is down."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return first_line(exc) or type(exc).__name__


def env_proxy(base_url: str) -> str | None:
    """The proxy the environment routes `base_url` through, as httpx reads it (HTTP_PROXY, HTTPS_PROXY,
    ALL_PROXY, NO_PROXY), or None: a proxy that is down reads as the server being unreachable, and an error
    that does not name it sends the user looking at the server."""
    parsed = urlparse(base_url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parsed.hostname or "", proxies):
        return None
    return proxy


def through(base_url: str) -> str:
    proxy = env_proxy(base_url)
    return f" through the proxy {proxy} (from the environment)" if proxy else ""


def make_client(make, base_url: str, where: str):
    """`make()`'s SDK client. httpx reads the proxy settings of the environment as it makes one: a proxy it
    cannot use (SOCKS without the socksio package, a malformed URL) is one clear error, not a traceback."""
    try:
        return make()
    except (ImportError, ValueError, httpx2.InvalidURL) as exc:
        raise WarmstartError(
            f"{where}: cannot make an HTTP client for {base_url}{through(base_url)}: {first_line(exc)}"
        ) from None


def within(seconds: float, call):
    """`call()`'s result or exception, or TimeoutError once `seconds` have passed. The call runs in a daemon
    thread: a blocking read cannot be interrupted, so one past its time is left to end (the caller closes
    its client) and never keeps the process from exiting."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as it is
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="model-list", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def sdk_tls_context():
    """The TLS settings (CA certificates loaded: 25-40 ms) exactly as the openai / anthropic SDKs make them,
    for a backend to make once: it makes a client per event loop (one per `rollout`: per chunk in
    generate, per judgement for a judge), and each would load them again."""
    return httpx2.create_ssl_context()  # the SDKs' HTTP library; a plain ssl.SSLContext, which any release takes
