"""`openai:MODEL[@BASE_URL]`: any OpenAI-compatible chat endpoint through the official `openai` SDK.

OpenAI itself, vLLM, SGLang, llama.cpp's server, `warmstart serve`. The key comes from the environment
variable `api.key_env` (default OPENAI_API_KEY); a loopback base URL may go without one. Before any
request is paid for, the endpoint's model list is checked: an unreachable URL, a rejected key or a
model the server does not serve is one clear error.

The SDK's own retries are off (`max_retries=0`): `api.py` retries with the project's policy, which
stops on a spend-limit 429 the SDK would retry. OpenAI's reasoning models (o1, o3, o4-mini, gpt-5) are
sent `max_completion_tokens` and no temperature or top_p, which they refuse (`sampling_fields`). Reasoning
is read from `reasoning_content` or `reasoning` where a server returns it (vLLM, SGLang, DeepSeek); it is
not sent back on later turns, since the chat API has no field for it.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessage, ChatCompletionTokenLogprob
from openai.types.chat.chat_completion import Choice, ChoiceLogprobs
from openai.types.chat.chat_completion_token_logprob import TopLogprob

from ..config import PolicySpec
from ..types import Message, Sampling, ToolCall, ToolFunction, Usage
from .backend import (
    Capabilities,
    Reply,
    ReplyShape,
    RequestError,
    api_key,
    invalid_reply,
    logprob_problem,
    make_client,
    read_reply,
    read_usage,
    refuse_error_body,
    request_error,
    require_kind,
    require_parsed,
    require_served,
    sdk_tls_context,
    served_models,
    whole_count,
)
from .bounded_http import async_http_client, http_client
from .limits import Failure

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 and their variants) refuse `max_tokens` (400
# unsupported_parameter: "use max_completion_tokens") and any temperature or top_p but the default, 1. Named
# as served, whatever the host (Azure's deployments of them too); an id with a vendor prefix ("openai/o3") is
# an aggregator's, which takes the chat API's usual fields and maps them itself.
REASONING_MODEL = re.compile(r"(o\d+|gpt-5)([-.].*)?")
OPENAI_HOST = "api.openai.com"  # takes `max_completion_tokens` for every model: `max_tokens` is deprecated there


def check_endpoint(base_url: str, key: str, model: str, where: str) -> None:
    """Fail before spending anything when the server is unreachable, the key is bad or the model unknown."""
    client = make_client(
        lambda: openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, http_client=http_client(openai, 15.0)),
        base_url,
        where,
    )
    served = served_models(client, openai, base_url, where)
    require_served(model, served, lambda wanted, name: wanted == name, base_url, where)


def to_openai(messages: list[Message]) -> list[dict]:
    out = []
    for m in messages:
        d: dict = {"role": m.role, "content": m.content or ""}
        if m.tool_calls:
            d["tool_calls"] = [c.model_dump() for c in m.tool_calls]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def usage_from_openai(usage, model: str | None) -> Usage | None:
    """The reply's token counts, or None where the server sent none (or not as whole numbers). Counts are
    taken as sent, negative ones included: `api.reply_problem` refuses a reply whose counts are impossible."""
    if usage is None:
        return None
    tokens_in, tokens_out = whole_count(usage.prompt_tokens), whole_count(usage.completion_tokens)
    if tokens_in is None or tokens_out is None:
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    cached = whole_count(getattr(details, "cached_tokens", None)) or 0
    return Usage(tokens_in=tokens_in, tokens_out=tokens_out, tokens_cached=cached, model=model)


def served_model(response) -> str | None:
    """The model the server says answered, where it names one."""
    model = getattr(response, "model", None)
    return model if isinstance(model, str) else None


def choices_of(response) -> list:
    choices = response.choices or []
    require_kind(choices, (list,), "choices", "a list")
    return choices


def from_openai(choice, usage: Usage) -> Reply:
    """The Reply of a chat completion's choice. A choice with no finish_reason (which the API always sends)
    finishes "unknown", as Anthropic's reply with no stop_reason does: never mistaken for a clean stop, so
    it is not cached as a success. A part that is not what the API says it is (a null message, a finish
    reason that is a number) is `ReplyShape`, named: the SDK builds its types from the body unchecked."""
    require_kind(choice, (Choice,), "choices[0]", "an object")
    message = choice.message
    require_kind(message, (ChatCompletionMessage,), "choices[0].message", "an object")
    for field in ("content", "refusal"):
        require_kind(getattr(message, field), TEXT, f"choices[0].message.{field}", "text")
    require_kind(choice.finish_reason, TEXT, "choices[0].finish_reason", "text")
    finish = "refusal" if message.refusal else (choice.finish_reason or "unknown")
    return Reply(
        message=Message(
            role="assistant",
            content=message.content or message.refusal or "",
            reasoning=reasoning_of(message),
            tool_calls=tool_calls_of(message),
        ),
        usage=usage,
        finish_reason="stop" if finish == "function_call" else finish,
        logprobs=token_logprobs(choice),
    )


TEXT = (str, type(None))  # a text field the API may leave out


def reasoning_of(message) -> str | None:
    """The reasoning a server sent apart (vLLM and SGLang: `reasoning_content`; others: `reasoning`)."""
    extra = message.model_extra or {}
    field = "reasoning_content" if extra.get("reasoning_content") else "reasoning"
    require_kind(extra.get(field), TEXT, f"choices[0].message.{field}", "text")
    return extra.get(field) or None


def tool_calls_of(message) -> list[ToolCall] | None:
    """The message's function calls (a custom tool's call, which has no function, is not one)."""
    calls = message.tool_calls or []
    require_kind(calls, (list,), "choices[0].message.tool_calls", "a list")
    read = []
    for number, call in enumerate(calls):
        function = getattr(call, "function", None)
        if function is None:
            continue
        where = f"choices[0].message.tool_calls[{number}].function"
        require_kind(function.name, (str,), f"{where}.name", "text")
        require_kind(function.arguments, TEXT, f"{where}.arguments", "text")
        read.append(
            ToolCall(id=call.id, function=ToolFunction(name=function.name, arguments=function.arguments or "{}"))
        )
    return read or None


def token_logprobs(choice) -> list[dict] | None:
    """The reply's log-probs per generated token, with its alternatives; `ReplyShape` where they are not
    log-probabilities of tokens (a string, a NaN): the rollout's distillation would read them unchecked."""
    logprobs = choice.logprobs
    if logprobs is None:
        return None
    require_kind(logprobs, (ChoiceLogprobs,), "choices[0].logprobs", "an object")
    content = logprobs.content
    if content is None:
        return None
    require_kind(content, (list,), "choices[0].logprobs.content", "a list")
    # Each token's bytes too where the server gives them: a token holding part of a multi-byte character
    # reads as U+FFFD, and only its bytes say which token it is (distill/topk.py).
    return [token_entry(entry, f"choices[0].logprobs.content[{i}]") for i, entry in enumerate(content)] or None


def token_entry(entry, where: str) -> dict:
    require_kind(entry, (ChatCompletionTokenLogprob,), where, "an object")
    alternatives = entry.top_logprobs or []
    require_kind(alternatives, (list,), f"{where}.top_logprobs", "a list")
    return {
        **logprob_entry(entry, where),
        "top_logprobs": [logprob_entry(a, f"{where}.top_logprobs[{j}]") for j, a in enumerate(alternatives)],
    }


def logprob_entry(entry, where: str) -> dict:
    """A token's (or an alternative's) text, log-prob and bytes."""
    require_kind(entry, (ChatCompletionTokenLogprob, TopLogprob), where, "an object")
    require_kind(entry.token, (str,), f"{where}.token", "text")
    if problem := logprob_problem(entry.logprob):
        raise ReplyShape(f"{where}.logprob is {problem}")
    return {"token": entry.token, "logprob": entry.logprob, **own_bytes(entry)}


def own_bytes(entry) -> dict:
    """The token's bytes where the server gives them as bytes; others are left out: the token's text still
    names it (distill/topk.py reads bytes first, then text)."""
    data = getattr(entry, "bytes", None)
    is_bytes = isinstance(data, list) and all(type(b) is int and 0 <= b < 256 for b in data)
    return {"bytes": data} if is_bytes else {}


def is_reasoning_model(model: str) -> bool:
    return REASONING_MODEL.fullmatch(model) is not None


def sampling_fields(model: str, base_url: str, sampling: Sampling) -> dict:
    """The request's token limit, temperature and top_p, as the endpoint takes them. An OpenAI reasoning model
    (`REASONING_MODEL`) is sent `max_completion_tokens` and no temperature or top_p (it samples at 1; one
    asked to sample otherwise is refused here, before anything is paid for); api.openai.com is sent
    `max_completion_tokens` for every model; any other server (vLLM, SGLang, llama.cpp, a gateway) the fields
    every OpenAI-compatible server takes, as they are."""
    if not is_reasoning_model(model):
        limit = "max_completion_tokens" if urlparse(base_url).hostname == OPENAI_HOST else "max_tokens"
        return {limit: sampling.max_new_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p}
    if (sampling.temperature, sampling.top_p) != (1.0, 1.0):
        raise RequestError(
            Failure(
                False,
                f"{model} is one of OpenAI's reasoning models, which sample only at temperature 1 and top_p 1, and "
                f"the stage asks for temperature {sampling.temperature:g}, top_p {sampling.top_p:g}: set the "
                "stage's temperature (and top_p) to 1",
            )
        )
    return {"max_completion_tokens": sampling.max_new_tokens}


class OpenAIBackend:
    provider = "openai"
    capabilities = Capabilities(logprobs=True, top_logprobs=True, tools=True, reasoning=True)

    def __init__(self, model: str, base_url: str, key: str, timeout_s: float):
        self.model, self.endpoint, self.key, self.timeout_s = model, base_url, key, timeout_s
        self.answer_options: dict = {}  # no setting of its own changes an answer (api.py `_answer_options`)
        self.client: openai.AsyncOpenAI | None = None  # made inside the running event loop
        self.tls = sdk_tls_context()  # once, not per client

    @classmethod
    def connect(cls, spec: PolicySpec, key_env: str | None, timeout_s: float, where: str) -> "OpenAIBackend":
        """The backend of an `openai:MODEL[@URL]` spec, once the endpoint has accepted the key and lists the model."""
        base_url = spec.base_url or DEFAULT_BASE_URL
        key = api_key(base_url, key_env or "OPENAI_API_KEY", where)
        check_endpoint(base_url, key, spec.name, where)
        return cls(spec.name, base_url, key, timeout_s)

    def _new_client(self) -> openai.AsyncOpenAI:
        # The SDK's default HTTP client (its connection limits, redirects, timeout), with the TLS settings made once.
        http = async_http_client(openai, self.timeout_s, base_url=self.endpoint, verify=self.tls)
        return openai.AsyncOpenAI(
            base_url=self.endpoint, api_key=self.key, max_retries=0, timeout=self.timeout_s, http_client=http
        )

    async def complete(
        self, messages: list[Message], tools: list[dict], sampling: Sampling, seed: int | None, top_logprobs: int
    ) -> Reply:
        if self.client is None:
            self.client = make_client(self._new_client, self.endpoint, f"{self.provider}:{self.model}")
        options: dict = {"tools": tools} if tools else {}
        if seed is not None:
            options["seed"] = seed
        if top_logprobs:
            options |= {"logprobs": True, "top_logprobs": top_logprobs}
        try:
            response = await self.client.chat.completions.create(
                model=self.model,
                messages=to_openai(messages),
                **sampling_fields(self.model, self.endpoint, sampling),
                **options,
            )
        except (openai.APIError, ValueError) as exc:  # ValueError: a body that is not JSON
            raise request_error(exc, openai) from None
        require_parsed(response, ChatCompletion)
        refuse_error_body(response)
        usage = read_usage(lambda: usage_from_openai(response.usage, served_model(response)))
        choices = read_reply(lambda: choices_of(response), usage)
        if not choices:
            raise invalid_reply("no choices", usage)
        return read_reply(lambda: from_openai(choices[0], usage), usage)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
