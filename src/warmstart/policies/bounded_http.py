"""HTTP clients for the API SDKs that refuse an answer larger than its request can need.

The openai and anthropic SDKs read a whole body into memory before parsing it: a server, or a proxy in
front of it, that streams without end or answers with gigabytes would take the process's memory (one
100 MB reply: ~390 MB resident) long before `api.timeout_s` ends the request. Every client warmstart
makes for an API server checks each answer as it arrives (an httpx response hook, before the body is
read): a declared Content-Length over the limit is refused at once, and the body's bytes are counted
as they come, decompressed, so a small gzip body cannot expand without bound either. Only gzip and
deflate are asked for (`Accept-Encoding`): those are the encodings counted here (a gzip body of several
members read whole, as gunzip reads it; bytes after the end of the compressed data that begin no member
dropped, as other HTTP clients drop them, and counted).

A 2xx body that is not in the encoding it is labelled with (a proxy that labels plain JSON gzip, a
stream spoiled in transit, a server that compresses with an encoding not asked for, such as br), or one
that ends inside its compressed data (a stream cut short: what came decompresses without error, and is
only the start of a reply), is `UndecodableBody`, which the callers take as a body that is not JSON (a
server fault, quoted). An error status's body is read for its message only: what is done about it (a
401 stops, a 429 waits its Retry-After) is its status's, so a message that cannot be decoded is replaced
by an error object saying so (one cut short is kept as far as it came), and the SDK raises its status
error as for any other.

A 2xx whose body the connection ends before its end (a dropped connection, a reset, a read that timed out
after the headers came) is `UndecodableBody` too: the reply was generated, and likely billed, so it is an
answer that cannot be read, not a request that got none. A synchronous client's answer is also bounded in
time as a whole (`http_client`): httpx's timeout bounds each read, and a server that trickles its body a
byte at a time would never trip it; the asynchronous clients' requests are bounded by their callers
(`asyncio.timeout` in api.py).

The limit is per request, from what the request asks for (`reply_limit`): a base for any answer (an
error page, a model list) plus, per generated token and per log-prob alternative, a generous JSON size.
A reply over it is `ReplyTooLarge`, a ValueError, as the SDKs' body that is not JSON is: the callers'
handlers for a reply they cannot read take it.
"""

from __future__ import annotations

import json
import time
import zlib

import httpx2

BASE_BYTES = 16 * 2**20  # any answer: an error page, a model list (an aggregator lists hundreds of models)
# One generated token as JSON, or one of its log-prob alternatives: its text escaped as \uXXXX, its bytes
# as a list of numbers, a float (~60-250 bytes in the providers' formats).
BYTES_PER_ENTRY = 512
ACCEPT_ENCODING = "gzip, deflate"
DECODED = ("gzip", "deflate")  # the encodings asked for, decoded here
START_BYTES = 256  # how much of a body as it came `UndecodableBody` keeps, to be quoted
GZIP_MAGIC = b"\x1f\x8b"  # how every gzip member begins (RFC 1952 2.3.1)
# Bytes as they come, per byte of the limit: compressed data never runs to twice what it decodes to (gzip
# and deflate add a few bytes per block or member), but a stream of empty members decodes to nothing.
ARRIVED_PER_LIMIT = 2


class ReplyTooLarge(ValueError):
    def __init__(self, url: httpx2.URL, limit: int, status: int):
        super().__init__(
            f"the answer to {url.path} was larger than {limit / 2**20:.0f} MiB, "
            "more than the request can need (a server or proxy that does not stop)"
        )
        self.status = status


class UndecodableBody(ValueError):
    """A 2xx body that is not in the Content-Encoding it is labelled with, or cut short inside it; `start`:
    its first bytes, which say what it was: as they came (plain JSON labelled gzip, an HTML page), or for
    a stream cut short as they decompress (the reply it was the start of)."""

    def __init__(self, url: httpx2.URL, what: str, start: bytes):
        super().__init__(f"the answer to {url.path} is {what}")
        self.what, self.start = what, start


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
    """One answer's body, counted (after decompression) against its limit. `encoding`: the body's
    Content-Encoding as labelled ("" for none)."""

    def __init__(self, response: httpx2.Response, limit: int, encoding: str):
        self.url, self.status, self.limit, self.read = response.request.url, response.status_code, limit, 0
        self.encoding = encoding
        self.declared = response.headers.get("content-length", "")  # the body's length as declared, if it was
        self.decoder = self._decoder() if encoding in DECODED else None
        self.start = b""  # the body's first bytes as they came
        self.decoded_start = b""  # and as they decompress
        self.arrived = 0  # bytes as they came
        self.replaced = False  # an error status's body that could not be decoded, replaced (`_undecodable`)
        self.held = b""  # after the end of a gzip member: a byte that may begin the next (`_past_the_end`)
        self.undecided = b""  # a deflate body's bytes before its first decoded one: raw deflate's, if it is that
        self.raw_deflate = False

    def _decoder(self, raw_deflate: bool = False):
        # gzip has a header (wbits + 16); HTTP's deflate is zlib-wrapped, but some servers send it raw
        if self.encoding == "gzip":
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        return zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS)

    def take(self, data: bytes) -> bytes:
        """A chunk as it came, decompressed and counted."""
        self.arrived += len(data)
        if self.arrived > ARRIVED_PER_LIMIT * self.limit:  # empty gzip members, a dropped rest: not without end
            raise ReplyTooLarge(self.url, self.limit, self.status)
        if self.replaced:  # the rest of an error body that could not be decoded
            return b""
        first = not self.start
        self.start += data[: START_BYTES - len(self.start)]
        if self.decoder is not None:
            return self._counted(self._decompress(data))
        if first and self.encoding not in ("", "identity") and not looks_like_json(self.start):
            return self._undecodable(f"an encoding not asked for (Accept-Encoding: {ACCEPT_ENCODING})")
        return self._counted(data)

    def end(self) -> bytes:
        """What the decompressor still holds once the body has ended, counted."""
        if self.decoder is None or self.replaced:
            return b""
        try:
            rest = self._counted(self.decoder.flush())
        except zlib.error as exc:
            return self._undecodable(zlib_problem(exc))
        # zlib takes a stream cut short without a word: only the end of its compressed data says it is whole.
        # An error status's message, cut short, is still the best word on it there is: kept as it came.
        if self.arrived and not self.decoder.eof and 200 <= self.status < 300:
            what = (
                f"a {self.encoding} stream cut short (Content-Encoding: {self.encoding}): the body ends inside its "
                f"compressed data, after {self.arrived} bytes; decompressed, it begins"
            )
            raise UndecodableBody(self.url, what, self.decoded_start)
        return rest

    def cut_off(self, exc: httpx2.TransportError) -> Exception:
        """What the connection ending a body before its end (`exc`: RemoteProtocolError, ReadError, a read
        timeout) is: for a 2xx, `UndecodableBody` (the module docstring); for any other status, `exc` itself."""
        if not 200 <= self.status < 300:
            return exc
        of = f" of {self.declared}" if self.declared.isdigit() else ""
        what = f"cut short by the connection after {self.arrived}{of} bytes ({type(exc).__name__}); it begins"
        return UndecodableBody(self.url, what, self.decoded_start or self.start)

    def _counted(self, data: bytes) -> bytes:
        self.decoded_start += data[: START_BYTES - len(self.decoded_start)]
        self.read += len(data)
        if self.read > self.limit:
            raise ReplyTooLarge(self.url, self.limit, self.status)
        return data

    def _decompress(self, data: bytes) -> bytes:
        out, pending = [], 0
        while data and not self.replaced:
            if self.decoder.eof and not (data := self._past_the_end(data)):
                break
            out.append(part := self._inflate(data, pending))
            pending += len(part)
            data = self.decoder.unused_data if self.decoder.eof else b""
        return b"".join(out)  # one join: a chunk of a thousand tiny members is not copied a thousand times

    def _past_the_end(self, data: bytes) -> bytes:
        """What came after the end of the compressed data: where it begins another gzip member (RFC 1952 2.2:
        members one after another, which gunzip reads as one; the first alone had been read, the rest dropped
        without a word), that member's bytes, for a fresh decoder; else b"": zero bytes (padding) and anything
        else after the end are dropped, as other HTTP clients drop them, but counted against the limit."""
        data, self.held = self.held + data, b""
        start = data.lstrip(b"\0") if self.encoding == "gzip" else b""
        if start.startswith(GZIP_MAGIC) or start == GZIP_MAGIC[:1]:
            self._counted_past_the_end(len(data) - len(start))
            if len(start) == 1:  # the next member's first byte: its second still to come
                self.held = start
                return b""
            self.decoder = self._decoder()
            return start
        self._counted_past_the_end(len(data))
        return b""

    def _counted_past_the_end(self, count: int) -> None:
        self.read += count  # bytes dropped: never held, but no body streams them without end either
        if self.read > self.limit:
            raise ReplyTooLarge(self.url, self.limit, self.status)

    def _inflate(self, data: bytes, pending: int) -> bytes:
        """`data` through the decoder; `pending`: bytes this chunk already decompressed, not yet counted."""
        room = self.limit - self.read - pending + 1  # at most one byte past the limit, never the whole bomb
        if room <= 0:  # (zlib takes a length of 0 as no limit)
            raise ReplyTooLarge(self.url, self.limit, self.status)
        undecided = self.encoding == "deflate" and not (self.read or pending or self.raw_deflate)
        if undecided:
            self.undecided += data
        try:
            out = self.decoder.decompress(data, room)
        except zlib.error as exc:
            if not undecided:
                return self._undecodable(zlib_problem(exc), pending)
            self.raw_deflate = True
            self.decoder = self._decoder(raw_deflate=True)
            try:  # every byte so far: the zlib decoder may have taken a first chunk of one byte without a word
                out = self.decoder.decompress(self.undecided, room)
            except zlib.error as raw_exc:  # neither zlib-wrapped nor raw deflate
                return self._undecodable(zlib_problem(raw_exc), pending)
        if self.decoder.unconsumed_tail:  # more output than the room left
            raise ReplyTooLarge(self.url, self.limit, self.status)
        return out

    def _undecodable(self, problem: str, pending: int = 0) -> bytes:
        """A body not in its labelled encoding: refused where it is a reply (2xx); else the stand-in for its
        message (module docstring), the rest of the body dropped, or, where some of it had decoded (a later
        gzip member spoiled), what had: the message as far as it came."""
        label = f"labelled {self.encoding} (Content-Encoding)"
        what = f"{label}, {problem}" if self.encoding not in DECODED else f"{label} but not {self.encoding} ({problem})"
        if 200 <= self.status < 300:
            raise UndecodableBody(self.url, what, self.start)
        self.replaced = True
        if self.decoded_start or pending:  # some of the message decoded (not only dropped padding)
            return b""
        return json.dumps({"error": {"message": f"(the server's message was {what})"}}).encode()


def zlib_problem(exc: zlib.error) -> str:
    """zlib's reason alone ("incorrect header check"), without its "Error -3 while decompressing data: "."""
    return str(exc).rpartition(": ")[2] or str(exc)


def looks_like_json(start: bytes) -> bool:
    """Whether a body's first bytes can begin a JSON object or array (an API's answer always is one): a
    body labelled with an encoding not asked for that is plain JSON (a server that labels its charset as
    an encoding) is read as it is."""
    stripped = start.lstrip()
    return not stripped or stripped[:1] in (b"{", b"[")


class BoundedAsyncStream(httpx2.AsyncByteStream):
    def __init__(self, inner, meter: Meter):
        self.inner, self.meter = inner, meter

    async def __aiter__(self):
        async for chunk in self._arriving():
            yield self.meter.take(chunk)
        if rest := self.meter.end():
            yield rest

    async def _arriving(self):
        """The body's chunks as they come; the connection ending it early: `Meter.cut_off`."""
        try:
            async for chunk in self.inner:
                yield chunk
        except httpx2.TransportError as exc:
            raise self.meter.cut_off(exc) from exc

    async def aclose(self) -> None:
        await self.inner.aclose()


class BoundedStream(httpx2.SyncByteStream):
    """`BoundedAsyncStream` for a synchronous client, and bounded in time: a body still arriving at
    `deadline` (time.monotonic()) is a read timeout, as one that stopped arriving is."""

    def __init__(self, inner, meter: Meter, deadline: float, timeout_s: float):
        self.inner, self.meter, self.deadline, self.timeout_s = inner, meter, deadline, timeout_s

    def __iter__(self):
        for chunk in self._arriving():
            if time.monotonic() > self.deadline:
                raise httpx2.ReadTimeout(
                    f"no whole answer to {self.meter.url.path} within {self.timeout_s:g} s (its body was still "
                    f"arriving, {self.meter.arrived} bytes so far: a server or proxy that trickles it)"
                )
            yield self.meter.take(chunk)
        if rest := self.meter.end():
            yield rest

    def _arriving(self):
        try:
            yield from self.inner
        except httpx2.TransportError as exc:
            raise self.meter.cut_off(exc) from exc

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
    # httpx must not decode it again: it would decode an encoding it knows (br, zstd) without a bound
    encoding = response.headers.pop("content-encoding", "").strip().lower()
    return Meter(response, limit, encoding)


async def bound_async(response: httpx2.Response) -> None:
    response.stream = BoundedAsyncStream(response.stream, metered(response))


def no_whole_answer(base_url: str, timeout_s: float, tries: int) -> str:
    """What a synchronous client says once every try ran past its whole-request bound (`bound_within`)."""
    return f"no whole answer from {base_url} within api.timeout_s = {timeout_s:g} s, on each of {tries} tries"


SENT_AT = "warmstart.sent_at"  # a request's extension: when a synchronous client sent it (time.monotonic())


def note_sent(request: httpx2.Request) -> None:
    request.extensions[SENT_AT] = time.monotonic()


def bound_within(timeout_s: float):
    """A synchronous client's response hook: its answers bounded in size, and in time as a whole, `timeout_s`
    from when the request was sent (`note_sent`)."""

    def bound(response: httpx2.Response) -> None:
        deadline = response.request.extensions.get(SENT_AT, time.monotonic()) + timeout_s
        response.stream = BoundedStream(response.stream, metered(response), deadline, timeout_s)

    return bound


def async_http_client(sdk, timeout_s: float, headers: dict | None = None, **options):
    """The SDK's (`sdk`: the openai or anthropic module) default async HTTP client (its connection limits,
    redirects), its answers bounded."""
    headers = {"Accept-Encoding": ACCEPT_ENCODING} | (headers or {})
    return sdk.DefaultAsyncHttpxClient(
        timeout=timeout_s, event_hooks={"response": [bound_async]}, headers=headers, **options
    )


def http_client(sdk, timeout_s: float, headers: dict | None = None, **options):
    """`async_http_client` for the SDK's synchronous client, each answer also bounded as a whole by `timeout_s`
    (a teacher's scoring, GRPO's rollout server, model lists: nothing else bounds their requests)."""
    headers = {"Accept-Encoding": ACCEPT_ENCODING} | (headers or {})
    hooks = {"request": [note_sent], "response": [bound_within(timeout_s)]}
    return sdk.DefaultHttpxClient(timeout=timeout_s, event_hooks=hooks, headers=headers, **options)
