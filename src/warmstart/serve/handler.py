"""The HTTP side of `warmstart serve`: `Handler`, one per connection, reads each request's head and body,
answers it from the app (`server.py`'s `ChatServer`) or `admin.py`, and writes the answer.

Endpoints:
    GET  /v1/models               the base model (its id is the directory name unless --model-name is given),
                                  then each loaded LoRA adapter ({"id", "parent": base, "root": lora_path})
    GET  /v1/models/{id}
    POST /v1/chat/completions     what they support: server.py
    POST /v1/completions          legacy text completions, for prompt log-probs (`completions.py`)
    POST /v1/load_lora_adapter    {"lora_name", "lora_path", "load_inplace"?}: with --enable-lora (vLLM's API)
    POST /v1/unload_lora_adapter  {"lora_name"}: with --enable-lora
    POST /update_weights_from_disk {"model_path", "weight_version"?}: with --enable-weight-updates (SGLang's)
    GET  /get_model_info          {"model_path", "weight_version"}: with --enable-weight-updates
    GET  /health                  {"status", "model", "batches", "requests", "sequences"}: counters since start
    GET  /metrics                 Prometheus text format (`metrics.py`)
HEAD answers as GET without the body; OPTIONS is a 204 with the path's methods in `Allow`; a known path asked
with another method is a 405 with `Allow`, any other path a 404.

Access: with --api-key (or WARMSTART_API_KEY) every request but /health and /metrics needs
`Authorization: Bearer KEY` (else 401, code `invalid_api_key`, before any of the body is read). Every error,
http.server's own included (a malformed request line, PUT or DELETE), is an OpenAI-shaped JSON body.
Connections (`connections.py`): a request's head due within HEAD_TIMEOUT_S and its body within BODY_TIMEOUT_S
after (a 408), a half-closed client still answered, a connection the server closes closed lingering (a client
still sending a refused body reads the answer), an HTTP/1.0 one closed after each answer, which says so. An
`Expect` other than `100-continue` is a 417 (RFC 9110 10.1.1): the server meets no other expectation.

Bodies (`body.py`) are read by their Content-Length or in chunked encoding; one over --max-request-bytes is
a 413 (`admission.py`).
"""

from __future__ import annotations

import io
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from . import admin
from .body import declared_length, read_body
from .completions import parse_completion_request
from .connections import BODY_TIMEOUT_S, HEAD_TIMEOUT_S, AnswerWriter, ClientWatch, DeadlineReads, close_lingering
from .engine import ClientGone
from .request import ApiError, parse_chat_request
from .response import stream_chunks

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 60
GET_PATHS = {"/v1/models", "/health", "/metrics", "/get_model_info"}  # and /v1/models/{id}
POST_PATHS = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/update_weights_from_disk",
}
SERVER_METHODS = "GET, HEAD, POST, OPTIONS"


def allowed_methods(path: str) -> str | None:
    """The methods `path` is served with (the `Allow` of a 405 or an OPTIONS answer); None: no such path."""
    if path in GET_PATHS or path.startswith("/v1/models/"):
        return "GET, HEAD, OPTIONS"
    if path in POST_PATHS:
        return "POST, OPTIONS"
    return None


def wrong_method(method: str, path: str) -> ApiError:
    """A 405 for a path served with other methods (vLLM's and FastAPI's answer), a 404 for any other path."""
    allow = allowed_methods(path)
    if allow is None:
        return ApiError(404, f"no such endpoint: {method} {path}")
    return ApiError(405, f"method {method} is not allowed on {path}: it is served with {allow}", allow=allow)


class Handler(BaseHTTPRequestHandler):
    """One connection's requests, each answered from the app of `self.server`, server.py's ChatHTTPServer
    (not annotated as one: that module imports this one, and a package's modules import without a cycle)."""

    protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses its connections
    # Each read of the socket waits at most this long: a client that sends headers and never its body (or
    # stops halfway) would otherwise hold its thread for good. Generation is not a read: it is not bounded here.
    timeout = READ_TIMEOUT_S
    # The request line and headers, all of them, within this long of the connection's opening or of the
    # previous answer: idle kept-alive connections end, and so do headers trickled a byte at a time.
    head_timeout = HEAD_TIMEOUT_S
    # The body, all of it, within this long of the head's end: a body trickled a byte at a time is a 408.
    body_timeout = BODY_TIMEOUT_S
    head_only = False  # a HEAD request's answer: its body left out (`_send_bytes`)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by reads that keep the head's deadline (the socket stays open)
        self.reads = DeadlineReads(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self.reads)
        self.wfile.close()  # replaced by writes that may begin an answer early (ClientWatch)
        self.wfile = AnswerWriter(self.connection)

    def finish(self) -> None:
        super().finish()
        # A client may still be sending what the server will not read (a refused body): closed at once, its
        # connection would be reset, and the client, stuck in its send, would never read the answer.
        close_lingering(self.connection)

    def handle_one_request(self) -> None:
        self.head_only = False  # each request on a kept-alive connection is answered whole unless a HEAD
        self.reads.keep(self.head_timeout, f"the request's head did not all come within {self.head_timeout:g} s")
        super().handle_one_request()

    def parse_request(self) -> bool:
        """http.server's parsing, which reads the headers; the head's deadline ends with it. An HTTP/1.0
        connection is closed after its answer: http.server keeps one that asks for keep-alive open without
        saying so, and a 1.0 client, which then reads its answer to the close, waited out the head's deadline.
        An expectation the server cannot meet is refused here, before any route runs."""
        try:
            parsed = super().parse_request()
        finally:
            self.reads.drop_deadline()
            self.connection.settimeout(self.timeout)  # writes too: not what was left of the head's time
        if self._before_http_11():
            self.close_connection = True
        if parsed and (unmet := self._unmet_expectations()):
            self.send_error(417, f"Expect {unmet!r}: this server meets no expectation but 100-continue")
            return False
        return parsed

    def _unmet_expectations(self) -> str:
        """The `Expect` header's members other than `100-continue` (http.server answers that one), or "".
        They used to be ignored: a client that expected something got a plain answer, not told it was unmet."""
        members = [m.strip() for m in ",".join(self.headers.get_all("Expect") or []).split(",")]
        return ", ".join(m for m in members if m and m.lower() != "100-continue")

    def _before_http_11(self) -> bool:
        """An HTTP/1.0 request: no chunked encoding, no kept-alive connection (the versions compared as
        http.server compares them)."""
        return self.request_version < "HTTP/1.1"

    def handle_expect_100(self) -> bool:
        """A client that waits for `100 Continue` before sending its body (curl does for large ones) is told
        to send it only if the body will be read: not without a valid key (a 401), not for a method other
        than GET and POST (a 405), and not for a body its headers refuse (a 413 over the limit, a 400, 411
        or 501), and not beside an expectation the server cannot meet (a 417). It gets that answer instead,
        its body never sent."""
        acceptable = self._authorized() and self._body_acceptable() and not self._unmet_expectations()
        if self.command in ("GET", "POST") and acceptable:
            return super().handle_expect_100()
        return True  # no 100: the route answers from the headers before reading any body

    def _body_acceptable(self) -> bool:
        try:
            declared_length(self.headers, self.server.app.max_request_bytes)
        except ApiError:
            return False
        return True

    def _authorized(self) -> bool:
        try:
            admin.authorize(self.server.app, urlsplit(self.path).path, self.headers.get("Authorization"))
        except ApiError:
            return False
        return True

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def do_HEAD(self) -> None:
        """GET's answer without its body (RFC 9110 9.3.2: every general-purpose server answers HEAD)."""
        self.head_only = True
        self._answer(self._get)

    def do_OPTIONS(self) -> None:
        """204 with the path's methods in `Allow` (the server's for any other path, `*` and `/` included): a
        load balancer's health check (HAProxy's default is `OPTIONS /`) took the old 501 for a dead backend."""
        self._count(204)
        self.send_response(204)
        self.send_header("Allow", allowed_methods(urlsplit(self.path).path) or SERVER_METHODS)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self) -> None:
        self._answer(self._not_allowed)

    do_DELETE = do_PATCH = do_PUT

    def _get(self, path: str) -> None:
        app = self.server.app
        # The key first: a refusal closes the connection (`_send_bytes`), so no body need be read for it.
        admin.authorize(app, path, self.headers.get("Authorization"))
        if "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
            # A GET with a body (`requests.get(url, json=...)`): read and dropped, or the next request on
            # this kept-alive connection would be read from its middle (a 501 for method "{}GET").
            self._read_body()
        if path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [app.model_json(name) for name in app.models()]})
        elif path.startswith("/v1/models/"):
            name = unquote(path.removeprefix("/v1/models/"))  # an adapter's name may hold a space, or é
            if name not in app.models():
                raise ApiError(404, f"the model {name!r} does not exist", code="model_not_found")
            self._send_json(200, app.model_json(name))
        elif path == "/health":
            self._send_json(200, app.health_json())
        elif path == "/metrics":
            self._send_bytes(200, app.metrics.text(), app.metrics.content_type)
        elif path == "/get_model_info":
            self._send_json(200, admin.model_info(app))
        else:
            raise wrong_method("GET", path)

    def _post(self, path: str) -> None:
        app = self.server.app
        # The key before the body: a client without one must not make the server read up to the body limit.
        # Its 401 closes the connection (`_send_bytes`), so the unread body is never taken for a request.
        admin.authorize(app, path, self.headers.get("Authorization"))
        body = _json_object(self._read_body())
        client_gone = ClientWatch(self.connection, self.wfile).gone
        if path == "/v1/chat/completions":
            request = parse_chat_request(body, app.models(), app.max_batch)
            response = app.complete(request, client_gone)
            if request.stream:
                self._send_events(stream_chunks(response, request.include_usage))
            else:
                self._send_json(200, response)
        elif path == "/v1/completions":
            request = parse_completion_request(body, app.models(), app.vocab_size)
            self._send_json(200, app.complete_text(request, client_gone))
        elif path == "/v1/load_lora_adapter":
            self._send_bytes(200, admin.load_adapter(app, body).encode(), "text/plain; charset=utf-8")
        elif path == "/v1/unload_lora_adapter":
            self._send_bytes(200, admin.unload_adapter(app, body).encode(), "text/plain; charset=utf-8")
        elif path == "/update_weights_from_disk":
            self._send_json(200, admin.update_weights(app, body))
        else:
            raise wrong_method("POST", path)

    def _read_body(self) -> bytes:
        """The request's body (body.py), due whole within `body_timeout` of now, however steadily it trickles
        in: each read bounded alone, a body sent a byte at a time held its thread for as long as it went on."""
        if self._before_http_11() and "Transfer-Encoding" in self.headers:
            # RFC 9112 6.1: HTTP/1.0 has no transfer codings, so such a message's framing is faulty. Read as
            # chunked, its end would be where this server says, not where a 1.0 proxy in front of it reads it.
            raise ApiError(
                400, "an HTTP/1.0 request cannot use Transfer-Encoding (RFC 9112 6.1); send a Content-Length"
            )
        self.reads.keep(self.body_timeout, f"the request body did not all come within {self.body_timeout:g} s")
        try:
            return read_body(self.rfile, self.headers, self.server.app.max_request_bytes)
        finally:
            self.reads.drop_deadline()
            self.connection.settimeout(self.timeout)  # writes too: not what was left of the body's time

    def _not_allowed(self, path: str) -> None:
        # Its body is left unread: the answer closes the connection, lingering (`finish`).
        allow = allowed_methods(path) or SERVER_METHODS
        raise ApiError(405, f"method {self.command} is not allowed: {path} is served with {allow}", allow=allow)

    def _answer(self, route) -> None:
        """Run a route, counted as in progress; while the server shuts down, a 503 (draining.py)."""
        in_progress = self.server.app.in_progress
        if not in_progress.enter():
            return self._run(shutting_down)
        try:
            self._run(route)
        finally:
            in_progress.leave()

    def _run(self, route) -> None:
        """Run a route; every failure becomes an OpenAI error body, never a traceback for the client."""
        path = urlsplit(self.path).path
        try:
            try:
                route(path)
            except ApiError as exc:
                self._send_json(exc.status, exc.body(), {"Allow": exc.allow} if exc.allow else {})
            except (BrokenPipeError, ConnectionResetError, TimeoutError, ClientGone):
                raise
            except Exception as exc:
                log.exception("request failed: %s %s", self.command, self.path)
                self._send_json(500, ApiError(500, f"internal error: {type(exc).__name__}: {exc}").body())
        except (BrokenPipeError, ConnectionResetError):  # also while its error was being sent
            log.info("client went away before its answer was sent")
            self.close_connection = True
        except ClientGone:
            log.info("client went away while its request was generated; its work was dropped")
            self.close_connection = True
        except TimeoutError:  # no progress for READ_TIMEOUT_S: a stalled reader (a stalled body is a 408)
            log.info("client connection stalled for %d s; closed", READ_TIMEOUT_S)
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, an unknown method, headers too long) as an
        OpenAI error body rather than its HTML page."""
        text = message or HTTPStatus(code).phrase
        if self.request_version == "HTTP/0.9":  # a request line too broken to name a version: answer in 1.0
            self.request_version = "HTTP/1.0"
        self._send_json(code, ApiError(code, f"{code} {HTTPStatus(code).phrase}: {text}").body())

    def _send_json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(body).encode(), "application/json", headers)

    def _count(self, status: int) -> None:
        """Counted before the answer is written, so a client that has it sees it in /metrics."""
        path = urlsplit(self.path).path if self.command else "other"  # no command: the request line did not parse
        self.server.app.metrics.request(path, status)

    def _send_bytes(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._count(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        # After an error the request body may be unread: the next request starts on a new connection. An
        # HTTP/1.0 one is closed after every answer (`parse_request`), and the answer says so: one that had
        # asked for keep-alive, answered in HTTP/1.1 without a word, could take the connection for kept.
        if status >= 400 or self._before_http_11():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.head_only:  # the GET's headers, Content-Length included, and no body
            self.head_only = False
            return
        self.wfile.write(data)

    def _send_events(self, chunks: list[dict]) -> None:
        """Server-sent events, in HTTP/1.1 chunked encoding so the connection stays reusable. An HTTP/1.0
        client knows no chunked encoding (RFC 9112 6.1 forbids sending it one): its events are sent as they
        are, and the connection's close ends them."""
        chunked = not self._before_http_11()
        self._count(200)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        for event in [*(f"data: {json.dumps(c)}\n\n" for c in chunks), "data: [DONE]\n\n"]:
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)  # one line per request would drown the batch log


def shutting_down(path: str) -> None:
    raise ApiError(503, "the server is shutting down; ask again elsewhere or later", code="server_shutting_down")


def _json_object(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # arrays or objects nested deeper than the parser goes
        raise ApiError(400, "the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:  # JSON's \ud800-style escapes can spell a lone surrogate, which no tokenizer takes
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "the request body holds text that is not valid Unicode (a lone surrogate)") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None
    return body
