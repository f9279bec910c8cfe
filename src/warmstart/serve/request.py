"""Reading an OpenAI chat completion request for `warmstart serve`: JSON body -> ChatRequest, or an ApiError.

Validation is strict on purpose: a parameter the server cannot honour is a 400 that names it, never a
silent fallback (a client that asks for `response_format` and gets free text would not notice). The
checks (`check_params`, `flag`, `integer`, ...) are shared with the legacy completions endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from ..lm.generation import GREEDY_BELOW_TEMPERATURE
from ..types import Message, Sampling, ToolCall, text_of_parts

MAX_TOP_LOGPROBS = 20  # OpenAI's limit
# Parameters accepted without effect, each for a reason: `user` only labels the caller; a zero penalty is
# no penalty; `parallel_tool_calls: true` is what the server does anyway (every call in a turn is returned).
HARMLESS = {"user": None, "frequency_penalty": 0, "presence_penalty": 0, "parallel_tool_calls": True}
KNOWN = {
    *"model messages tools tool_choice n temperature top_p max_tokens max_completion_tokens stop seed".split(),
    *"logprobs top_logprobs stream stream_options return_token_ids".split(),
    *HARMLESS,
}
MESSAGE_KEYS = {"role", "content", "tool_calls", "tool_call_id", "reasoning_content"}


class ApiError(Exception):
    """A request the server refuses, with the HTTP status and OpenAI's error body."""

    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None, allow: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.allow = allow  # a 405's `Allow` header: the methods the path is served with

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param)


@dataclass(frozen=True)
class ChatRequest:
    messages: list[Message]
    tools: list[dict] | None
    n: int
    sampling: Sampling
    stop: list[str]
    seed: int | None
    top_logprobs: int | None  # None: no logprobs; else alternatives per token (0..20)
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk carries the usage
    max_tokens_given: bool = True  # False: sampling.max_new_tokens is the default, to be fitted to the context
    model: str = ""  # the name asked: the base model's or a loaded adapter's
    return_token_ids: bool = False  # vLLM's extension: token ids out, the end-of-turn token's log-prob listed


def without_nulls(body: dict) -> dict:
    """The body without its keys whose value is null: OpenAI and vLLM take an explicit null as "not given",
    and clients and SDK wrappers send options left unset so (`"response_format": null`)."""
    return {key: value for key, value in body.items() if value is not None}


def check_params(body: dict, known: set[str], harmless: dict, models: Sequence[str]) -> None:
    """Refuse parameters the server does not know, harmless ones with an effect, and a model it does not serve
    (`models`: the base model's name first, then the adapters loaded)."""
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, f"unsupported parameter(s): {', '.join(unknown)}", param=unknown[0])
    for key, allowed in harmless.items():
        if allowed is not None and body.get(key) not in (None, allowed):
            raise bad(key, f"only {allowed!r} is supported")
    if not isinstance(body.get("model"), str):
        raise bad("model", "a model name (string) is required")
    if body["model"] not in models:
        raise ApiError(
            404,
            f"the model {body['model']!r} does not exist; this server serves {', '.join(map(repr, models))}",
            code="model_not_found",
            param="model",
        )


def parse_chat_request(body: dict, models: Sequence[str], max_batch: int) -> ChatRequest:
    body = without_nulls(body)
    check_params(body, KNOWN, HARMLESS, models)
    if body.get("tool_choice") not in (None, "auto"):  # null, as some clients send it: the default
        raise bad("tool_choice", "only 'auto' is supported")
    stream = flag(body, "stream")
    logprobs = flag(body, "logprobs")
    return ChatRequest(
        messages=parse_messages(body.get("messages")),
        tools=_tools(body.get("tools")),
        n=integer(body, "n", 1, 1, max_batch),
        sampling=_sampling(body),
        max_tokens_given=body.get("max_tokens") is not None or body.get("max_completion_tokens") is not None,
        stop=stop_strings(body.get("stop")),
        seed=integer(body, "seed", None, -(2**63), 2**63 - 1),
        top_logprobs=_top_logprobs(body, logprobs),
        stream=stream,
        include_usage=_include_usage(body.get("stream_options"), stream),
        model=body["model"],
        return_token_ids=flag(body, "return_token_ids"),
    )


def temperature_top_p(body: dict) -> dict:
    """Only the settings the client gave; the rest keep Sampling's defaults (OpenAI's: 1.0 and 1.0)."""
    given: dict = {}
    if body.get("temperature") is not None:
        temperature = number(body, "temperature", 0.0, 2.0)
        given["temperature"] = 0.0 if temperature < GREEDY_BELOW_TEMPERATURE else temperature
    if body.get("top_p") is not None:
        given["top_p"] = number(body, "top_p", 0.0, 1.0)
        if given["top_p"] == 0:  # transformers needs top_p > 0; greedy is temperature 0
            raise bad("top_p", "must be > 0 (for greedy decoding use temperature 0)")
    return given


def _sampling(body: dict) -> Sampling:
    given = temperature_top_p(body)
    limits = {k: integer(body, k, None, 1, 2**31) for k in ("max_tokens", "max_completion_tokens")}
    if None not in limits.values() and limits["max_tokens"] != limits["max_completion_tokens"]:
        raise bad("max_completion_tokens", "differs from max_tokens; give one of them")
    limit = limits["max_completion_tokens"] or limits["max_tokens"]
    if limit is not None:
        given["max_new_tokens"] = limit
    return Sampling(**given)


def flag(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(key, "must be true or false")
    return value


def number(body: dict, key: str, low: float, high: float) -> float:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise bad(key, f"must be a number from {low} to {high}, got {value!r}")
    return float(value)


def integer(body: dict, key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(key, f"must be an integer from {low} to {high}, got {value!r}")
    return value


def _top_logprobs(body: dict, logprobs: bool) -> int | None:
    top = integer(body, "top_logprobs", None, 0, MAX_TOP_LOGPROBS)
    if top is not None and not logprobs:
        raise bad("top_logprobs", "needs logprobs: true")  # as OpenAI answers
    return (top or 0) if logprobs else None


def stop_strings(value) -> list[str]:
    stops = [value] if isinstance(value, str) else value or []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad("stop", "must be a non-empty string or a list of non-empty strings")
    return stops


def _include_usage(value, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise bad("stream_options", "only allowed with stream: true")
    if (
        not isinstance(value, dict)
        or set(value) - {"include_usage"}
        or not isinstance(value.get("include_usage", False), bool)
    ):
        raise bad("stream_options", "only {'include_usage': true|false} is supported")
    return value.get("include_usage", False)


def _tools(value) -> list[dict] | None:
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise bad("tools", "must be a list")
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(function, dict)
            or tool.get("type") != "function"
            or not isinstance(function.get("name"), str)
        ):
            raise bad(f"tools[{i}]", "must be {'type': 'function', 'function': {'name': ..., ...}}")
    return value


def parse_messages(value) -> list[Message]:
    """OpenAI messages as warmstart Messages. `developer` is OpenAI's new name for `system`."""
    if not isinstance(value, list) or not value:
        raise bad("messages", "must be a non-empty list")
    return [_message(m, f"messages[{i}]") for i, m in enumerate(value)]


def _message(m, where: str) -> Message:
    if not isinstance(m, dict):
        raise bad(where, "must be an object")
    unknown = sorted(set(m) - MESSAGE_KEYS)
    if unknown:
        raise bad(where, f"unsupported field(s): {', '.join(unknown)}")
    role = "system" if m.get("role") == "developer" else m.get("role")
    if role not in ("system", "user", "assistant", "tool"):
        raise bad(where, f"unknown role {m.get('role')!r}")
    if role == "tool" and not isinstance(m.get("tool_call_id"), str):
        raise bad(where, "a tool message needs its tool_call_id")
    try:
        return Message(
            role=role,
            content=_text(m.get("content"), where),
            reasoning=m.get("reasoning_content") if role == "assistant" else None,
            tool_calls=[ToolCall.model_validate(c) for c in m["tool_calls"]] if m.get("tool_calls") else None,
            tool_call_id=m.get("tool_call_id"),
        )
    except (ValidationError, TypeError) as exc:
        raise bad(where, _first_problem(exc)) from None


def _text(content, where: str) -> str | None:
    """A string, or OpenAI's list of content parts, of which only text parts can reach a text model: their
    text as training data has it (`types.text_of_parts`, one part per line), so that a model is served the
    prompt it was trained on (joined without a separator here, "Solve:" and "2+2" had been "Solve:2+2")."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        try:
            return text_of_parts(content)
        except ValueError:
            pass
    raise bad(f"{where}.content", "must be a string or a list of text parts (images and audio are not supported)")


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
    return str(exc)
