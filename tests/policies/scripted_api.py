"""A loopback server that answers each request as a test's script says, for the answers tests/fake_api.py's
fixed set of faults does not hold (a provider's own wording of an error, a body trickled a byte at a time).

`Scripted(answer)`: `answer(path, body, n)` (the request's path, its JSON body, its number from 0) returns
what to answer: None for a correct reply (OpenAI's chat completion or legacy completion, or Anthropic's
message, by the path), a dict (`status`, `headers`, `body`: a dict or list sent as JSON, a str or bytes sent
as they are), or a callable that writes the raw answer itself on the handler. GETs of `/models` list
`models`. Every POST is logged (`log`: time, path, body).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROBLEM = re.compile(r"What is (-?\d+)([+\-*])(-?\d+)\?")
USAGE = {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}


def chat_reply(content: str | None = "Answer: 4", finish: str = "stop", model: str = "fake-model", **message) -> dict:
    """OpenAI's chat completion."""
    choice = {"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": finish}
    return {"id": "c", "object": "chat.completion", "created": 1, "model": model, "choices": [choice], "usage": USAGE}


def message_reply(blocks: list | None = None, stop: str = "end_turn", model: str = "claude-fake-1") -> dict:
    """Anthropic's message."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Answer: 4"}] if blocks is None else blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 6},
    }


def completion_reply(model: str = "fake-model") -> dict:
    """A legacy completion, echoed prompt scored, as vLLM answers a teacher's scoring."""
    choice = {
        "index": 0,
        "text": "x",
        "finish_reason": "length",
        "logprobs": {"tokens": ["a", "b", "c", "d"], "token_logprobs": [None, -0.5, -0.25, -1.0]},
    }
    return {
        "id": "cmpl",
        "object": "text_completion",
        "created": 1,
        "model": model,
        "choices": [choice],
        "usage": USAGE,
    }


def right_answer(body: dict) -> str:
    """'Answer: N' for the arithmetic problem a request asks."""
    found = PROBLEM.search(json.dumps(body.get("messages", [])).replace("\\n", " "))
    if found is None:
        return "Answer: 4"
    a, op, b = int(found[1]), found[2], int(found[3])
    return f"Answer: {a + b if op == '+' else a - b if op == '-' else a * b}"


def trickled(every_s: float, declared: int = 100_000):
    """A 200 that declares `declared` bytes and sends one every `every_s` seconds, until the client goes."""

    def write(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(declared))
        handler.end_headers()
        for _ in range(declared):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(every_s)

    return write


class Scripted:
    def __init__(self, answer=None, models=("fake-model", "claude-fake-1")):
        self.answer = answer or (lambda path, body, n: None)
        self.models, self.log, self.lock = list(models), [], threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Scripted:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if not self.path.rstrip("/").endswith("/models"):
                    return self.send(404, {}, {"error": {"message": "not found"}})
                listed = [
                    {"id": m, "object": "model", "created": 1, "owned_by": "x", "type": "model"} for m in api.models
                ]
                self.send(200, {}, {"object": "list", "data": listed, "has_more": False})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.loads(raw) if raw else {}
                with api.lock:
                    number = len(api.log)
                    api.log.append({"t": time.monotonic(), "path": self.path, "body": body})
                action = api.answer(self.path, body, number)
                if action is None:
                    action = {"body": self.correct(body)}
                try:
                    if callable(action):
                        return action(self)
                    self.send(action.get("status", 200), action.get("headers", {}), action.get("body", b""))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def correct(self, body: dict) -> dict:
                if self.path.endswith("/v1/messages"):
                    return message_reply([{"type": "text", "text": right_answer(body)}], model=body["model"])
                if self.path.endswith("/chat/completions"):
                    return chat_reply(right_answer(body), model=body["model"])
                return completion_reply(body["model"])

            def send(self, status: int, headers: dict, body) -> None:
                data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
                data = data.encode() if isinstance(data, str) else data
                self.send_response(status)
                headers = {"Content-Type": "application/json"} | headers
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
