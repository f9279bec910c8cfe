"""HTTP clients for the API SDKs that refuse an answer larger than its request can need.

The openai and anthropic SDKs read a whole body into memory before parsing it: a server, or a proxy in
front of it, that streams without end or answers with gigabytes would take the process's memory (one
100 MB reply: ~390 MB resident) long before `api.timeout_s` ends the request. Every client warmstart
makes for an API server checks each answer as it arrives (an httpx response hook, before the body is
read): a declared Content-Length over the limit is refused at once, and the body's bytes are counted
as they come, decompressed, so a small gzip body cannot expand without bound either. Only gzip and
deflate are asked for (`Accept-Encoding`): those are the encodings counted here.

The limit is per request, from what the request asks for (`reply_limit`): a base for any answer (an
error page, a model list) plus, per generated token and per log-prob alternative, a generous JSON size.
A reply over it is `ReplyTooLarge`, a ValueError, as the SDKs' body that is not JSON is: the callers'
handlers for a reply they cannot read take it.
"""

from __future__ import annotations

import json
import zlib

import httpx2

BASE_BYTES = 16 * 2**20  # any answer: an error page, a model list (an aggregator lists hundreds of models)
# One generated token as JSON, or one of its log-prob alternatives: its text escaped as \uXXXX, its bytes
# as a list of numbers, a float (~60-250 bytes in the providers' formats).
BYTES_PER_ENTRY = 512
ACCEPT_ENCODING = "gzip, deflate"


class ReplyTooLarge(ValueError):
    def __init__(self, url: httpx2.URL, limit: int, status: int):
        super().__init__(
            f"the answer to {url.path} was larger than {limit / 2**20:.0f} MiB, "
            "more than the request can need (a server or proxy that does not stop)"
        )
        self.status = status


def reply_too_large(exc: BaseException | None) -> ReplyTooLarge | None:
    """The ReplyTooLarge behind `exc`: itself, or the cause of the connection error an SDK made of it."""
    while exc is not None and not isinstance(exc, ReplyTooLarge):
        exc = exc.__cause__
    return exc


def reply_limit(request_body: bytes) -> int:
    """The most bytes a well-formed answer to a request with this JSON body can take: chat and legacy
    completions (`max_tokens` / `max_completion_tokens`, `n`, `top_logprobs` / `logprobs`, a batch of
    prompts, `echo`ed prompts) and Anthropic messages (`max_tokens`, thinking included)."""
    try:
        body = json.loads(request_body) if request_body else {}
    except (ValueError, UnicodeDecodeError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    tokens = count(body.get("max_tokens")) or count(body.get("max_completion_tokens"))
    alternatives = count(body.get("top_logprobs")) or count(body.get("logprobs"))  # chat's `logprobs` is a bool
    prompts = prompt_lengths(body.get("prompt"))
    if body.get("echo") is True:
        tokens += max(prompts)
    per_token = (1 + alternatives) * BYTES_PER_ENTRY
    return BASE_BYTES + len(prompts) * max(1, count(body.get("n"))) * tokens * per_token


def count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def prompt_lengths(prompt) -> list[int]:
    """Token counts (a text's: its length, an upper bound) of a legacy completions `prompt`: a text, token
    ids, or a batch of either. [0] where there is none."""
    if isinstance(prompt, str):
        return [len(prompt)]
    if not isinstance(prompt, list) or not prompt:
        return [0]
    if all(isinstance(p, (str, list)) for p in prompt):
        return [len(p) for p in prompt]
    return [len(prompt)]  # one prompt's token ids


class Meter:
    """One answer's body, counted (after decompression) against its limit."""

    def __init__(self, response: httpx2.Response, limit: int, encoding: str):
        self.url, self.status, self.limit, self.read = response.request.url, response.status_code, limit, 0
        self.encoding = encoding
        self.decoder = self._decoder() if encoding else None

    def _decoder(self, raw_deflate: bool = False):
        # gzip has a header (wbits + 16); HTTP's deflate is zlib-wrapped, but some servers send it raw
        if self.encoding == "gzip":
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        return zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS)

    def take(self, data: bytes) -> bytes:
        """A chunk as it came, decompressed and counted."""
        return self._counted(self._decompress(data) if self.decoder is not None else data)

    def end(self) -> bytes:
        """What the decompressor still holds once the body has ended, counted."""
        return self._counted(self.decoder.flush()) if self.decoder is not None else b""

    def _counted(self, data: bytes) -> bytes:
        self.read += len(data)
        if self.read > self.limit:
            raise ReplyTooLarge(self.url, self.limit, self.status)
        return data

    def _decompress(self, data: bytes) -> bytes:
        room = self.limit - self.read + 1  # decompress at most one byte past the limit, never the whole bomb
        try:
            out = self.decoder.decompress(data, room)
        except zlib.error:
            if self.encoding != "deflate" or self.read:
                raise ValueError(f"the answer to {self.url.path} is not valid {self.encoding}") from None
            self.decoder = self._decoder(raw_deflate=True)
            out = self.decoder.decompress(data, room)
        if self.decoder.unconsumed_tail:  # more output than the room left
            raise ReplyTooLarge(self.url, self.limit, self.status)
        return out


class BoundedAsyncStream(httpx2.AsyncByteStream):
    def __init__(self, inner, meter: Meter):
        self.inner, self.meter = inner, meter

    async def __aiter__(self):
        async for chunk in self.inner:
            yield self.meter.take(chunk)
        if rest := self.meter.end():
            yield rest

    async def aclose(self) -> None:
        await self.inner.aclose()


class BoundedStream(httpx2.SyncByteStream):
    def __init__(self, inner, meter: Meter):
        self.inner, self.meter = inner, meter

    def __iter__(self):
        for chunk in self.inner:
            yield self.meter.take(chunk)
        if rest := self.meter.end():
            yield rest

    def close(self) -> None:
        self.inner.close()


def metered(response: httpx2.Response) -> Meter:
    """The answer's meter, which takes over its Content-Encoding; an answer that declares more than its
    limit is refused before its body is read."""
    try:
        limit = reply_limit(response.request.content)
    except httpx2.RequestNotRead:  # a streamed upload: none of the SDKs' requests
        limit = BASE_BYTES
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ReplyTooLarge(response.request.url, limit, response.status_code)
    encoding = response.headers.pop("content-encoding", "").strip().lower()  # httpx must not decode it again
    # Identity, or an encoding not asked for: counted as it came (httpx would have decoded one it knows,
    # without a bound; the body is then no JSON and refused as such).
    return Meter(response, limit, encoding if encoding in ("gzip", "deflate") else "")


async def bound_async(response: httpx2.Response) -> None:
    response.stream = BoundedAsyncStream(response.stream, metered(response))


def bound(response: httpx2.Response) -> None:
    response.stream = BoundedStream(response.stream, metered(response))


def async_http_client(sdk, timeout_s: float, headers: dict | None = None, **options):
    """The SDK's (`sdk`: the openai or anthropic module) default async HTTP client (its connection limits,
    redirects), its answers bounded."""
    headers = {"Accept-Encoding": ACCEPT_ENCODING} | (headers or {})
    return sdk.DefaultAsyncHttpxClient(
        timeout=timeout_s, event_hooks={"response": [bound_async]}, headers=headers, **options
    )


def http_client(sdk, timeout_s: float, headers: dict | None = None, **options):
    """`async_http_client` for the SDK's synchronous client."""
    headers = {"Accept-Encoding": ACCEPT_ENCODING} | (headers or {})
    return sdk.DefaultHttpxClient(timeout=timeout_s, event_hooks={"response": [bound]}, headers=headers, **options)
