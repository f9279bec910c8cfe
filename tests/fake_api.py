"""A loopback HTTP server speaking just enough of the OpenAI and Anthropic APIs to inject faults.

Real servers do not fail on demand; this one does, request by request, from a queue of faults:

    429          rate limited, Retry-After: 1
    rate_limit_openai / rate_limit_azure   429s as OpenAI (requests per minute) and Azure OpenAI (token
                 rate) word them, Retry-After: 1; their messages link to billing and quota pages
    quota        429 whose body says the spend quota is exhausted (OpenAI's `insufficient_quota`)
    500 / 529    server error / Anthropic-style "overloaded"
    401          bad key
    late_401     bad key, said after `slow_s` seconds (the other requests of a call have finished by then)
    hold         answers only once `released` is set (a client interrupted mid-request)
    reset        headers sent, then the connection is dropped mid-body
    malformed    200 with a body that is not JSON (content type application/json)
    html / event_stream   200 with an HTML error page (text/html) / the reply as server-sent events
    slow         answers after `slow_s` seconds (longer than the client's timeout)
    length / refusal / filter   a 200 whose reply was cut, refused or content-filtered
    garbage / lie  (as a judge) a reply with no verdict line / the wrong verdict

and replies no real server should send, which a client must survive:

    retry_after_huge   429 with Retry-After: 999999999 (seconds)
    surrogates         a 200 whose text holds a lone surrogate (valid JSON, not valid Unicode)
    negative_usage     a 200 billing -1,000,000,000 prompt tokens
    huge_usage / huge_output_usage   a 200 billing 10**15 prompt tokens / 10**9 completion tokens
    no_usage / bad_usage   a 200 with no usage / with token counts that are strings
    no_choices         a 200 with an empty `choices` list (and usage)
    empty              a 200 whose message has no content and no tool call
    thinking_cut       a 200 cut by the token limit while thinking: no content, `reasoning_content` only,
                       finish_reason "length" (as vLLM and SGLang with a reasoning parser send it)
    huge               a 200 whose text is `huge_bytes` long whatever max_tokens asked
    other_model        a 200 that says another model answered
    no_finish          a 200 with no finish_reason (OpenAI) / a null stop_reason (Anthropic)
    server_tool        (Anthropic) a 200 whose content starts with a server_tool_use block
    error_200          a 200 whose body is an error object (as some proxies and aggregators pass on an upstream failure)
    usage_list         a 200 whose usage is a list (OpenAI) / a string (Anthropic), not an object
    choices_object     (OpenAI) a 200 whose `choices` is an object, not a list
    content_text       (Anthropic) a 200 whose `content` is a string, not a list of blocks
    stop_number        (Anthropic) a 200 whose `stop_reason` is a number
    huge_reasoning     a 200 whose reasoning (`reasoning_content` / a thinking block) is 3 MB long
    too_long           400: the prompt is longer than the model's context (OpenAI's, or Anthropic's, words)
    sibling_model      a 200 that says a sibling of the model answered (`fake-model-mini` for `fake-model`)
    html_as_json       a 200 with an HTML page labelled application/json (a captive portal, a proxy)
    not_utf8           a 200 whose JSON reply is encoded as Latin-1, not UTF-8 (content type application/json)
    endless            a 200 whose body never ends (chunked, written until the client goes away)
    oversized          a 200 declaring a Content-Length of 10 GiB (its body trickles, never whole)
    gzip_bomb          a 200 of ~100 KB gzip that expands to `BOMB_BYTES`

and replies as a server may encode them: `gzip`, `deflate` (raw deflate, as some servers send it).

Beside faults, a server can behave like a real teacher (`Teacher`): answer each problem right with a
known probability (`pass_rate(problem)`, drawn per request from the request's seed, so sample i of a
task gets the same verdict whatever else is asked), write replies of realistic, varying length (a chain
of 30 to 400 words before the answer; tokens counted as bytes / 4), put that chain in `<think>` tags,
and leave out the log-probs it was asked for.

`chaos` (a seeded random.Random) draws a fault for each request instead of the queue: each of
`CHAOS_FAULTS` with probability `chaos_rate`. `billed` logs the usage of every reply delivered whole with
counts a provider could bill (what a client's ledger should add up to; a `slow` reply, which the client
has stopped waiting for when it comes, an `event_stream` or `not_utf8` one, whose counts it cannot read, and the
`huge_*usage` ones, which no provider bills, are left out). `models_fault` ("html", or "html_as_json": labelled
application/json) spoils the model list, which is otherwise served whole; `models_faults` queues one fault per model-list request ("429",
"503", "529", or "trickle": a byte every 0.2 s, never the whole body; "endless", "oversized", "gzip_bomb" as above,
for any GET). `held`, a cleared threading.Event, holds every reply until it is
set: a client caught mid-request for as long as a test needs.

With no fault queued it answers correctly: for "What is A+B? ..." it replies "Answer: <A+B>". Every
request is logged (arrival time, tokens, outcome), so tests assert on what the server saw. The legacy
`/v1/completions` endpoint answers as OpenAI's hosted models do when asked to echo a token-id prompt with
logprobs: a completion with no logprobs at all (a server that cannot score a prompt).
"""

from __future__ import annotations

import functools
import gzip
import json
import random
import re
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

HTML_PAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
BOMB_BYTES = 100 * 2**20
HUGE_REASONING_BYTES = 3_000_000  # `huge_reasoning`: far more than any test's max_tokens allows
PROBLEM_RE = re.compile(r"What is (-?\d+)([+\-*])(-?\d+)\?")
MODELS = ["fake-model", "claude-fake-1"]
CHAOS_FAULTS = [
    "429", "500", "529", "reset", "malformed", "slow", "length", "refusal", "filter", "retry_after_huge",
    "surrogates", "negative_usage", "no_usage", "bad_usage", "no_choices", "empty", "huge", "other_model",
    "html", "event_stream", "huge_usage", "huge_output_usage", "no_finish",
]  # fmt: skip
# Replies left out of `billed`: never seen by the client (slow), counts in a body it cannot read (event_stream,
# not_utf8), counts no provider bills (huge_*).
NOT_BILLED = ("slow", "event_stream", "huge_usage", "huge_output_usage", "not_utf8")
RATE_LIMITS = {
    "rate_limit_openai": {
        "error": {
            "message": "Rate limit reached for fake-model in organization org-abc on requests per min (RPM): "
            "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
            "https://platform.openai.com/account/rate-limits to learn more. You can increase your rate limit by "
            "adding a payment method to your account at https://platform.openai.com/account/billing.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    },
    "rate_limit_azure": {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-02-01 "
            "have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. "
            "Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default "
            "rate limit.",
        }
    },
}
ERROR_BODIES = RATE_LIMITS | {
    "quota": {
        "error": {
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        }
    },
    "529": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
}


class Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 refuses connections under 32 concurrent clients
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # dropped connections are what some faults are for: no traceback on the test's stderr


@dataclass
class Teacher:
    """How a fault-free reply is written (see the module docstring)."""

    pass_rate: Callable[[str], float] | None = None  # problem text -> probability of the right answer
    verbose: bool = False  # a chain of 30-400 words before the answer; usage from the text's size
    think_tags: bool = False  # the chain inside <think>...</think>, as reasoning models without a parser send it
    logprobs: bool = True  # False: none, even when asked

    def draw(self, problem: str, body: dict) -> random.Random:
        return random.Random(f"{problem}/{body.get('seed')}/{json.dumps(body.get('messages'))[-64:]}")

    def write(self, body: dict, answer: str) -> tuple[str, int, int]:
        """The reply's text, prompt tokens and completion tokens."""
        problem = str(next((m.get("content") for m in body.get("messages", []) if m.get("role") == "user"), ""))
        rng = self.draw(problem, body)
        if self.pass_rate is not None and answer.startswith("Answer: ") and rng.random() >= self.pass_rate(problem):
            answer = f"Answer: {int(answer.removeprefix('Answer: ')) + 1}"
        chain = " ".join(["step"] * rng.randint(30, 400)) if self.verbose or self.think_tags else ""
        text = (f"<think>{chain}</think>\n{answer}" if self.think_tags else f"{chain}\n{answer}") if chain else answer
        if not self.verbose:
            return text, 20, 6
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit and len(text) // 4 > limit:  # a real server stops at max_tokens (its finish_reason aside)
            text = text[: limit * 4]
        return text, len(json.dumps(body.get("messages"))) // 4, max(1, len(text) // 4)


class FakeAPI:
    def __init__(
        self,
        slow_s: float = 3.0,
        delay_s: float = 0.0,
        huge_bytes: int = 2_000_000,
        chaos=None,
        chaos_rate=0.0,
        teacher: Teacher | None = None,
    ):
        self.teacher = teacher or Teacher()
        self.faults: list[str] = []
        self.log: list[dict] = []
        self.billed: list[dict] = []  # {"prompt", "completion", "model"} of each reply a provider would bill
        self.lock = threading.Lock()
        self.slow_s, self.delay_s, self.huge_bytes = slow_s, delay_s, huge_bytes
        self.chaos, self.chaos_rate = chaos, chaos_rate
        self.released = threading.Event()  # lets go of the requests the `hold` fault keeps
        self.held: threading.Event | None = None  # where set to a cleared Event: replies wait until it is set
        self.models_fault: str | None = None  # "html" / "html_as_json": the model list is an HTML page
        self.models_faults: list[str] = []  # one per model-list request: "429" / "503" / "529", "trickle"
        self.server = Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeAPI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()  # no handler thread left waiting
        self.server.shutdown()
        self.server.server_close()

    def next_fault(self) -> str | None:
        with self.lock:
            if self.chaos is not None:
                return self.chaos.choice(CHAOS_FAULTS) if self.chaos.random() < self.chaos_rate else None
            return self.faults.pop(0) if self.faults else None

    def bill(self, reply: dict) -> None:
        """Log a delivered reply's usage if a provider could bill it (whole, non-negative counts)."""
        usage = reply.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        counts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")]
        counts = [c for c in counts if c is not None]
        if len(counts) == 2 and all(isinstance(c, int) and c >= 0 for c in counts):
            with self.lock:
                self.billed.append({"prompt": counts[0], "completion": counts[1], "model": reply.get("model")})

    def record(self, entry: dict) -> None:
        with self.lock:
            self.log.append(entry)

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40-ms delayed-ACK stall

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                with api.lock:
                    queued = api.models_faults.pop(0) if api.models_faults else None
                if self.path.rstrip("/").endswith("/models") and queued in ("429", "503", "529"):
                    body = {"error": {"message": f"fault {queued}", "type": "test"}}
                    return self._json(int(queued), body)
                if self.path.rstrip("/").endswith("/models") and queued == "trickle":
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", "100")
                    self.end_headers()
                    for _ in range(20):  # a byte every 0.2 s: every read is quick, the whole never comes
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.2)
                    return None
                if queued in BODY_FAULTS:  # any GET: the model list, a rollout server's weight version
                    return self._body_fault(queued)
                if self.path.rstrip("/").endswith("/models") and api.models_fault == "html":
                    return self._raw(200, HTML_PAGE, content_type="text/html")
                if self.path.rstrip("/").endswith("/models") and api.models_fault == "html_as_json":
                    return self._raw(200, HTML_PAGE)
                if self.path.rstrip("/").endswith("/models"):
                    data = [
                        {
                            "id": m,
                            "object": "model",
                            "created": 0,
                            "owned_by": "test",
                            "type": "model",
                            "display_name": m,
                            "created_at": "2025-01-01T00:00:00Z",
                        }
                        for m in MODELS
                    ]
                    return self._json(
                        200,
                        {
                            "object": "list",
                            "data": data,
                            "has_more": False,
                            "first_id": MODELS[0],
                            "last_id": MODELS[-1],
                        },
                    )
                self._json(404, {"error": {"message": "not found"}})

            def do_POST(self):
                arrived = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                fault = api.next_fault()
                anthropic = self.path.endswith("/messages")
                legacy = self.path.endswith("/completions") and not self.path.endswith("/chat/completions")
                prompt_tokens, completion_tokens = 20, 6
                api.record({"t": arrived, "fault": fault, "tokens": prompt_tokens + completion_tokens, "body": body})
                if api.held is not None:  # a client held mid-request for as long as a test needs
                    api.held.wait(timeout=120)
                if api.delay_s:
                    time.sleep(api.delay_s)
                if fault == "hold":  # until the test lets it go (`released`): a request the client is stopped in
                    api.released.wait(timeout=120)
                if fault in ("slow", "late_401"):
                    time.sleep(api.slow_s)
                if fault == "late_401":
                    return self._error("401")
                if fault == "too_long":
                    return self._json(400, TOO_LONG_BODIES["anthropic" if anthropic else "openai"])
                if fault == "error_200":
                    return self._json(200, ERROR_200)
                if fault in ("429", "quota", "500", "529", "401", "retry_after_huge", *RATE_LIMITS):
                    return self._error(fault)
                if fault == "reset":
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"id": "x", "choi')
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if fault == "malformed":
                    return self._raw(200, b"{this is not json")
                if fault in BODY_FAULTS:
                    return self._body_fault(fault)
                if fault == "html":
                    return self._raw(200, HTML_PAGE, content_type="text/html")
                if fault == "html_as_json":
                    return self._raw(200, HTML_PAGE)
                text = answer_text(body, fault)
                if not text.startswith(("The arithmetic", "Looks fine")):  # a judge's verdict is not a teacher's
                    text, prompt_tokens, completion_tokens = api.teacher.write(body, text)
                if fault == "huge":
                    text = (text + " ") * (api.huge_bytes // (len(text) + 1))
                if fault == "surrogates":
                    text = text + " \ud800"
                if anthropic:
                    reply = odd_anthropic_reply(
                        anthropic_reply(body, text, fault, prompt_tokens, completion_tokens), fault
                    )
                elif legacy:
                    reply = legacy_reply(body, text, prompt_tokens, completion_tokens)
                    reply["model"] = "another-model" if fault == "other_model" else reply["model"]
                else:
                    reply = openai_reply(body, text, fault, prompt_tokens, completion_tokens, api.teacher.logprobs)
                    reply = odd_openai_reply(reply, fault)
                if fault not in NOT_BILLED:
                    api.bill(reply)
                if fault == "event_stream":  # what a server that streams whatever it is asked sends
                    events = b"data: " + json.dumps(reply).encode() + b"\n\ndata: [DONE]\n\n"
                    return self._raw(200, events, content_type="text/event-stream")
                if fault == "not_utf8":  # "à" as one Latin-1 byte: no UTF-8 decoder takes it
                    return self._raw(200, json.dumps(not_utf8_reply(reply), ensure_ascii=False).encode("latin-1"))
                if fault in ("gzip", "deflate"):
                    return self._raw(200, ENCODE[fault](json.dumps(reply).encode()), {"content-encoding": fault})
                self._json(200, reply)

            def _body_fault(self, fault: str):
                """A 200 whose body is too large for any client to hold (`endless`, `oversized`, `gzip_bomb`)."""
                self.send_response(200)
                self.send_header("content-type", "application/json")
                if fault == "gzip_bomb":
                    bomb = gzip_bomb()
                    self.send_header("content-encoding", "gzip")
                    self.send_header("content-length", str(len(bomb)))
                    self.end_headers()
                    return self.wfile.write(bomb)
                self.send_header(
                    *(("content-length", str(10 * 2**30)) if fault == "oversized" else ("transfer-encoding", "chunked"))
                )
                self.end_headers()
                chunk = b'{"pad": "' + b"a" * 65536
                try:
                    for _ in range(1_000_000):  # ~64 GB: more than any test would wait for
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if fault == "endless" else chunk[:1])
                        if fault == "oversized":
                            time.sleep(0.1)
                except OSError:  # the client went away
                    pass
                self.close_connection = True

            def _error(self, fault: str):
                status = {"500": 500, "529": 529, "401": 401}.get(fault, 429)
                message = ERROR_BODIES.get(fault, {"error": {"message": f"fault {fault}", "type": "test"}})
                retry_after = {"retry_after_huge": "999999999", "429": "1"} | dict.fromkeys(RATE_LIMITS, "1")
                retry_after = retry_after.get(fault)
                self._json(status, message, {"retry-after": retry_after} if retry_after else {})

            def _json(self, status: int, obj: dict, headers: dict | None = None):
                self._raw(status, json.dumps(obj).encode(), headers)

            def _raw(self, status: int, data: bytes, headers: dict | None = None, content_type="application/json"):
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler


BODY_FAULTS = ("endless", "oversized", "gzip_bomb")
TOO_LONG_BODIES = {
    "openai": {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens "
            "(8968 in the messages, 32 in the completion). Please reduce the length of the messages or completion.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
    "anthropic": {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"},
    },
}
ERROR_200 = {"error": {"message": "upstream provider returned 502", "code": 502}}
# A server's own compression; `deflate` raw, as some servers send it (HTTP's is zlib-wrapped).
ENCODE = {"gzip": gzip.compress, "deflate": lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)}


@functools.cache
def gzip_bomb() -> bytes:
    return gzip.compress(b'{"pad": "' + b" " * BOMB_BYTES, compresslevel=9)


def answer_text(body: dict, fault: str | None = None) -> str:
    if any("strict grader" in str(m.get("content")) for m in body.get("messages", [])):
        return judge_text(body, fault)
    first_user = next((m for m in body.get("messages", []) if m["role"] == "user"), {})
    content = first_user.get("content", "")
    if isinstance(content, list):
        content = " ".join(block.get("text", "") for block in content if isinstance(block, dict))
    match = PROBLEM_RE.search(content)
    if not match:
        return "I do not know."
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    return f"Answer: {a + b if op == '+' else a - b if op == '-' else a * b}"


def judge_text(body: dict, fault: str | None) -> str:
    """A grader that checks the candidate's `Answer:` against the problem (or misbehaves on demand)."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    problem = PROBLEM_RE.search(user)
    given = re.findall(r"Answer: (-?\d+)", user)
    a, op, b = int(problem.group(1)), problem.group(2), int(problem.group(3))
    right = bool(given) and int(given[-1]) == (a + b if op == "+" else a - b if op == "-" else a * b)
    if fault == "garbage":
        return "Looks fine to me."
    verdict = "PASS" if right != (fault == "lie") else "FAIL"
    return f"The arithmetic {'checks out' if right else 'is wrong'}.\nVERDICT: {verdict}"


def openai_reply(
    body: dict, text: str, fault: str | None, prompt_tokens: int, completion_tokens: int, logprobs: bool = True
) -> dict:
    finish = {"length": "length", "filter": "content_filter"}.get(fault or "", "stop")
    message = {
        "role": "assistant",
        "content": text if fault != "refusal" else None,
        "refusal": "I can't help with that." if fault == "refusal" else None,
    }
    choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    if body.get("logprobs") and logprobs:
        k = body.get("top_logprobs", 0)
        choice["logprobs"] = {
            "content": [
                {
                    "token": tok,
                    "logprob": -0.1,
                    "bytes": list(tok.encode()),
                    "top_logprobs": [
                        {"token": tok, "logprob": -0.1 * (i + 1), "bytes": list(tok.encode())} for i in range(k)
                    ],
                }
                for tok in text.split(" ")
            ]
        }
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def odd_openai_reply(reply: dict, fault: str | None) -> dict:
    """A chat completion as a misbehaving server would send it (see the module docstring)."""
    if fault == "negative_usage":
        reply["usage"]["prompt_tokens"] = -1_000_000_000
    elif fault == "no_usage":
        del reply["usage"]
    elif fault == "bad_usage":
        reply["usage"] = {"prompt_tokens": "twenty", "completion_tokens": "six", "total_tokens": "many"}
    elif fault == "no_choices":
        reply["choices"] = []
    elif fault == "empty":
        reply["choices"][0]["message"]["content"] = None
    elif fault == "thinking_cut":
        reply["choices"][0]["message"] |= {"content": None, "reasoning_content": "First, the ones column"}
        reply["choices"][0]["finish_reason"] = "length"
    elif fault == "other_model":
        reply["model"] = "other-model"
    elif fault == "huge_usage":
        reply["usage"]["prompt_tokens"] = 10**15
    elif fault == "huge_output_usage":
        reply["usage"]["completion_tokens"] = 10**9
    elif fault == "no_finish":
        del reply["choices"][0]["finish_reason"]
    elif fault == "usage_list":
        reply["usage"] = [20, 6]
    elif fault == "choices_object":
        reply["choices"] = {"first": reply["choices"][0]}
    elif fault == "huge_reasoning":
        reply["choices"][0]["message"]["reasoning_content"] = "x" * HUGE_REASONING_BYTES
    elif fault == "sibling_model":
        reply["model"] = f"{reply['model']}-mini"
    return reply


def odd_anthropic_reply(reply: dict, fault: str | None) -> dict:
    """A message as a misbehaving (or, for `server_tool`, a server-tool-using) API would send it."""
    if fault == "huge_usage":
        reply["usage"]["input_tokens"] = 10**15
    elif fault == "huge_output_usage":
        reply["usage"]["output_tokens"] = 10**9
    elif fault == "no_finish":
        reply["stop_reason"] = None
    elif fault == "server_tool":
        search = {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {"query": "sum"}}
        reply["content"].insert(0, search)
    elif fault == "usage_list":
        reply["usage"] = "20 in, 6 out"
    elif fault == "content_text":
        reply["content"] = reply["content"][0]["text"]
    elif fault == "stop_number":
        reply["stop_reason"] = 3
    elif fault == "huge_reasoning":
        thinking = {"type": "thinking", "thinking": "x" * HUGE_REASONING_BYTES, "signature": "c2ln"}
        reply["content"].insert(0, thinking)
    elif fault == "sibling_model":
        reply["model"] = f"{reply['model']}-mini"
    return reply


def legacy_reply(body: dict, text: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """A `text_completion` with `logprobs: null`, whatever the request asked for."""
    return {
        "id": "cmpl-test",
        "object": "text_completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def anthropic_reply(body: dict, text: str, fault: str | None, prompt_tokens: int, completion_tokens: int) -> dict:
    stop = {"length": "max_tokens", "refusal": "refusal"}.get(fault or "", "end_turn")
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def not_utf8_reply(reply: dict) -> dict:
    """`reply` with an "à" in its text (OpenAI's message or Anthropic's first block), for the `not_utf8` fault."""
    if "choices" in reply:
        reply["choices"][0]["message"]["content"] = f"Voilà: {reply['choices'][0]['message']['content']}"
    else:
        reply["content"][0]["text"] = f"Voilà: {reply['content'][0]['text']}"
    return reply
