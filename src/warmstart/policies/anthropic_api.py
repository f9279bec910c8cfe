"""`anthropic:MODEL[@BASE_URL]`: Anthropic's Messages API through the official `anthropic` SDK.

Thinking, tool_use and tool_result blocks are normalized into the canonical Message and rendered back
on later turns by `anthropic_format.py`. The API returns no token logprobs, so this teacher feeds
SFT (and on-policy distillation by text), never logit distillation. `api.thinking_tokens > 0` turns
extended thinking on. No temperature or top_p is sent: the installed SDK's `messages.create` no longer
takes them (current models sample at their own settings), so `generate.temperature` does not apply
here; the sample index still keeps samples of one task apart in the cache.

The key comes from `api.key_env` (default ANTHROPIC_API_KEY). The model list is checked before any
request is paid for. The SDK's retries are off: `api.py` retries 429 / 5xx / 529 (overloaded) and
stops on 400 / 401 / 403 and on a 429 that reports a spend limit. A reply it cannot use (a body that is
not JSON, content blocks the canonical Message cannot hold, such as a server tool's) is an invalid reply:
asked again, its usage billed.
"""

from __future__ import annotations

import anthropic

from ..config import PolicySpec
from ..errors import WarmstartError
from ..types import Message, Sampling, Usage
from .anthropic_format import from_anthropic, to_anthropic, usage_from_anthropic
from .backend import (
    Capabilities,
    Reply,
    api_key,
    invalid_reply,
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
)
from .bounded_http import async_http_client, http_client

DEFAULT_BASE_URL = "https://api.anthropic.com"


def anthropic_tools(tools: list[dict]) -> list[dict]:
    """OpenAI function schemas as Anthropic tools."""
    return [
        {
            "name": t["function"]["name"],
            "description": t["function"].get("description", ""),
            "input_schema": t["function"].get("parameters", {"type": "object"}),
        }
        for t in tools
    ]


class AnthropicBackend:
    provider = "anthropic"
    capabilities = Capabilities(tools=True, reasoning=True)

    def __init__(self, model: str, base_url: str, key: str, timeout_s: float, thinking_tokens: int):
        self.model, self.endpoint, self.key, self.timeout_s = model, base_url, key, timeout_s
        self.thinking_tokens = thinking_tokens
        # Thinking changes the answer (reasoning, and the text after it): a reply cached without it is not one.
        self.answer_options = {"thinking_tokens": thinking_tokens} if thinking_tokens else {}
        self.client: anthropic.AsyncAnthropic | None = None  # made inside the running event loop
        self.tls = sdk_tls_context()  # once, not per client

    @classmethod
    def connect(
        cls, spec: PolicySpec, key_env: str | None, timeout_s: float, thinking_tokens: int, where: str
    ) -> "AnthropicBackend":
        """The backend of an `anthropic:MODEL[@URL]` spec, once the API has accepted the key and lists the model."""
        base_url = spec.base_url or DEFAULT_BASE_URL
        key = api_key(base_url, key_env or "ANTHROPIC_API_KEY", where)
        check_model(base_url, key, spec.name, where)
        return cls(spec.name, base_url, key, timeout_s, thinking_tokens)

    def _new_client(self) -> anthropic.AsyncAnthropic:
        # The SDK's default HTTP client (its connection limits, redirects, timeout), with the TLS settings made once.
        http = async_http_client(anthropic, self.timeout_s, base_url=self.endpoint, verify=self.tls)
        return anthropic.AsyncAnthropic(
            base_url=self.endpoint, api_key=self.key, max_retries=0, timeout=self.timeout_s, http_client=http
        )

    async def complete(
        self, messages: list[Message], tools: list[dict], sampling: Sampling, seed: int | None, top_logprobs: int
    ) -> Reply:
        if self.client is None:
            self.client = make_client(self._new_client, self.endpoint, f"{self.provider}:{self.model}")
        system, turns = to_anthropic(messages)
        options: dict = {"system": system} if system else {}
        if tools:
            options["tools"] = anthropic_tools(tools)
        if self.thinking_tokens:
            options["thinking"] = {"type": "enabled", "budget_tokens": self.thinking_tokens}
        try:
            response = await self.client.messages.create(
                model=self.model, max_tokens=sampling.max_new_tokens, messages=turns, **options
            )
        except (anthropic.APIError, ValueError) as exc:  # ValueError: a body that is not JSON
            raise request_error(exc, anthropic) from None
        require_parsed(response, anthropic.types.Message)
        refuse_error_body(response)
        model = getattr(response, "model", None)
        usage = read_usage(lambda: usage_from_anthropic(response.usage, model if isinstance(model, str) else None))
        return read_reply(lambda: reply_of(response, usage), usage)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


def reply_of(response, usage: Usage) -> Reply:
    """The Reply of a parsed message; `backend.read_reply` refuses one it cannot read (a block missing a field)."""
    require_kind(response.content, (list,), "content", "a list of blocks")
    try:
        message, finish = from_anthropic(response.content, response.stop_reason)
    except WarmstartError as exc:  # blocks the canonical Message cannot hold (server tools): the teacher may
        raise invalid_reply(str(exc), usage) from None  # answer without them when asked again
    return Reply(message=message, usage=usage, finish_reason=finish)


def check_model(base_url: str, key: str, model: str, where: str) -> None:
    client = make_client(
        lambda: anthropic.Anthropic(
            base_url=base_url, api_key=key, max_retries=0, http_client=http_client(anthropic, 15.0)
        ),
        base_url,
        where,
    )
    served = served_models(client, anthropic, base_url, where)
    if model.endswith("-latest"):
        return
    # Aliases ("claude-sonnet-4-5") name dated ids ("claude-sonnet-4-5-20250929").
    require_served(model, served, lambda wanted, name: name == wanted or name.startswith(wanted + "-"), base_url, where)
