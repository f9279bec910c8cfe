"""`warmstart serve MODEL_DIR`: an OpenAI-compatible HTTP server over a local transformers model.

Any causal LM directory (or .gguf file) that `lm.models.load_model_and_tokenizer` loads and whose tokenizer
has a chat template. Standard library HTTP (`ThreadingHTTPServer`); one worker thread owns the model and
batches concurrent requests (`engine.py`). Here: the app that answers requests (`ChatServer`), the
listening server (`ChatHTTPServer`) and the start (`serve`); the endpoints and each request's HTTP side
(the API key's check, a connection's deadlines, bodies) are `handler.py`'s.

Chat completions support: messages (system / developer / user / assistant / tool, assistant `tool_calls`
and `reasoning_content`, text content parts), `tools`, `tool_choice: "auto"`, `n` (up to --max-batch),
`temperature`, `top_p`, `max_tokens` / `max_completion_tokens`, `stop`, `seed`, `logprobs` with
`top_logprobs` (0-20), `stream` with `stream_options.include_usage`, and `return_token_ids` (vLLM's:
each choice's `token_ids`, the response's `prompt_token_ids`). `model` is the base model's name or a
loaded adapter's (base + that adapter).

- A leading `<think>` block is returned in `message.reasoning_content` (vLLM's field), not in content.
- Tool calls are parsed from `<tool_call>{json}</tool_call>` text (`lm/toolcalls.py`) only when the request
  has `tools`; if any call of a turn does not parse, the whole turn is returned as content, as written.
- Log-probs are the model's own distribution (raw logits, before temperature and top-p) of the tokens of
  the returned text; the end-of-turn token is not listed, unless `return_token_ids` asks for the ids (then
  there is one log-prob per id). `usage.completion_tokens` counts it.
- Stop strings are applied to the finished text (the model generates on to its end-of-turn token or
  max_tokens); the tokens after the cut are not counted.
- Streaming is simulated: the whole completion is generated first, then sent as chunks (role, reasoning,
  content word by word, tool calls, a last chunk with finish_reason and the logprobs).
- A request with a `seed` runs in a batch of its own, so the same seed gives the same output; requests
  without one share slices with others of the same temperature, top_p and adapter.

Prompt log-probs: POST /v1/completions with `prompt` a string or a list of token ids, `echo: true`,
`logprobs: N` (0-20 alternatives) and `max_tokens: 0` returns the log-prob of every prompt token given the
tokens before it (null for the first), from one forward pass, as vLLM does; with max_tokens > 0 the
model continues the prompt (no chat template) and the generated tokens follow. Also `temperature`,
`top_p`, `seed`, `stop`, `return_token_ids`; several prompts per request (batched together), `n` 1.

Not supported (a 400 that names the parameter): `response_format` / structured output,
`tool_choice` other than "auto", non-zero frequency / presence penalties, `logit_bias`, images and audio,
the legacy `functions`, message `name`.

Access: without --api-key (or WARMSTART_API_KEY) the server refuses to listen on anything but loopback.
--request-timeout bounds a request from when it is queued: one still queued or generating at the first slice
boundary past it is answered 504 (code `timeout`). Connections (`connections.py`): at most `max_connections`
served at once (a 503 with Retry-After past it).

Admission (`admission.py`): a prompt (after the chat template) plus max_tokens beyond the model's context, or
max_tokens alone beyond it, is a 400 with code `context_length_exceeded`, answered by the handler thread
before the request is queued. Without max_tokens the default (256) is fitted to the room the prompt leaves,
as OpenAI does.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, wait
from dataclasses import dataclass, replace
from http.server import ThreadingHTTPServer
from pathlib import Path

from jinja2 import TemplateError

from ..errors import WarmstartError
from ..lm.chat import render_prompt, stop_token_ids, template_renders_tools
from ..lm.device import resolve_device
from ..lm.models import load_model_and_tokenizer
from .admission import ContextLimit, context_window, longest_token_chars
from .completions import CompletionRequest, check_request_size, completion_json
from .connections import (
    DEFAULT_MAX_CONNECTIONS,
    ConnectionLimit,
    LingeringCloser,
    busy_answer,
    refuse,
)
from .draining import InProgress, finish_in_progress
from .engine import AdapterGone, BatchEngine, ClientGone, Job, RequestTimeout
from .handler import Handler
from .lora import linear_layers
from .metrics import ServerMetrics
from .request import ApiError, ChatRequest, bad
from .response import decode_row, response_json
from .weights import tied_weights, weight_shapes

log = logging.getLogger(__name__)
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024  # ~1M tokens of text: far beyond any context served here


@dataclass(frozen=True)
class ServeOptions:
    """What `warmstart serve`'s flags turn on beyond generation."""

    model_path: str = ""  # what /v1/models gives as the base model's `root` and /get_model_info as its path
    enable_lora: bool = False
    enable_weight_updates: bool = False
    api_key: str | None = None
    request_timeout_s: float | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # served at once; one more is answered 503 (connections.py)


class ChatServer:
    """What a running server holds: the model's name, its tokenizer, and the batch engine that owns the model."""

    def __init__(self, model, tokenizer, name: str, max_batch: int, options: ServeOptions = ServeOptions()):
        if not tokenizer.chat_template:
            raise WarmstartError(
                "serve: the tokenizer has no chat template, so chat messages cannot be turned into a prompt"
            )
        self.name, self.tokenizer, self.max_batch = name, tokenizer, max_batch
        warn_if_tools_unrendered(tokenizer, name)
        self.max_request_bytes, self.api_key = options.max_request_bytes, options.api_key
        self.enable_lora, self.enable_weight_updates = options.enable_lora, options.enable_weight_updates
        self.request_timeout_s, self.max_connections = options.request_timeout_s, options.max_connections
        self.model_path, self.weight_version = options.model_path, "0"
        self.context = ContextLimit(context_window(model.config, tokenizer), longest_token_chars(tokenizer))
        self.created = int(time.time())
        # A fast tokenizer may raise "Already borrowed" when two threads use it at once; handler threads take turns.
        self.tokenizer_lock = threading.Lock()
        stop_ids = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
        # Ids a prompt may hold: known to the tokenizer and inside the embedding (which may have padding rows).
        self.vocab_size = min(len(tokenizer), model.get_input_embeddings().num_embeddings)
        # What adapters and new weights are checked against, read now: later only the worker touches the model.
        self.linears, self.weight_shapes = linear_layers(model), weight_shapes(model)
        self.weight_ties = tied_weights(model)
        self.engine = BatchEngine(model, tokenizer.pad_token_id, stop_ids, max_batch, on_slice=self._sliced)
        self.metrics = ServerMetrics(self.engine)
        self.in_progress = InProgress()  # the requests being answered: shutdown finishes them first

    def _sliced(self, rows: int) -> None:
        self.metrics.slice_rows.observe(rows)

    def models(self) -> list[str]:
        """The names requests may ask for: the base model's, then the loaded adapters'."""
        return [self.name, *self.engine.adapters.loaded]

    def model_json(self, name: str) -> dict:
        model = {"id": name, "object": "model", "created": self.created, "owned_by": "warmstart"}
        adapter = self.engine.adapters.loaded.get(name) if name != self.name else None
        if adapter is None:
            return model | {"root": self.model_path, "parent": None}
        return model | {"root": adapter.path, "parent": self.name}

    def health_json(self) -> dict:
        engine = self.engine
        return {
            "status": "ok",
            "model": self.name,
            "batches": engine.batches_run,
            "requests": engine.jobs_done,
            "sequences": engine.rows_done,
        }

    def adapter_of(self, model: str) -> str | None:
        return None if model == self.name else model

    def rows_of(self, jobs: list[Job], client_gone: Callable[[], bool]) -> list[list]:
        """Each submitted job's rows, once the engine has them; a timeout or a vanished adapter as the client's
        error. Meanwhile the client is looked at every `CLIENT_CHECK_S`: once it is gone its jobs are
        abandoned (the engine drops them before their next slice) and `ClientGone` is raised. The first job
        that fails fails the request at once, its other jobs abandoned: a request of many prompts that timed
        out would otherwise wait for each of them to spend a slice and time out in turn."""
        while True:
            not_done = wait([job.future for job in jobs], timeout=CLIENT_CHECK_S, return_when=FIRST_EXCEPTION)[1]
            failed = [job for job in jobs if job.future.done() and job.future.exception() is not None]
            if failed:
                abandon(jobs)
                self.job_rows(failed[0])  # raises its error
            if not not_done:
                return [self.job_rows(job) for job in jobs]
            if client_gone():
                abandon(jobs)
                raise ClientGone()

    def job_rows(self, job: Job) -> list:
        try:
            return job.future.result()
        except RequestTimeout as exc:
            raise ApiError(504, f"the request timed out: {exc} (--request-timeout)", code="timeout") from None
        except AdapterGone as exc:
            raise ApiError(
                404, f"the model {exc} was unloaded before the request ran", code="model_not_found", param="model"
            ) from None

    def complete(self, request: ChatRequest, client_gone: Callable[[], bool] = lambda: False) -> dict:
        request, prompt_ids = self.admit(request)
        job = Job(prompt_ids, request.n, request.sampling, request.seed, request.top_logprobs)
        job = self.configure(job, request.model, request.return_token_ids)
        self.engine.submit(job)
        [rows] = self.rows_of([job], client_gone)
        with self.tokenizer_lock:
            completions = [decode_row(self.tokenizer, row, request.stop) for row in rows]
        ids = list(prompt_ids) if request.return_token_ids else None
        response = response_json(request.model, completions, len(prompt_ids), request.tools is not None, ids)
        self.metrics.tokens(response["usage"])
        return response

    def configure(self, job: Job, model: str, return_token_ids: bool) -> Job:
        """The settings every job shares: its adapter, its timeout, whether the end-of-turn token is scored."""
        return replace(
            job, adapter=self.adapter_of(model), score_stop=return_token_ids, timeout_s=self.request_timeout_s
        )

    def complete_text(self, request: CompletionRequest, client_gone: Callable[[], bool] = lambda: False) -> dict:
        """Legacy completions: each prompt as it is (no chat template), continued and/or scored (echo). Every
        prompt is checked before any is queued, and all are queued before any is awaited (one batch)."""
        self.context.check_max_tokens(request.sampling.max_new_tokens)
        prompt_ids = [self.text_prompt_ids(p, request.sampling.max_new_tokens) for p in request.prompts]
        check_request_size(request, prompt_ids)
        jobs = [
            self.configure(
                Job(ids, 1, request.sampling, request.seed, request.logprobs, echo=request.echo),
                request.model,
                request.return_token_ids,
            )
            for ids in prompt_ids
        ]
        for job in jobs:
            self.engine.submit(job)
        rows = [row for job_rows in self.rows_of(jobs, client_gone) for row in job_rows]
        with self.tokenizer_lock:
            response = completion_json(self.tokenizer, request, prompt_ids, rows)
        self.metrics.tokens(response["usage"])
        return response

    def text_prompt_ids(self, prompt: str | list[int], max_tokens: int) -> list[int]:
        """A legacy prompt's token ids (a text tokenized as it is), or the ApiError that refuses it."""
        if isinstance(prompt, str):
            self.context.check_chars(len(prompt), "prompt")
            with self.tokenizer_lock:
                prompt = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if not prompt:
                raise bad("prompt", "the text has no tokens")
        self.context.check_prompt(len(prompt), max_tokens, "prompt")
        return prompt

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
            except TemplateError as exc:  # e.g. a template that refuses a role order (its raise_exception)
                raise ApiError(
                    400, f"messages: the model's chat template cannot render them: {exc}", param="messages"
                ) from None
            except MemoryError:
                raise
            except Exception as exc:  # the template's own code failing on these messages: theirs to change
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                raise ApiError(
                    400, f"messages: the model's chat template failed on them ({why})", param="messages"
                ) from None
            # Rendering is linear and cheap; tokenizing a huge text is not, so a hopeless one stops here.
            self.context.check_chars(len(text), "messages")
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def warn_if_tools_unrendered(tokenizer, name: str) -> None:
    """Say once, at start, where the chat template leaves `tools` out of the prompt (the tiny student's, many
    base models'): a request's tool descriptions then never reach the model, as in its training (warmstart
    renders through the same template), and a client should know rather than guess."""
    if template_renders_tools(tokenizer) is False:
        log.warning(
            "serve: %s's chat template does not render tools: a request's `tools` will not reach the model "
            "(tool calls it writes are still parsed); describe them in a system message, or serve a model whose "
            "template renders them",
            name,
        )


LISTEN_BACKLOG = 1024
CLIENT_WENT_AWAY = (BrokenPipeError, ConnectionResetError, TimeoutError)
CLIENT_CHECK_S = 0.5  # how often a handler waiting for its answer looks whether its client is still there


class ChatHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a connection open never blocks shutdown
    # The listen backlog: connections the kernel completes before the server thread accepts them.
    # socketserver's default of 5 overflowed when a trainer opened its rollouts' connections at once, and
    # the clients over it had their connections reset (measured: 20-30 of 64). The kernel caps it at
    # net.core.somaxconn.
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], app: ChatServer):
        self.address_family = address_family(address[0])  # read by socketserver's __init__, which binds
        # socketserver calls `server_close` from its __init__ when the bind fails: before `refused` is set.
        self.refused: LingeringCloser | None = None
        super().__init__(address, Handler)
        self.app = app
        self.connections = ConnectionLimit(app.max_connections)
        self.busy_answer = busy_answer(app.max_connections)
        self.refused = LingeringCloser()  # after super().__init__: a port that cannot be bound leaves no thread
        self.interrupted = False  # Ctrl-C or SIGTERM met while a connection's thread started (`process_request`)

    def process_request(self, request: socket.socket, client_address) -> None:
        """A thread for the connection if it is within the limit; past it, a 503 from this (accepting) thread,
        then the connection closed lingering by the one thread that does so for all refused connections: idle
        or slow connections must not pile up threads, and a client still sending its body must read the 503."""
        if not self.connections.take():
            self.app.metrics.connections_refused.inc()
            refuse(request, self.busy_answer)
            self.refused.close(request)
            return
        try:
            super().process_request(request, client_address)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM while the connection's thread started (waiting for it to run): that thread
            # serves the connection and gives its slot back; the server stops once this returns
            # (`service_actions`). Giving the slot back here as well had raised ValueError (released too many
            # times), which socketserver logs and goes on: the interrupt was lost and the server kept serving.
            self.interrupted = True
        except BaseException:  # no thread started (the system is out of them): the slot is free again
            self.connections.give_back()
            raise

    def service_actions(self) -> None:
        """Called by `serve_forever` after each request: an interrupt `process_request` held stops it now."""
        if self.interrupted:
            raise KeyboardInterrupt

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)  # served, then closed
        finally:
            self.connections.give_back()

    def handle_error(self, request, client_address) -> None:
        """A connection that failed outside a route's answer (reset while idle, or while an http.server
        refusal was written): one line when the client went away, as `Handler._run` logs it; socketserver's
        default printed a traceback per connection, and a port scanner or a load balancer filled the log."""
        failure = sys.exc_info()[1]
        if isinstance(failure, CLIENT_WENT_AWAY):
            log.info("client %s went away: %s", client_address[0], type(failure).__name__)
        else:
            log.exception("a connection from %s failed", client_address[0])

    def server_close(self) -> None:
        super().server_close()
        if self.refused is not None:
            self.refused.stop()


def address_family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address (`::1`, `::`), as `check_port` probes it; IPv4 for the rest."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def abandon(jobs: list[Job]) -> None:
    """Nobody will read these jobs' rows: the engine drops each before its next slice, or its admission."""
    for job in jobs:
        job.abandoned = True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def load_for_serving(model_dir: Path, device: str = "auto"):
    where = resolve_device(device, "serve --device")
    model, tokenizer = load_model_and_tokenizer(model_dir, "serve", where)  # a broken one: one error (lm/models.py)
    model.eval()
    return model, tokenizer


def serve(
    model_dir: Path,
    host: str,
    port: int,
    max_batch: int,
    model_name: str | None,
    options: ServeOptions = ServeOptions(),
    device: str = "auto",
) -> None:
    """Load the model, listen, print `serving NAME on http://HOST:PORT/v1`, and serve until interrupted."""
    check_options(host, max_batch, options)
    check_port(host, port)  # before the model loads, which for a large one takes minutes
    model, tokenizer = load_for_serving(model_dir, device)
    name = model_name or Path(model_dir).resolve().name
    app = ChatServer(model, tokenizer, name, max_batch, replace(options, model_path=str(model_dir)))
    try:
        httpd = ChatHTTPServer((host, port), app)
    except OSError as exc:
        raise WarmstartError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    app.engine.start()
    try:
        # Before the line that says the server is up: a SIGTERM sent as soon as it is read (a supervisor, a
        # test) had found the default handler still in place and killed the process with no clean-up.
        stop_on_sigterm()
        log.info("context window: %s tokens; request bodies up to %d bytes", app.context.tokens, app.max_request_bytes)
        print(
            f"serving {app.name} on http://{url_host(host)}:{httpd.server_address[1]}/v1", flush=True
        )  # tests wait for it
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()  # no new connection; those kept alive are answered 503
        finish_in_progress(app.in_progress, app.engine)


def stop_on_sigterm() -> None:
    """SIGTERM (what `docker stop`, systemd and `kill` send) stops the server as Ctrl-C does: the socket
    closed, the requests in progress answered, the engine stopped; without this it killed the process with
    no cleanup."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        signal.signal(signal.SIGTERM, interrupt)


def check_port(host: str, port: int) -> None:
    """A port out of range, or one another process listens on, as one error before anything loads. The
    probe binds as the server will (address reuse on) and lets go at once; port 0 picks a free one later."""
    if not 0 <= port <= 65535:
        raise WarmstartError(f"serve: --port {port} is not a port (0-65535)")
    if port == 0:
        return
    try:
        with socket.socket(address_family(host), socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise WarmstartError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def check_options(host: str, max_batch: int, options: ServeOptions) -> None:
    """The flags' mistakes, before the model loads."""
    if max_batch < 1:
        raise WarmstartError("serve: --max-batch must be at least 1")
    if options.max_request_bytes < 1024:
        raise WarmstartError("serve: --max-request-bytes must be at least 1024")
    if options.max_connections < 1:
        raise WarmstartError("serve: --max-connections must be at least 1")
    if options.request_timeout_s is not None and options.request_timeout_s <= 0:
        raise WarmstartError("serve: --request-timeout must be more than 0 seconds")
    if options.api_key is not None and not options.api_key.strip():
        raise WarmstartError("serve: --api-key (or WARMSTART_API_KEY) is empty")
    if options.api_key is None and not is_loopback(host):
        raise WarmstartError(
            f"serve: --host {host} is reachable from other machines: give --api-key (or WARMSTART_API_KEY), "
            "or keep it on loopback (127.0.0.1)"
        )
