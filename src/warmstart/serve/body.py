"""Reading a request's body for `warmstart serve`: by its Content-Length, or in HTTP/1.1 chunked encoding.

http.server reads headers only; the body is the handler's to read. What a client may send and how each
is answered:

- `Content-Length: N` (what the SDKs send): N ASCII digits, read whole; over the limit, a 413 (the body
  read and dropped up to `DRAIN_LIMIT_BYTES` first, so the client, still sending, gets the 413 rather
  than a reset). Anything but ASCII digits, or two Content-Length headers that disagree, is a 400: `int()`
  takes "²" or "٣", and which of two lengths to believe is how request smuggling starts.
- `Transfer-Encoding: chunked` (curl -T -, a streamed upload, Node's fetch with a stream): the chunks
  joined, the limit checked as they come; a Content-Length beside it is a 400 (RFC 9112 6.3 calls that
  message an attack); any other transfer coding is a 501.
- Neither: a 411, Length Required.
"""

from __future__ import annotations

from typing import BinaryIO

from .request import ApiError

# A refused body is read and dropped up to this size, so that the client, still sending, gets the 413 rather
# than a connection reset; a larger one is not read at all.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
MAX_CHUNK_LINE = 1024  # a chunk's size line with its extensions: a longer one is not a client's mistake
MAX_TRAILER_LINES = 64


def read_body(rfile: BinaryIO, headers, limit: int) -> bytes:
    """The body of a request with these `headers`, at most `limit` bytes, or the ApiError that refuses it."""
    coding = headers.get("Transfer-Encoding")
    if coding is not None:
        if headers.get("Content-Length") is not None:
            raise ApiError(400, "the request has both Transfer-Encoding and Content-Length; send one of them")
        if coding.strip().lower() != "chunked":
            raise ApiError(501, f"Transfer-Encoding {coding!r} is not supported (only chunked)")
        return read_chunked(rfile, limit)
    length = content_length(headers)
    if length is None:
        raise ApiError(411, "the request needs a JSON body with a Content-Length header (or chunked encoding)")
    if length > limit:
        drain(rfile, length)
        raise too_large(f"the request body is {length} bytes", limit)
    return rfile.read(length)


def content_length(headers) -> int | None:
    """The Content-Length, None where there is none, or a 400 for one that is not a length."""
    values = {value.strip() for value in headers.get_all("Content-Length") or []}
    if not values:
        return None
    if len(values) > 1 or not all(v.isascii() and v.isdigit() for v in values):
        raise ApiError(400, f"Content-Length must be one number of bytes, got {', '.join(sorted(values))}")
    return int(values.pop())


def read_chunked(rfile: BinaryIO, limit: int) -> bytes:
    """A chunked body, its chunks joined; the trailer fields after the last chunk are read and ignored."""
    body = bytearray()
    while size := chunk_size(rfile.readline(MAX_CHUNK_LINE + 1)):
        if len(body) + size > limit:
            raise too_large(f"the chunked request body is more than {len(body) + size} bytes", limit)
        data = rfile.read(size)
        if len(data) < size or rfile.readline(MAX_CHUNK_LINE + 1).strip():
            raise ApiError(400, "the chunked request body ended early or a chunk is longer than its size")
        body += data
    for _ in range(MAX_TRAILER_LINES):
        if not rfile.readline(MAX_CHUNK_LINE + 1).strip():
            return bytes(body)
    raise ApiError(400, f"the chunked request body has more than {MAX_TRAILER_LINES} trailer lines")


def chunk_size(line: bytes) -> int:
    """The size a chunk's line gives (hexadecimal, before any `;extension`), or a 400."""
    digits = line.split(b";", 1)[0].strip()
    if not line.endswith(b"\n") or not digits or len(digits) > 16 or digits.strip(b"0123456789abcdefABCDEF"):
        raise ApiError(400, f"the chunked request body has a malformed chunk size line: {line[:40]!r}")
    return int(digits, 16)


def too_large(what: str, limit: int) -> ApiError:
    return ApiError(
        413,
        f"{what}, more than this server's limit of {limit} (--max-request-bytes)",
        code="request_too_large",
    )


def drain(rfile: BinaryIO, length: int) -> None:
    """Read and drop a refused body, a chunk at a time, if it is small enough to be worth reading."""
    left = length if length <= DRAIN_LIMIT_BYTES else 0
    while left > 0:
        chunk = rfile.read(min(left, 1024 * 1024))
        if not chunk:
            break
        left -= len(chunk)
