"""`warmstart serve MODEL_DIR`: an OpenAI-compatible HTTP server over a local transformers model.

Any causal LM directory (or .gguf file) that `lm.models.load_model_and_tokenizer` loads and whose tokenizer
has a chat template. Standard library HTTP (`ThreadingHTTPServer`); one worker thread owns the model and
batches concurrent requests (`engine.py`).

Endpoints:
    GET  /v1/models               the one model; its id is the directory name unless --model-name is given
    GET  /v1/models/{id}
    POST /v1/chat/completions     see below
    POST /v1/completions          legacy text completions, for prompt log-probs (`completions.py`)
    GET  /health                  {"status", "model", "batches", "requests", "sequences"}: counters since start

Chat completions support: messages (system / developer / user / assistant / tool, assistant `tool_calls`
and `reasoning_content`, text content parts), `tools`, `tool_choice: "auto"`, `n` (up to --max-batch),
`temperature`, `top_p`, `max_tokens` / `max_completion_tokens`, `stop`, `seed`, `logprobs` with
`top_logprobs` (0-20), `stream` with `stream_options.include_usage`.

- A leading `<think>` block is returned in `message.reasoning_content` (vLLM's field), not in content.
- Tool calls are parsed from `<tool_call>{json}</tool_call>` text (`lm/toolcalls.py`) only when the request
  has `tools`; if any call of a turn does not parse, the whole turn is returned as content, as written.
- Log-probs are the model's own distribution (raw logits, before temperature and top-p) of the tokens of
  the returned text; the end-of-turn token is not listed. `usage.completion_tokens` counts it.
- Stop strings are applied to the finished text (the model generates on to its end-of-turn token or
  max_tokens); the tokens after the cut are not counted.
- Streaming is simulated: the whole completion is generated first, then sent as chunks (role, reasoning,
  content word by word, tool calls, a last chunk with finish_reason and the logprobs).
- A request with a `seed` runs in a batch of its own, so the same seed gives the same output; requests
  without one share batches with others of the same temperature, top_p and max_tokens.

Prompt log-probs: POST /v1/completions with `prompt` a string or a list of token ids, `echo: true`,
`logprobs: N` (0-20 alternatives) and `max_tokens: 0` returns the log-prob of every prompt token given the
tokens before it (null for the first), from one forward pass, as vLLM does; with max_tokens > 0 the
model continues the prompt (no chat template) and the generated tokens follow. Also `temperature`,
`top_p`, `seed`, `stop`; one prompt per request, `n` 1.

Not supported (a 400 that names the parameter): `response_format` / structured output,
`tool_choice` other than "auto", non-zero frequency / presence penalties, `logit_bias`, images and audio,
the legacy `functions`, message `name`. There is no authentication: the API key is ignored, and the
default host is loopback for that reason.

Admission (`admission.py`): a body over --max-request-bytes is a 413; a prompt (after the chat template)
plus max_tokens beyond the model's context, or max_tokens alone beyond it, is a 400 with code
`context_length_exceeded`, answered by the handler thread before the request is queued. Without
max_tokens the default (256) is fitted to the room the prompt leaves, as OpenAI does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import TemplateError

from ..errors import WarmstartError
from ..lm.chat import render_prompt, stop_token_ids
from ..lm.device import resolve_device
from ..lm.models import load_model_and_tokenizer
from .admission import ContextLimit, context_window, longest_token_chars
from .completions import CompletionRequest, completion_json, parse_completion_request
from .engine import BatchEngine, Job
from .request import ApiError, ChatRequest, bad, parse_chat_request
from .response import decode_row, response_json, stream_chunks

log = logging.getLogger(__name__)
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024  # ~1M tokens of text: far beyond any context served here
# A refused body is read and dropped up to this size, so that the client, still sending, gets the 413 rather
# than a connection reset; a larger one is not read at all.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


class ChatServer:
    """What a running server holds: the model's name, its tokenizer, and the batch engine that owns the model."""

    def __init__(self, model, tokenizer, name: str, max_batch: int, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        if not tokenizer.chat_template:
            raise WarmstartError(
                "serve: the tokenizer has no chat template, so chat messages cannot be turned into a prompt"
            )
        self.name, self.tokenizer, self.max_batch = name, tokenizer, max_batch
        self.max_request_bytes = max_request_bytes
        self.context = ContextLimit(context_window(model.config, tokenizer), longest_token_chars(tokenizer))
        self.created = int(time.time())
        # A fast tokenizer may raise "Already borrowed" when two threads use it at once; handler threads take turns.
        self.tokenizer_lock = threading.Lock()
        stop_ids = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
        # Ids a prompt may hold: known to the tokenizer and inside the embedding (which may have padding rows).
        self.vocab_size = min(len(tokenizer), model.get_input_embeddings().num_embeddings)
        self.engine = BatchEngine(model, tokenizer.pad_token_id, stop_ids, max_batch)

    def model_json(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "warmstart"}

    def health_json(self) -> dict:
        engine = self.engine
        return {
            "status": "ok",
            "model": self.name,
            "batches": engine.batches_run,
            "requests": engine.jobs_done,
            "sequences": engine.rows_done,
        }

    def complete(self, request: ChatRequest) -> dict:
        request, prompt_ids = self.admit(request)
        job = Job(prompt_ids, request.n, request.sampling, request.seed, request.top_logprobs)
        rows = self.engine.submit(job).result()
        with self.tokenizer_lock:
            completions = [decode_row(self.tokenizer, row, request.stop) for row in rows]
        return response_json(self.name, completions, len(prompt_ids), request.tools is not None)

    def complete_text(self, request: CompletionRequest) -> dict:
        """Legacy completions: the prompt as it is (no chat template), continued and/or scored (echo)."""
        prompt_ids = request.prompt
        self.context.check_max_tokens(request.sampling.max_new_tokens)
        if isinstance(prompt_ids, str):
            self.context.check_chars(len(prompt_ids), "prompt")
            with self.tokenizer_lock:
                prompt_ids = self.tokenizer(prompt_ids, add_special_tokens=False)["input_ids"]
            if not prompt_ids:
                raise bad("prompt", "the text has no tokens")
        self.context.check_prompt(len(prompt_ids), request.sampling.max_new_tokens, "prompt")
        job = Job(prompt_ids, 1, request.sampling, request.seed, request.logprobs, echo=request.echo)
        [row] = self.engine.submit(job).result()
        with self.tokenizer_lock:
            return completion_json(self.name, self.tokenizer, request, prompt_ids, row)

    def admit(self, request: ChatRequest) -> tuple[ChatRequest, list[int]]:
        """The request as it will run (a default max_tokens fitted to the context) and its prompt's ids, or the
        ApiError that refuses it: all before it is queued, so a request that cannot fit never costs the engine."""
        asked = request.sampling.max_new_tokens
        if request.max_tokens_given:
            self.context.check_max_tokens(asked)
        prompt_ids = self.encode_prompt(request)
        if not request.max_tokens_given:
            fitted = replace(request.sampling, max_new_tokens=self.context.completion_room(len(prompt_ids), asked))
            request = replace(request, sampling=fitted)
        self.context.check_prompt(len(prompt_ids), request.sampling.max_new_tokens, "messages")
        return request, prompt_ids

    def encode_prompt(self, request: ChatRequest) -> list[int]:
        with self.tokenizer_lock:
            try:
                text = render_prompt(self.tokenizer, request.messages, request.tools)
            except (TemplateError, ValueError, TypeError) as exc:  # e.g. a template that refuses a role order
                raise ApiError(
                    400, f"messages: the model's chat template cannot render them: {exc}", param="messages"
                ) from None
            # Rendering is linear and cheap; tokenizing a huge text is not, so a hopeless one stops here.
            self.context.check_chars(len(text), "messages")
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]


class ChatHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a connection open never blocks shutdown

    def __init__(self, address: tuple[str, int], app: ChatServer):
        super().__init__(address, Handler)
        self.app = app


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses its connections
    server: ChatHTTPServer

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _get(self) -> None:
        app, path = self.server.app, urlsplit(self.path).path
        if path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [app.model_json()]})
        elif path == f"/v1/models/{app.name}":
            self._send_json(200, app.model_json())
        elif path.startswith("/v1/models/"):
            raise ApiError(
                404, f"the model {path.removeprefix('/v1/models/')!r} does not exist", code="model_not_found"
            )
        elif path == "/health":
            self._send_json(200, app.health_json())
        else:
            raise ApiError(404, f"no such endpoint: GET {path}")

    def _post(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_json()  # read first, so the connection is clean for the next request either way
        app = self.server.app
        if path == "/v1/completions":
            self._send_json(200, app.complete_text(parse_completion_request(body, app.name, app.vocab_size)))
            return
        if path != "/v1/chat/completions":
            raise ApiError(404, f"no such endpoint: POST {path}")
        request = parse_chat_request(body, app.name, app.max_batch)
        response = app.complete(request)
        if request.stream:
            self._send_events(stream_chunks(response, request.include_usage))
        else:
            self._send_json(200, response)

    def _answer(self, route) -> None:
        """Run a route; every failure becomes an OpenAI error body, never a traceback for the client."""
        try:
            route()
        except ApiError as exc:
            self._send_json(exc.status, exc.body())
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away before its answer was sent")
        except Exception as exc:
            log.exception("request failed: %s %s", self.command, self.path)
            self._send_json(500, ApiError(500, f"internal error: {type(exc).__name__}: {exc}").body())

    def _read_json(self) -> dict:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            raise ApiError(400, "the request needs a JSON body with a Content-Length header")
        limit = self.server.app.max_request_bytes
        if int(length) > limit:
            self._drain(int(length))
            raise ApiError(
                413,
                f"the request body is {length} bytes, more than this server's limit of {limit} (--max-request-bytes)",
                code="request_too_large",
            )
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    def _drain(self, length: int) -> None:
        """Read and drop a refused body, a chunk at a time, if it is small enough to be worth reading."""
        left = length if length <= DRAIN_LIMIT_BYTES else 0
        while left > 0:
            chunk = self.rfile.read(min(left, 1024 * 1024))
            if not chunk:
                break
            left -= len(chunk)

    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:  # after an error the request body may be unread: start the next request afresh
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, chunks: list[dict]) -> None:
        """Server-sent events, in HTTP/1.1 chunked encoding so the connection stays reusable."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in [*(f"data: {json.dumps(c)}\n\n" for c in chunks), "data: [DONE]\n\n"]:
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)  # one line per request would drown the batch log


def load_for_serving(model_dir: Path, device: str = "auto"):
    where = resolve_device(device, "serve --device")
    try:
        model, tokenizer = load_model_and_tokenizer(model_dir, "serve", where)
    except (OSError, ValueError, KeyError) as exc:  # what transformers raises for a broken directory
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WarmstartError(f"serve: cannot load the model at {model_dir}: {first_line}") from None
    model.eval()
    return model, tokenizer


def serve(
    model_dir: Path,
    host: str,
    port: int,
    max_batch: int,
    model_name: str | None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    device: str = "auto",
) -> None:
    """Load the model, listen, print `serving NAME on http://HOST:PORT/v1`, and serve until interrupted."""
    if max_batch < 1:
        raise WarmstartError("serve: --max-batch must be at least 1")
    if max_request_bytes < 1024:
        raise WarmstartError("serve: --max-request-bytes must be at least 1024")
    model, tokenizer = load_for_serving(model_dir, device)
    name = model_name or Path(model_dir).resolve().name
    app = ChatServer(model, tokenizer, name, max_batch, max_request_bytes)
    try:
        httpd = ChatHTTPServer((host, port), app)
    except OSError as exc:
        raise WarmstartError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    app.engine.start()
    log.info("context window: %s tokens; request bodies up to %d bytes", app.context.tokens, max_request_bytes)
    print(f"serving {app.name} on http://{host}:{httpd.server_address[1]}/v1", flush=True)  # tests wait for this line
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        app.engine.stop()
