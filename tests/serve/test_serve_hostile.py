"""`warmstart serve` and hostile or odd clients: a body trickled in a byte at a time, a client still sending
its body when the server is full (the 503) or past what a lingering close reads (the 413), chunked framing
that bends RFC 9112 7.1, expectations other than `100-continue`, and an HTTP/1.0 client asking for
keep-alive.

Real sockets, http.client and the openai SDK on loopback: against a `warmstart serve` process where the
defaults do, against a server in this process (built as `warmstart serve` builds it) where a test shortens a
deadline or a bound.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from contextlib import ExitStack
from urllib.parse import urlsplit

import openai
import pytest
from serve_helpers import in_process_server

from warmstart.serve import connections
from warmstart.serve.handler import Handler

ANSWER_WITHIN_S = 10  # a bound for "at once" far above the real figure (milliseconds) on a loaded machine
GENERATED_WITHIN_S = 120


@pytest.fixture(scope="module")
def address(base_url):
    """(host, port) of the module's `warmstart serve` process."""
    parts = urlsplit(base_url)
    return parts.hostname, parts.port


def chat_body(content: str = "hi", **options) -> bytes:
    return json.dumps({"model": "tiny", "messages": [{"role": "user", "content": content}], **options}).encode()


def chat_head(framing: str, version: str = "HTTP/1.1", extra: str = "") -> bytes:
    return f"POST /v1/chat/completions {version}\r\nHost: x\r\n{extra}{framing}\r\n".encode()


def answer_of(connection: socket.socket) -> http.client.HTTPResponse:
    """The answer on a raw connection, parsed as an HTTP client does (an interim 1xx answer skipped)."""
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response


def error_of(response: http.client.HTTPResponse) -> dict:
    return json.loads(response.read())["error"]


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


def trickled_until_answered(connection: socket.socket, within_s: float) -> bool:
    """Send a space every 0.1 s, each in time for the per-read timeout (60 s), until the server answers: True
    once it has, False if it has not within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        connection.sendall(b" ")
        if select.select([connection], [], [], 0.1)[0]:
            return True
    return False


# A body is due whole within Handler.body_timeout of its head.


@pytest.mark.parametrize(
    "framing",
    ["Content-Length: 100000\r\n", "Transfer-Encoding: chunked\r\n"],
    ids=["content-length", "chunked"],
)
def test_a_body_trickled_a_byte_at_a_time_is_answered_408_at_its_deadline(served_model, monkeypatch, framing):
    # Each read had its timeout (60 s) and the whole body none: a space every 0.1 s held the connection's
    # thread for as long as the client went on (measured: 150 s, 300 bytes, no answer, still open).
    monkeypatch.setattr(Handler, "body_timeout", 1.0, raising=False)
    opening = b"" if framing.startswith("Content-Length") else b"186a0\r\n"  # one chunk of 100,000 bytes
    with in_process_server(served_model) as address, socket.create_connection(address, ANSWER_WITHIN_S) as client:
        client.sendall(chat_head(framing) + opening + b'{"model": "tiny", "messages": ')
        assert trickled_until_answered(client, ANSWER_WITHIN_S), "a trickled body kept its connection"
        response = answer_of(client)
        assert response.status == 408 and response.getheader("Connection") == "close"
        assert "did not all come within 1 s" in error_of(response)["message"]


def test_a_body_within_its_deadline_is_served_and_the_deadline_ends_with_it(served_model, monkeypatch):
    # A body sent in pieces within its deadline is read whole; the deadline ends with the body, so a
    # kept-alive connection idle for longer than it is served its next request.
    monkeypatch.setattr(Handler, "body_timeout", 1.0, raising=False)
    body = chat_body(max_tokens=2)
    with in_process_server(served_model) as address, socket.create_connection(address, GENERATED_WITHIN_S) as client:
        for pause_s in (0.1, 1.5):
            time.sleep(pause_s)
            client.sendall(chat_head(f"Content-Length: {len(body)}\r\n") + body[:10])
            time.sleep(0.1)
            client.sendall(body[10:])
            response = answer_of(client)
            assert response.status == 200 and json.loads(response.read())["choices"]


# A connection refused past --max-connections is closed lingering: a client still sending reads its 503.


def test_a_client_still_sending_its_body_to_a_full_server_reads_the_503(served_model):
    # The accepting thread closed the connection as soon as it had written the 503, with the body arriving
    # unread: the kernel reset it, and http.client, still sending 16 MB, had a broken pipe instead.
    with in_process_server(served_model, max_connections=1) as address, ExitStack() as held:
        held.enter_context(socket.create_connection(address))  # takes the one place (until the head's deadline)
        client = http.client.HTTPConnection(*address, timeout=ANSWER_WITHIN_S)
        try:
            client.request("POST", "/v1/chat/completions", chat_body("x" * 16_000_000))
            response = client.getresponse()
            error = error_of(response)
        finally:
            client.close()
    assert response.status == 503 and error["code"] == "server_busy", (response.status, error)
    assert response.getheader("Retry-After") == "1"


def test_a_refused_client_that_sends_on_is_closed_at_the_lingering_bound(served_model, monkeypatch):
    # One thread lingers on every refused connection: a client that sends on forever must not keep its own.
    monkeypatch.setattr(connections, "LINGER_S", 1.0)
    with in_process_server(served_model, max_connections=1) as address, ExitStack() as held:
        held.enter_context(socket.create_connection(address))
        with socket.create_connection(address, timeout=ANSWER_WITHIN_S) as refused:
            refused.sendall(chat_head(f"Content-Length: {10**12}\r\n"))
            assert refused.makefile("rb").readline().startswith(b"HTTP/1.1 503")
            deadline = time.monotonic() + ANSWER_WITHIN_S
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                while time.monotonic() < deadline:
                    refused.sendall(b"x" * 4096)
                    time.sleep(0.001)


def test_connections_past_the_lingering_limit_are_closed_at_once():
    # Each lingering connection holds a descriptor: past `most` of them, one more is closed without waiting.
    closer = connections.LingeringCloser(most=1)
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        for server_side, _ in pairs:
            closer.close(server_side)
        [(_, lingered), (_, refused)] = pairs
        refused.settimeout(ANSWER_WITHIN_S)
        assert refused.recv(1) == b""
        with pytest.raises((BrokenPipeError, ConnectionResetError)):  # closed, not lingering
            refused.sendall(b"x")
        lingered.settimeout(ANSWER_WITHIN_S)
        assert lingered.recv(1) == b""  # its sending side shut down, and it is read from still
        lingered.sendall(b"still read")
    finally:
        closer.stop()
        for _, client in pairs:
            client.close()


# Past what the lingering close reads, the 413 comes first and the reset after it.


@pytest.fixture
def small_linger(served_model, monkeypatch):
    """A server in this process whose lingering close reads at most 1 MiB (64 MiB in `warmstart serve`)."""
    monkeypatch.setattr(connections, "LINGER_BYTES", 1024 * 1024)
    with in_process_server(served_model) as address:
        yield address


def test_a_body_past_the_lingering_bound_is_reset_after_its_413(small_linger):
    # What the server sends is on its way before it closes: the send fails (a reset), and what was received
    # before it, the 413, is still read.
    with socket.create_connection(small_linger, timeout=ANSWER_WITHIN_S) as client:
        client.sendall(chat_head(f"Content-Length: {10**9}\r\n"))
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(4096):  # 256 MiB at most: far past the bound
                client.sendall(b" " * 65536)
        response = answer_of(client)
        assert response.status == 413 and error_of(response)["code"] == "request_too_large"


def test_the_sdk_sending_a_body_past_the_lingering_bound_reads_its_413(small_linger):
    # As `warmstart serve` with a 100 MB body (64 MiB read, then the reset): the SDK reads the answer once
    # its send has failed, and raises the 413, not a connection error. (curl stops sending at the 413.)
    host, port = small_linger
    with openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="x", max_retries=0, timeout=60) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 16_000_000}])
    assert caught.value.status_code == 413 and caught.value.code == "request_too_large"


# Chunked framing as RFC 9112 7.1 writes it, and nothing else.


@pytest.mark.parametrize(
    ("framed", "said"),
    [
        (b"%x\n%s\n0\n\n", "malformed chunk size line"),
        (b" %x\r\n%s\r\n0\r\n\r\n", "malformed chunk size line"),
        (b"%x \r\n%s\r\n0\r\n\r\n", "malformed chunk size line"),
        (b"%x\t\r\n%s\r\n0\r\n\r\n", "malformed chunk size line"),
        (b"+%x\r\n%s\r\n0\r\n\r\n", "malformed chunk size line"),
        (b"0x%x\r\n%s\r\n0\r\n\r\n", "malformed chunk size line"),
        (b"%x;a\rb\r\n%s\r\n0\r\n\r\n", "malformed chunk size line"),
        (b"%x\r\n%s\n0\r\n\r\n", "not followed by CRLF"),
        (b"%x\r\n%s  \r\n0\r\n\r\n", "not followed by CRLF"),
        (b"%x\r\n%s0\r\n\r\n", "not followed by CRLF"),
        (b"%x\r\n%s\r\n0\r\n\n", "malformed trailer line"),
        (b"%x\r\n%s\r\n0\r\n  \r\n", "malformed trailer line"),
        (b"%x\r\n%s\r\n0\r\nX-T: 1\n\r\n", "malformed trailer line"),
        (b"%x\r\n%s\r\n0\r\n folded\r\n\r\n", "malformed trailer line"),
    ],
    ids=[
        *"bare-lf space-before-size space-after-size tab-after-size sign hex-prefix cr-in-extension".split(),
        *"bare-lf-after-data spaces-after-data no-crlf-after-data".split(),
        *"bare-lf-ending spaces-as-ending bare-lf-in-trailer folded-trailer".split(),
    ],
)
def test_chunked_framing_that_bends_the_rfc_is_refused(address, framed, said):
    # Each was read as if well-formed, and the request served (200): a proxy in front that reads them by the
    # RFC sees another end of the body, and the bytes after it as another request (request smuggling).
    body = chat_body(max_tokens=1)
    with socket.create_connection(address, timeout=GENERATED_WITHIN_S) as client:
        client.sendall(chat_head("Transfer-Encoding: chunked\r\n") + framed % (len(body), body))
        response = answer_of(client)
        assert response.status == 400, response.status
        assert said in error_of(response)["message"]


def test_chunked_framing_the_rfc_allows_is_read(address):
    # Upper-case digits and leading zeros, an extension after optional whitespace (RFC 9112's BWS), trailers.
    body = chat_body(max_tokens=1)
    framed = b"00%X ;name=value\r\n%s\r\n0;last\r\nX-Checksum: 1\r\nX-Other:\r\n\r\n" % (len(body), body)
    with socket.create_connection(address, timeout=GENERATED_WITHIN_S) as client:
        client.sendall(chat_head("Transfer-Encoding: chunked\r\n") + framed)
        response = answer_of(client)
        assert response.status == 200 and json.loads(response.read())["choices"]


@pytest.mark.parametrize(
    "framing", ["Transfer-Encoding: chunked\r\n", "Transfer-Encoding: chunked\r\nContent-Length: 9\r\n"]
)
def test_an_http_10_request_with_a_transfer_encoding_is_refused_as_faulty_framing(address, framing):
    # RFC 9112 6.1: HTTP/1.0 has no transfer codings. The body was read as chunked and the request served.
    body = chat_body(max_tokens=1)
    with socket.create_connection(address, timeout=GENERATED_WITHIN_S) as client:
        client.sendall(chat_head(framing, "HTTP/1.0") + chunked(body))
        response = answer_of(client)
        assert response.status == 400 and response.getheader("Connection") == "close"
        assert "Transfer-Encoding" in error_of(response)["message"]
        assert client.recv(1) == b""  # and closed


# An expectation the server cannot meet is a 417 (RFC 9110 10.1.1).


@pytest.mark.parametrize("expect", ["something-else", "100-continue, x-more", "100-continue;x=1", "200-ok"])
def test_an_expectation_other_than_100_continue_is_answered_417(address, expect):
    # It was ignored: the request served as if nothing had been expected of the server.
    body = chat_body(max_tokens=1)
    with socket.create_connection(address, timeout=GENERATED_WITHIN_S) as client:
        client.sendall(chat_head(f"Content-Length: {len(body)}\r\n", extra=f"Expect: {expect}\r\n") + body)
        response = answer_of(client)
        assert response.status == 417 and response.getheader("Connection") == "close"
        message = error_of(response)["message"]
        assert "100-continue" in message and expect.replace("100-continue, ", "") in message, message


def test_a_client_waiting_for_100_continue_beside_an_unmet_expectation_is_told_417_first(address):
    # Two Expect headers: http.server read the first alone and told the client to send its body.
    with socket.create_connection(address, timeout=ANSWER_WITHIN_S) as client:
        client.sendall(chat_head("Content-Length: 100\r\n", extra="Expect: 100-continue\r\nExpect: x-more\r\n"))
        first_line = client.makefile("rb").readline()
    assert first_line.startswith(b"HTTP/1.1 417"), first_line


# An HTTP/1.0 client is answered with the close, and told so.


@pytest.mark.parametrize("request_bytes", [b"GET /health", b"POST /v1/chat/completions"], ids=["get", "post"])
def test_an_http_10_client_asking_for_keep_alive_is_told_the_connection_closes(address, request_bytes):
    # The connection was closed after the answer, which did not say so: an answer in HTTP/1.1 with no
    # Connection header reads as one whose connection is kept.
    body = chat_body(max_tokens=1) if request_bytes.startswith(b"POST") else b""
    with socket.create_connection(address, timeout=GENERATED_WITHIN_S) as client:
        client.sendall(request_bytes + b" HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n" % len(body))
        client.sendall(body)
        response = answer_of(client)
        assert response.status == 200 and response.read()
        assert response.getheader("Connection") == "close"
        assert client.recv(1) == b""  # and closed
