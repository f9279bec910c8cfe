"""tests/fake_api.py's server with faults it does not inject, each named in `faults` as there:

    bad_gzip / bad_deflate   a 200 labelled Content-Encoding gzip (plain JSON: a proxy's label) / deflate
                             (bytes that are neither zlib-wrapped nor raw deflate)
    br                       a 200 compressed in an encoding no client here asks for (Accept-Encoding:
                             gzip, deflate), labelled br
    latin1                   a 200 whose JSON is encoded as Latin-1 (fake_api's `not_utf8` for any endpoint,
                             the legacy completions included)
    401_bad_gzip / 429_bad_gzip   an error status whose body is labelled gzip and is not (429: Retry-After: 1)
    a name in `SHAPES`       a 200 whose JSON is changed by that function: a reply of the wrong shape

`model_list_fault` does the same to every GET (the model list).
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable

from fake_api import FakeAPI

DELETE = object()


def at(path: list, value) -> Callable:
    """A change to a reply's JSON: the value at `path` (keys and indices) set to `value` (DELETE: removed)."""

    def change(reply):
        node = reply
        for key in path[:-1]:
            node = node[key]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return reply

    return change


FIRST_TOKEN = ["choices", 0, "logprobs", "content", 0]
SHAPES: dict[str, Callable] = {
    # OpenAI's chat completions
    "message_null": at(["choices", 0, "message"], None),
    "content_list": at(["choices", 0, "message", "content"], [{"type": "text", "text": "Answer: 3"}]),
    "finish_number": at(["choices", 0, "finish_reason"], 3),
    "reasoning_number": at(["choices", 0, "message", "reasoning_content"], 5),
    "arguments_object": at(
        ["choices", 0, "message", "tool_calls"],
        [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}],
    ),
    "logprobs_list": at(["choices", 0, "logprobs"], [-0.1, -0.2]),
    "token_number": at([*FIRST_TOKEN, "token"], 7),
    "logprob_text": at([*FIRST_TOKEN, "logprob"], "high"),
    "logprob_nan": at([*FIRST_TOKEN, "logprob"], float("nan")),
    "logprob_positive": at([*FIRST_TOKEN, "logprob"], 5.0),
    "alternative_text": at([*FIRST_TOKEN, "top_logprobs", 0], "Answer:"),
    "bytes_not_bytes": at([*FIRST_TOKEN, "bytes"], [300, -1]),
    # Anthropic's messages
    "block_no_type": at(["content", 0], {"text": "Answer: 3"}),
    "block_null": at(["content", 0], None),
    "text_number": at(["content", 0, "text"], 5),
    "tool_use_no_input": at(["content", 0], {"type": "tool_use", "id": "toolu_1", "name": "calculator"}),
    "thinking_unsigned": lambda reply: reply | {"content": [{"type": "thinking", "thinking": "7"}, *reply["content"]]},
    "stop_unknown": at(["stop_reason"], "a_reason_of_the_future"),
    # either
    "reply_list": lambda reply: [reply],
}


def encoded(fault: str | None, status: int, data: bytes, headers: dict) -> tuple[int, bytes, dict]:
    """The answer as `fault` spoils it (the module docstring)."""
    if fault == "bad_gzip":
        return status, data, headers | {"content-encoding": "gzip"}
    if fault == "bad_deflate":  # stored-block lengths that do not match: no decoder takes it, wrapped or raw
        return status, b"\x00\xff\xffnot deflate", headers | {"content-encoding": "deflate"}
    if fault == "br":  # compressed, though not as br: no client here could decode it either way
        return status, zlib.compress(data)[2:-4], headers | {"content-encoding": "br"}
    if fault == "latin1":  # "à" as one Latin-1 byte: no UTF-8 decoder takes it
        return status, json.dumps(json.loads(data) | {"note": "voilà"}, ensure_ascii=False).encode("latin-1"), headers
    if fault in ("401_bad_gzip", "429_bad_gzip"):
        body = json.dumps({"error": {"message": "the status says it all", "type": "test"}}).encode()
        retry_after = {"retry-after": "1"} if fault.startswith("429") else {}
        return int(fault[:3]), body, headers | {"content-encoding": "gzip"} | retry_after
    return status, data, headers


class OddAPI(FakeAPI):
    def __init__(self, **options):
        self.current = threading.local()  # the fault of the request each handler thread is answering
        self.shapes = dict(SHAPES)
        self.model_list_fault: str | None = None
        super().__init__(**options)

    def next_fault(self) -> str | None:
        self.current.fault = super().next_fault()
        return self.current.fault

    def _handler(self):
        api, answer = self, super()._handler()

        class Handler(answer):
            def _raw(self, status: int, data: bytes, headers: dict | None = None, content_type="application/json"):
                fault = api.model_list_fault if self.command == "GET" else getattr(api.current, "fault", None)
                if status == 200 and fault in api.shapes:
                    data = json.dumps(api.shapes[fault](json.loads(data))).encode()
                status, data, headers = encoded(fault, status, data, headers or {})
                super()._raw(status, data, headers, content_type)

        return Handler
