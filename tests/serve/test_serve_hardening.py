"""`warmstart serve` hardening: the API key (`--api-key` / WARMSTART_API_KEY), the refusal to listen
beyond loopback without one, /metrics (parsed by prometheus-client's parser), http.server's own
refusals as JSON, and the management endpoints off unless their flag is given."""

from __future__ import annotations

import http.client as http_client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import openai
import pytest
from serve_helpers import http, metric, running_server, scrape

KEY = "sekrit-key"
QUESTION = [{"role": "user", "content": "what is 2 plus 3?"}]


@pytest.fixture(scope="module")
def keyed_url(model_dir, tmp_path_factory):
    with running_server(model_dir, tmp_path_factory.mktemp("serve-key-log"), env={"WARMSTART_API_KEY": KEY}) as url:
        yield url


def error_of(data: bytes) -> dict:
    return json.loads(data)["error"]


def test_the_api_key_is_required_on_everything_but_health_and_metrics(keyed_url):
    root = keyed_url.removesuffix("/v1")
    for method, path, body in [
        ("GET", "/v1/models", None),
        ("POST", "/v1/chat/completions", {"model": "tiny", "messages": QUESTION}),
        ("POST", "/v1/completions", {"model": "tiny", "prompt": "hi"}),
        ("POST", "/update_weights_from_disk", {"model_path": "/x"}),
        ("GET", "/get_model_info", None),
    ]:
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}]:
            status, content_type, data = http(method, root + path, body, headers)
            assert status == 401 and content_type == "application/json", (method, path, headers)
            assert error_of(data)["code"] == "invalid_api_key" and "Bearer" in error_of(data)["message"]
    assert http("GET", root + "/health")[0] == 200
    assert http("GET", root + "/metrics")[0] == 200


def test_the_sdk_with_the_key_is_served_and_without_it_refused(keyed_url):
    with openai.OpenAI(base_url=keyed_url, api_key=KEY, max_retries=0, timeout=120) as client:
        assert client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=2).usage.completion_tokens
    with openai.OpenAI(base_url=keyed_url, api_key="wrong", max_retries=0, timeout=120) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.models.list()
    assert caught.value.code == "invalid_api_key"


@pytest.mark.parametrize(("flags", "why"), [(["--host", "0.0.0.0"], "--api-key"), (["--api-key", " "], "is empty")])
def test_unsafe_or_empty_keys_are_refused_at_start(model_dir, flags, why):
    done = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "serve", str(model_dir), "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "WARMSTART_API_KEY"},  # not the caller's key
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: serve: ") and why in lines[0]


def test_metrics_count_requests_tokens_and_slices(client, base_url):
    before = scrape(base_url)
    response = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=5)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=QUESTION)
    http("GET", base_url.removesuffix("/v1") + "/no/such/page")
    after = scrape(base_url)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    chat = "/v1/chat/completions"
    assert delta("warmstart_requests_total", endpoint=chat, status="200") == 1
    assert delta("warmstart_requests_total", endpoint=chat, status="404") == 1
    assert delta("warmstart_requests_total", endpoint="other", status="404") == 1
    assert delta("warmstart_prompt_tokens_total") == response.usage.prompt_tokens
    assert delta("warmstart_generated_tokens_total") == response.usage.completion_tokens
    assert delta("warmstart_slice_batch_size_count") >= 1
    assert metric(after, "warmstart_slice_batch_size_bucket", le="+Inf") == metric(
        after, "warmstart_slice_batch_size_count"
    )
    assert metric(after, "warmstart_queue_depth") == 0 and metric(after, "warmstart_rows_running") == 0
    assert ("warmstart_adapter_loads_total", frozenset({("result", "ok")})) not in after  # none yet: no series
    assert delta("warmstart_requests_total", endpoint="/metrics", status="200") == 1  # the first scrape


def raw_exchange(base_url: str, request: bytes) -> tuple[str, bytes]:
    """(status line, body) of one request written as raw bytes."""
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(request)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return head.split(b"\r\n")[0].decode(), body


@pytest.mark.parametrize(
    ("request_bytes", "status", "said"),
    [
        (b"PUT /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", "405", "GET and POST"),
        (b"DELETE /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n", "405", "DELETE"),
        (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", "501", "Unsupported method ('BREW')"),
        (b"GARBAGE\r\n\r\n", "400", "Bad request syntax"),
        (b"GET / HTTP/9.x\r\n\r\n", "400", "Bad request version"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", "414", "URI Too Long"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", "431", "Line too long"),
    ],
)
def test_http_servers_own_refusals_are_json(base_url, request_bytes, status, said):
    line, body = raw_exchange(base_url, request_bytes)
    assert line.split()[1] == status, line
    error = error_of(body)
    assert said in error["message"] and set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("method", "path", "flag"),
    [
        ("POST", "/v1/load_lora_adapter", "--enable-lora"),
        ("POST", "/v1/unload_lora_adapter", "--enable-lora"),
        ("POST", "/update_weights_from_disk", "--enable-weight-updates"),
        ("GET", "/get_model_info", "--enable-weight-updates"),
    ],
)
def test_management_endpoints_are_off_without_their_flag(base_url, method, path, flag):
    body = {"lora_name": "a", "lora_path": "/x"} if method == "POST" else None
    status, content_type, data = http(method, base_url.removesuffix("/v1") + path, body)
    assert status == 404 and content_type == "application/json" and flag in error_of(data)["message"]


@pytest.mark.parametrize(("port", "why"), [("70000", "--port 70000 is not a port"), ("-1", "--port -1 is not a port")])
def test_a_port_out_of_range_is_refused_before_the_model_loads(model_dir, port, why):
    done = subprocess.run(
        [sys.executable, "-m", "warmstart.cli", "serve", str(model_dir), "--port", port],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0] == f"error: serve: {why} (0-65535)"


def test_a_port_in_use_is_refused_before_the_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(  # no model at all: the port's error comes first
            [sys.executable, "-m", "warmstart.cli", "serve", str(tmp_path / "absent"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1 and f"error: serve: cannot listen on 127.0.0.1:{port}" in done.stderr


def serve_process(model_dir, *flags: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "warmstart.cli", "serve", str(model_dir), "--port", "0", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 90)
    line = process.stdout.readline() if ready else ""
    assert " on http://127.0.0.1:" in line, line
    return process, line.split()[-1]


def test_sigterm_stops_the_server_as_ctrl_c_does(model_dir, tmp_path):
    process, _ = serve_process(model_dir)
    try:
        process.send_signal(signal.SIGTERM)  # what docker stop and systemd send
        assert process.wait(timeout=30) == 0  # closed and stopped, not killed by the signal (-15)
    finally:
        process.kill()
    assert "Traceback" not in process.stderr.read()


def test_shutdown_answers_the_requests_in_progress_and_refuses_new_ones(model_dir):
    process, url = serve_process(model_dir)
    host, port = urlsplit(url).hostname, urlsplit(url).port
    try:
        kept = http_client.HTTPConnection(host, port, timeout=60)
        kept.request("GET", "/health")  # a connection kept alive across the shutdown
        assert kept.getresponse().read()
        # A request in progress when the signal comes, for as long as the test needs: its body half sent.
        body = json.dumps({"model": "tiny", "messages": QUESTION, "max_tokens": 8}).encode()
        slow = socket.create_connection((host, port), timeout=60)
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        slow.sendall(head.encode() + body[:10])
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)  # what docker stop and systemd send
        time.sleep(1.0)
        kept.request("POST", "/v1/chat/completions", json.dumps({"model": "tiny", "messages": QUESTION}))
        refused = kept.getresponse()
        assert refused.status == 503 and error_of(refused.read())["code"] == "server_shutting_down"
        with pytest.raises(ConnectionRefusedError):  # the listening socket is closed: no new connection
            socket.create_connection((host, port), timeout=5)
        assert process.poll() is None  # still waiting for the request in progress
        slow.sendall(body[10:])
        answer = slow.makefile("rb").read()  # the whole answer, then the connection closes
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    status_line, _, payload = answer.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 200") and json.loads(payload)["choices"][0]["message"]["content"]
    log = process.stderr.read()
    assert "shutting down once 1 request(s) in progress are answered" in log and "Traceback" not in log


def test_a_request_whose_client_went_away_is_dropped_not_generated_to_its_end(model_dir):
    # One sequence at a time, 300 prompts in one request: ~15 s of work queued behind each other.
    process, url = serve_process(model_dir, "--max-batch", "1")
    host, port = urlsplit(url).hostname, urlsplit(url).port
    try:
        body = json.dumps({"model": "tiny", "prompt": ["what is 2 plus 3?"] * 300, "max_tokens": 230}).encode()
        gone = socket.create_connection((host, port), timeout=60)
        gone.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(1.0)
        gone.close()  # the client gives up
        status, _, _ = http("POST", url + "/chat/completions", {"model": "tiny", "messages": QUESTION, "max_tokens": 4})
        health = json.loads(http("GET", url.removesuffix("/v1") + "/health")[2])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert status == 200
    assert health["requests"] < 300  # the next request was not queued behind the abandoned prompts' work
    assert "client went away while its request was generated; its work was dropped" in process.stderr.read()
