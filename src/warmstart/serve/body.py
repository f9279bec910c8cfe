"""Reading a request's body for `warmstart serve`: by its Content-Length, or in HTTP/1.1 chunked encoding.

http.server reads headers only; the body is the handler's to read. What a client may send and how each
is answered:

- `Content-Length: N` (what the SDKs send): N ASCII digits, read whole. Anything but ASCII digits, or two
  Content-Length headers that disagree, is a 400: `int()` takes "²" or "٣", and which of two lengths to
  believe is how request smuggling starts. Over the limit, a 413 at once, from the header alone, none of the
  body read (the connection's lingering close, `connections.py`, lets a client still sending read it). A
  body that ends before N bytes is a 400, one that stops coming a 408: neither is taken for the whole. So is
  one that does not all come by the body's deadline (`connections.BODY_TIMEOUT_S`), however steadily it trickles.
- `Transfer-Encoding: chunked` (curl -T -, a streamed upload, Node's fetch with a stream): the chunks
  joined. The limit bounds every byte read, the chunks' size lines, extensions and trailers included, so
  that one-byte chunks with long extensions cannot make the server read a thousand times the limit. A
  Content-Length beside it is a 400 (RFC 9112 6.3 calls that message an attack); any other transfer
  coding, in any of the Transfer-Encoding headers, is a 501. The framing is read as RFC 9112 7.1 writes it,
  and anything else is a 400: a size in hexadecimal digits alone (no space, sign or `0x`), then an optional
  `;extension`, every line ended by CRLF (not a bare LF), each chunk's data followed by CRLF. Leniency here
  is how requests are smuggled: a proxy in front that reads the same bytes another way (a bare LF as no
  line end, `1f ` as no size) sees a different request end, and the bytes after it as another request.
- Neither: a 411, Length Required.

`declared_length` judges the headers alone, so that a client waiting for `100 Continue` is refused
before it sends anything.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from .connections import DeadlinePassed
from .request import ApiError

MAX_CHUNK_LINE = 1024  # a chunk's size line with its extensions: a longer one is not a client's mistake
MAX_TRAILER_LINES = 64
# RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF, chunk-ext = *( BWS ";" ... ). The extensions are ignored, so
# only their start is checked; no CR or LF may stand in them. 16 digits: a size up to 2^64.
CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\r\n]*)?\r\n")
TRAILER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*\r\n")  # field-name ":" value CRLF


def read_body(rfile: BinaryIO, headers, limit: int) -> bytes:
    """The body of a request with these `headers`, at most `limit` bytes, or the ApiError that refuses it."""
    length = declared_length(headers, limit)
    try:
        return read_chunked(rfile, limit) if length is None else read_exactly(rfile, length)
    except DeadlinePassed as late:  # each read in time, the whole body not (Handler.body_timeout)
        raise ApiError(408, str(late)) from None
    except TimeoutError:  # the socket's per-read timeout: the client stopped sending, but may still read
        raise ApiError(408, "the request body stopped arriving before its end") from None


def declared_length(headers, limit: int) -> int | None:
    """The body's length by its Content-Length, None for a chunked body, or the ApiError that refuses the
    request from its headers alone."""
    codings = headers.get_all("Transfer-Encoding")
    if codings:
        if headers.get("Content-Length") is not None:
            raise ApiError(400, "the request has both Transfer-Encoding and Content-Length; send one of them")
        coding = ", ".join(codings)  # two headers are one list (RFC 9110 5.3): "chunked" then "gzip" is not chunked
        if coding.strip().lower() != "chunked":
            raise ApiError(501, f"Transfer-Encoding {coding!r} is not supported (only chunked)")
        return None
    length = content_length(headers, limit)
    if length is None:
        raise ApiError(411, "the request needs a JSON body with a Content-Length header (or chunked encoding)")
    return length


def content_length(headers, limit: int) -> int | None:
    """The Content-Length, None where there is none, a 400 for one that is not a length, a 413 over `limit`."""
    values = {value.strip() for value in headers.get_all("Content-Length") or []}
    if not values:
        return None
    if len(values) > 1 or not all(v.isascii() and v.isdigit() for v in values):
        raise ApiError(400, f"Content-Length must be one number of bytes, got {', '.join(sorted(values))}")
    digits = values.pop().lstrip("0") or "0"
    # Compared as text first: int() refuses 4,300 digits or more (a 500 once), and any such length is over.
    if len(digits) > len(str(limit)) or int(digits) > limit:
        shown = digits if len(digits) <= 20 else f"a {len(digits)}-digit number of"
        raise too_large(f"the request body is {shown} bytes", limit)
    return int(digits)


def read_exactly(rfile: BinaryIO, length: int) -> bytes:
    data = rfile.read(length)
    if len(data) < length:  # the client ended its sending side early: what came is not the request it meant
        raise ApiError(400, f"the request body ended after {len(data)} of its {length} bytes (Content-Length)")
    return data


class ChunkedReads:
    """A chunked body's lines and data, every byte counted against the limit as it is read."""

    def __init__(self, rfile: BinaryIO, limit: int):
        self.rfile, self.limit, self.count = rfile, limit, 0

    def line(self) -> bytes:
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        self._take(len(line))
        return line

    def data(self, size: int) -> bytes:
        self._take(size)  # before the read: a chunk that says it is over the limit is not read at all
        return self.rfile.read(size)

    def _take(self, size: int) -> None:
        if self.count + size > self.limit:
            what = f"the chunked request body comes to {self.count + size} bytes or more, its framing counted"
            raise too_large(what, self.limit)
        self.count += size


def read_chunked(rfile: BinaryIO, limit: int) -> bytes:
    """A chunked body, its chunks joined; the trailer fields after the last chunk are read and ignored."""
    reads = ChunkedReads(rfile, limit)
    body = bytearray()
    while size := chunk_size(reads.line()):
        data = reads.data(size)
        if len(data) < size:
            raise ApiError(400, f"the chunked request body ended inside a chunk, after {len(data)} of its {size} bytes")
        if reads.data(2) != b"\r\n":
            raise ApiError(400, "a chunk of the chunked request body is longer than its size, or not followed by CRLF")
        body += data
    for _ in range(MAX_TRAILER_LINES):
        line = reads.line()
        if line == b"\r\n":
            return bytes(body)
        if not TRAILER_LINE.fullmatch(line):
            raise ApiError(400, f"the chunked request body has a malformed trailer line: {line[:40]!r}")
    raise ApiError(400, f"the chunked request body has more than {MAX_TRAILER_LINES} trailer lines")


def chunk_size(line: bytes) -> int:
    """The size a chunk's line gives (hexadecimal, before any `;extension`, the line ended by CRLF), or a 400."""
    framed = CHUNK_SIZE_LINE.fullmatch(line)
    if framed is None:
        raise ApiError(
            400,
            f"the chunked request body has a malformed chunk size line: {line[:40]!r} "
            "(hexadecimal digits, an optional ;extension, then CRLF: RFC 9112 7.1)",
        )
    return int(framed.group(1), 16)


def too_large(what: str, limit: int) -> ApiError:
    return ApiError(
        413,
        f"{what}, more than this server's limit of {limit} (--max-request-bytes)",
        code="request_too_large",
    )
