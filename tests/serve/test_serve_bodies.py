"""`warmstart serve` and clients whose request bodies go wrong: a body over the limit that the client is still
sending (it reads the 413: the lingering close, bounded), `Expect: 100-continue` over the limit, a body that
ends before its Content-Length or stops coming, chunked framing that made the server read far past the
limit, and HTTP/1.0 clients (one that asks for keep-alive, one that streams).

Real sockets and clients on loopback, against a server in this process (built as `warmstart serve` builds
it), so that a test can shorten a timeout or a bound.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from serve_helpers import in_process_server

from warmstart.serve import connections
from warmstart.serve.handler import Handler
from warmstart.serve.server import DEFAULT_MAX_REQUEST_BYTES

KEY = "sekrit-key"
BIG = 40_000_000  # ~10 times the default limit (4 MiB), within what the lingering close reads (64 MiB)
ANSWER_WITHIN_S = 10  # a bound for "at once" far above the real figure (milliseconds) on a loaded machine
GENERATED_WITHIN_S = 120


@pytest.fixture(scope="module")
def address(served_model):
    with in_process_server(served_model) as address:
        yield address


def chat_body(content: str = "hi", **options) -> bytes:
    return json.dumps({"model": "tiny", "messages": [{"role": "user", "content": content}], **options}).encode()


def chat_head(framing: str, version: str = "HTTP/1.1", extra: str = "") -> bytes:
    return f"POST /v1/chat/completions {version}\r\nHost: x\r\n{extra}{framing}\r\n".encode()


def answer_of(connection: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the answer on a raw connection, as an HTTP client parses them."""
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response.status, json.loads(response.read())


def read_to_close(connection: socket.socket) -> bytes:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    return data


def pieces(data: bytes, size: int = 65536):
    for start in range(0, len(data), size):
        yield data[start : start + size]


# A body over the limit: the client, still sending it, reads the 413.


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_client_still_sending_a_body_over_the_limit_reads_the_413(address, framing):
    # The chunked body was read up to the limit and the connection closed with the rest unread: the kernel
    # reset it, and the client, still sending, had a broken pipe instead of the 413. (A Content-Length body
    # was read and dropped first, up to 64 MiB; it is now refused at once, and the rest dropped after.)
    body = chat_body("x" * BIG)
    client = http.client.HTTPConnection(*address, timeout=GENERATED_WITHIN_S)
    try:
        if framing == "chunked":
            headers = {"Transfer-Encoding": "chunked"}
            client.request("POST", "/v1/chat/completions", pieces(body), headers, encode_chunked=True)
        else:
            client.request("POST", "/v1/chat/completions", body)
        response = client.getresponse()
        error = json.loads(response.read())["error"]
    finally:
        client.close()
    assert response.status == 413 and error["code"] == "request_too_large", (response.status, error)


def test_a_client_without_the_key_still_sending_its_body_reads_the_401(served_model):
    # The 401 closed the connection with the 40 MB unread: http.client, still sending, had a broken pipe.
    # (The openai SDK read its 401 all the same: httpcore reads the answer after a failed write.)
    with in_process_server(served_model, api_key=KEY) as address:
        client = http.client.HTTPConnection(*address, timeout=GENERATED_WITHIN_S)
        try:
            client.request("POST", "/v1/chat/completions", chat_body("x" * BIG), {"Authorization": "Bearer wrong"})
            response = client.getresponse()
            error = json.loads(response.read())["error"]
        finally:
            client.close()
    assert response.status == 401 and error["code"] == "invalid_api_key", (response.status, error)


def test_a_client_waiting_for_100_continue_with_a_body_over_the_limit_is_told_413_at_once(address):
    # It was told `100 Continue`, then the server waited to read and drop the 40 MB it had asked for.
    with socket.create_connection(address, timeout=ANSWER_WITHIN_S) as connection:
        connection.sendall(chat_head(f"Expect: 100-continue\r\nContent-Length: {BIG}\r\n"))
        first_line = connection.makefile("rb").readline()
    assert first_line.startswith(b"HTTP/1.1 413"), first_line


@pytest.mark.parametrize(("bound", "value"), [("LINGER_S", 1.0), ("LINGER_BYTES", 1024 * 1024)])
def test_the_lingering_close_ends_however_long_the_client_sends(address, monkeypatch, bound, value):
    # A client that sends on past its 413 (here a body of a terabyte) holds its thread only so long, or so
    # many bytes, then the connection is closed under it.
    monkeypatch.setattr(connections, bound, value)
    with socket.create_connection(address, timeout=ANSWER_WITHIN_S) as connection:
        connection.sendall(chat_head(f"Content-Length: {10**12}\r\n"))
        assert connection.makefile("rb").readline().startswith(b"HTTP/1.1 413")
        deadline = time.monotonic() + ANSWER_WITHIN_S
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while time.monotonic() < deadline:  # ~4 MB/s
                connection.sendall(b"x" * 4096)
                time.sleep(0.001)


# Bodies that end early or stop coming are not taken for whole ones.


def test_a_body_that_ends_before_its_content_length_is_refused(address):
    # The client shut down its sending side 50 bytes short: the bytes that came were taken for the whole
    # body and, being a whole JSON request, answered 200.
    body = chat_body(max_tokens=2)
    with socket.create_connection(address, timeout=GENERATED_WITHIN_S) as connection:
        connection.sendall(chat_head(f"Content-Length: {len(body) + 50}\r\n") + body)
        connection.shutdown(socket.SHUT_WR)
        status, answer = answer_of(connection)
    assert status == 400 and f"ended after {len(body)} of its {len(body) + 50} bytes" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("framing", "sent"),
    [("Content-Length: 500\r\n", b'{"model": '), ("Transfer-Encoding: chunked\r\n", b'100\r\n{"model": ')],
    ids=["content-length", "chunked"],
)
def test_a_body_that_stops_coming_is_answered_408(address, monkeypatch, framing, sent):
    # The connection was closed once the body had made no progress for the read timeout (60 s; 1 s here),
    # with no answer: the client, still waiting, could not tell a stalled upload from a server that died.
    monkeypatch.setattr(Handler, "timeout", 1.0)
    with socket.create_connection(address, timeout=ANSWER_WITHIN_S) as connection:
        connection.sendall(chat_head(framing) + sent)
        status, answer = answer_of(connection)
    assert status == 408 and "stopped arriving" in answer["error"]["message"]


def test_a_chunked_bodys_framing_counts_against_the_limit(address):
    # An 8 kB request (JSON, spaced out) in one-byte chunks, each with a 1,000-byte extension: 8 MB on the
    # wire, all read and the request served, for a limit of 4 MiB (measured before: 4.2 GB read, then a 413).
    body = b"{" + b" " * 8000 + chat_body(max_tokens=1)[1:]
    framed = b"".join(b"1;" + b"e" * 1000 + b"\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
    assert len(body) < DEFAULT_MAX_REQUEST_BYTES < len(framed)
    with socket.create_connection(address, timeout=GENERATED_WITHIN_S) as connection:
        connection.sendall(chat_head("Transfer-Encoding: chunked\r\n") + framed + b"0\r\n\r\n")
        status, answer = answer_of(connection)
    assert status == 413 and "its framing counted" in answer["error"]["message"], answer


# HTTP/1.0 clients.


def test_an_http_10_client_asking_for_keep_alive_gets_its_answer_then_the_close(address):
    # http.server kept the connection open without saying so (no `Connection: keep-alive` in the answer), so
    # the client, reading its answer to the close as HTTP/1.0 does, waited for the head's deadline (30 s).
    with socket.create_connection(address, timeout=ANSWER_WITHIN_S) as connection:
        connection.sendall(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = read_to_close(connection)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["status"] == "ok"


def test_an_http_10_client_is_streamed_its_events_without_chunked_encoding(address):
    # Events were sent in chunked encoding, which HTTP/1.0 does not have: the client read hexadecimal sizes
    # amid its events (RFC 9112 6.1: a server must not send it one).
    body = chat_body(stream=True, max_tokens=3)
    with socket.create_connection(address, timeout=GENERATED_WITHIN_S) as connection:
        connection.sendall(chat_head(f"Content-Length: {len(body)}\r\n", "HTTP/1.0") + body)
        data = read_to_close(connection)
    head, _, events = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower(), head
    assert events.startswith(b"data: {") and events.endswith(b"data: [DONE]\n\n"), events[:80]
    for event in events.removesuffix(b"data: [DONE]\n\n").split(b"\n\n")[:-1]:
        assert json.loads(event.removeprefix(b"data: "))["object"] == "chat.completion.chunk"
