"""`warmstart serve`'s connections: requests that wait in the queue past `--request-timeout`, the limit on
connections served at once, the deadline for a request's head, clients that half-close their socket, and
the API key checked before any body is read.

Real sockets on loopback throughout. Where a test needs a limit smaller than the defaults (512 connections,
30 s for a head), the server runs in this process, built as `warmstart serve` builds it, with that limit
changed; the others speak to a `warmstart serve` process.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import http as http_request
from serve_helpers import in_process_server, metric, running_server, scrape

from warmstart.serve import server as serve_server
from warmstart.serve.engine import SLICE_TOKENS
from warmstart.serve.handler import Handler

KEY = "sekrit-key"
SENTENCE = "what is 3 plus 4? the answer is"
QUESTION = [{"role": "user", "content": "hi"}]
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
ANSWER_WITHIN_S = 10  # a bound for "at once" far above the real figure (milliseconds) on a loaded machine
GENERATED_WITHIN_S = 120  # generation, on a loaded machine: seconds


def connect(address, timeout_s: float = ANSWER_WITHIN_S) -> socket.socket:
    return socket.create_connection(address, timeout=timeout_s)


def answer_of(connection: socket.socket) -> http.client.HTTPResponse:
    """The answer on a raw connection, parsed as an HTTP client does (an interim 1xx answer skipped)."""
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response


def closed_by_server(connection: socket.socket) -> bool:
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True


def completion_request(body: dict, headers: str = "", version: str = "HTTP/1.1") -> bytes:
    data = json.dumps(body).encode()
    head = f"POST /v1/completions {version}\r\nHost: x\r\n{headers}Content-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


# --request-timeout counts the time a request waits in the queue.


@pytest.fixture(scope="module")
def one_at_a_time_url(model_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("serve-queue-log")
    with running_server(model_dir, log_dir, "--max-batch", "1", "--request-timeout", "0.2") as url:
        yield url


def test_requests_that_wait_in_the_queue_past_the_timeout_are_504s_and_never_run(one_at_a_time_url, tokenizer):
    # 32 requests of one slice each, one at a time: ~6 s of work here, far past 0.2 s for the last in line.
    # They were all served, however long they had waited: the timeout was checked only between the slices of
    # a running request, and each of these runs one.
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    health = one_at_a_time_url.removesuffix("/v1") + "/health"
    slices_before = json.loads(http_request("GET", health)[2])["batches"]

    def ask(client) -> int | openai.APIStatusError:
        try:
            client.completions.create(model="tiny", prompt=prompt, max_tokens=SLICE_TOKENS, temperature=0)
            return 200
        except openai.APIStatusError as error:
            return error

    with (
        openai.OpenAI(base_url=one_at_a_time_url, api_key="x", max_retries=0, timeout=120) as client,
        ThreadPoolExecutor(32) as pool,
    ):
        answers = list(pool.map(lambda _: ask(client), range(32)))
    errors = [a for a in answers if a != 200]
    assert errors, "every request was served, however long it had waited"
    for error in errors:  # the same answer as a request whose time ran out while it generated
        assert error.status_code == 504 and error.code == "timeout", error
        assert error.body["type"] == "server_error" and "--request-timeout" in error.message
    slices = json.loads(http_request("GET", health)[2])["batches"] - slices_before
    assert slices == answers.count(200), "a request that timed out in the queue still ran"
    samples = scrape(one_at_a_time_url)
    assert metric(samples, "warmstart_queue_depth") == 0 and metric(samples, "warmstart_rows_running") == 0


# At most max_connections connections served at once.


def test_connections_past_the_limit_are_answered_503_at_once_and_hold_no_thread(served_model):
    # A thread per connection, with no limit: 2,000 connections that never sent a request held 2,000 threads.
    with in_process_server(served_model, max_connections=4) as address, ExitStack() as held:
        idle = [held.enter_context(connect(address)) for _ in range(4)]  # never send a request
        threads = None
        for _ in range(20):
            with connect(address) as extra:
                extra.sendall(HEALTH)
                response = answer_of(extra)
                error = json.loads(response.read())["error"]
                assert response.status == 503 and error["code"] == "server_busy", (response.status, error)
                assert response.getheader("Retry-After") == "1" and closed_by_server(extra)
            threads = threads or threading.active_count()
        assert threading.active_count() <= threads  # no thread started for any of them
        base_url = f"http://{address[0]}:{address[1]}/v1"
        with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=30) as client:
            with pytest.raises(openai.APIStatusError) as caught:
                client.models.list()
        assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"] == "1"
        idle.pop().close()  # a place frees up once a connection ends
        assert get_once_served(base_url.removesuffix("/v1") + "/health")[0] == 200
        for connection in idle:
            connection.close()
        metrics = get_once_served(base_url.removesuffix("/v1") + "/metrics")[2].decode()
        samples = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
        assert samples["warmstart_connections_refused_total"] >= 21  # and any the waits for a free place met


def get_once_served(url: str) -> tuple[int, str, bytes]:
    """GET `url`, asked again while the server is at its limit (a closed connection's place comes back once
    its thread has ended, a moment after the client sees it closed)."""
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while (answer := http_request("GET", url))[0] == 503:
        assert time.monotonic() < deadline, "a closed connection's place never came back"
        time.sleep(0.05)
    return answer


# A request's head is due within Handler.head_timeout: idle kept-alive connections and trickled headers end.


def trickled_until_closed(connection: socket.socket, within_s: float) -> bool:
    """Send a header byte every 0.2 s, each in time for the per-read timeout; True once the server closes."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            connection.sendall(b"x")
            if select.select([connection], [], [], 0.2)[0]:
                return connection.recv(4096) == b""
        except OSError:  # reset: closed with our bytes unread
            return True
    return False


def test_idle_and_trickling_connections_are_closed_at_the_heads_deadline(served_model, monkeypatch):
    # Each read waited up to 60 s, so headers trickled a byte at a time held their thread for good.
    monkeypatch.setattr(Handler, "head_timeout", 1.0, raising=False)
    with in_process_server(served_model) as address:
        with connect(address) as trickler:
            trickler.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            assert trickled_until_closed(trickler, ANSWER_WITHIN_S), "a trickled head kept its connection"
        with connect(address) as kept:
            kept.sendall(HEALTH)
            response = answer_of(kept)
            assert response.status == 200 and response.read()
            assert closed_by_server(kept), "an idle kept-alive connection was not closed"  # recv: within 10 s


# A client that half-closes its socket after its request still gets the answer.


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_a_client_that_half_closes_after_its_request_is_answered(served_model, tokenizer, monkeypatch, version):
    # The socket reads as ended once the client has shut down its side: it was taken for gone, its request
    # dropped and the connection closed without an answer (HTTP/1.1 until an interim 100 Continue told the
    # two apart; HTTP/1.0, which has no interim answers, until the answer's first bytes were written ahead).
    # The client is looked at every 10 ms here (0.5 s in the server), so a request of a slice or more is
    # looked at many times.
    monkeypatch.setattr(serve_server, "CLIENT_CHECK_S", 0.01)
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    body = {"model": "tiny", "prompt": [prompt] * 4, "max_tokens": SLICE_TOKENS, "temperature": 0}
    with in_process_server(served_model) as address, connect(address, GENERATED_WITHIN_S) as connection:
        connection.sendall(completion_request(body, version=version))
        connection.shutdown(socket.SHUT_WR)
        response = answer_of(connection)
        assert response.status == 200 and len(json.loads(response.read())["choices"]) == 4


# The API key is checked before the body is read.


@pytest.fixture(scope="module")
def keyed_address(model_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("serve-keyed-log")
    with running_server(model_dir, log_dir, env={"WARMSTART_API_KEY": KEY}) as url:
        host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
        yield host, int(port)


@pytest.mark.parametrize("framing", ["Content-Length: 4000000\r\n", "Transfer-Encoding: chunked\r\n"])
@pytest.mark.parametrize("authorization", ["", "Authorization: Bearer wrong\r\n"])
def test_a_request_without_the_key_is_refused_before_its_body_is_read(keyed_address, framing, authorization):
    # The body was read first, up to --max-request-bytes, for anyone: this one's 4 MB never come, and the
    # server waited for them (60 s) before it said 401.
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{authorization}{framing}\r\n"
    with connect(keyed_address) as connection:
        connection.sendall(head.encode() + b'{"model": ')
        response = answer_of(connection)
        assert response.status == 401 and json.loads(response.read())["error"]["code"] == "invalid_api_key"
        assert response.getheader("Connection") == "close" and closed_by_server(connection)


def test_a_client_waiting_for_100_continue_is_told_401_instead(keyed_address):
    # curl waits for `100 Continue` before a large body: it was told to send it, whatever its key.
    data = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()

    def head(authorization: str) -> bytes:
        return (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{authorization}Expect: 100-continue\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()

    with connect(keyed_address) as refused:
        refused.sendall(head("Authorization: Bearer wrong\r\n"))
        first_line = refused.makefile("rb").readline()
        assert first_line.startswith(b"HTTP/1.1 401"), first_line
    with connect(keyed_address, GENERATED_WITHIN_S) as allowed:
        allowed.sendall(head(f"Authorization: Bearer {KEY}\r\n"))
        reader = allowed.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 100") and reader.readline() == b"\r\n"
        allowed.sendall(data)
        assert reader.readline().startswith(b"HTTP/1.1 200")


def test_the_sdk_without_the_key_gets_the_401_though_its_body_is_left_unread(keyed_address):
    # The connection is closed after the 401 rather than drained: the SDK still reads the 401 (no reset).
    host, port = keyed_address
    with openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="wrong", max_retries=0, timeout=30) as client:
        for size in (10, 1_000_000):
            with pytest.raises(openai.AuthenticationError) as caught:
                client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * size}])
            assert caught.value.code == "invalid_api_key"
    with openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key=KEY, max_retries=0, timeout=60) as client:
        for _ in range(2):  # and with the key, the same client's kept-alive connection serves on
            assert client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=2).choices


def test_the_max_connections_flag_defaults_to_the_servers_limit_and_is_checked():
    import inspect

    from typer.testing import CliRunner

    from warmstart.cli import app, serve_cmd
    from warmstart.serve.connections import DEFAULT_MAX_CONNECTIONS

    assert inspect.signature(serve_cmd).parameters["max_connections"].default.default == DEFAULT_MAX_CONNECTIONS
    result = CliRunner().invoke(app, ["serve", "/nonexistent-model", "--max-connections", "0"])
    assert result.exit_code != 0 and "--max-connections must be at least 1" in result.output
