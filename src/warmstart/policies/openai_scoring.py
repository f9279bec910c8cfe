"""A served teacher's log-prob of every token of given sequences: log p(token t | tokens before t).

On-policy distillation has the teacher score the tokens the student wrote. Behind an OpenAI-compatible
server that is the legacy completions endpoint, as vLLM and `warmstart serve` answer it: the sequence
as `prompt` token ids, `echo: true`, `logprobs: 0`, and `max_tokens: 1` (vLLM refuses 0; the one
generated token is dropped). The ids must be the served model's own tokenizer's: the student and the
teacher share a tokenizer. A server that does not return prompt log-probs (OpenAI's hosted models, for
one) is one clear error, not a silent fallback.

One request per sequence, `concurrency` in flight, through the official `openai` SDK, whose own retries
(`max_retries`, with backoff) cover 429s, 5xx, dropped connections and timeouts (each try bounded as a whole
by `api.timeout_s`: `bounded_http.http_client`). A 200 that is no completion (a
body that is not JSON, not UTF-8 or not in its Content-Encoding: a proxy's page; log-probs that are not
numbers) is a server fault as it is for a policy (`backend.unreadable_reply`), quoted on one line, and
asked again as many times (`backend.asked_until_usable`, as GRPO's rollout server does); so is an answer
larger than the request can need (`bounded_http`: a server or proxy that does not stop).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import openai
from openai.types import Completion, CompletionChoice
from openai.types.completion_choice import Logprobs as CompletionLogprobs

from ..config import PolicySpec
from ..errors import WarmstartError, one_line
from .backend import (
    UNREADABLE,
    ReplyShape,
    api_key,
    asked_until_usable,
    invalid_reply,
    logprob_problem,
    request_error,
    require_kind,
    require_parsed,
    unreadable_body,
)
from .bounded_http import http_client, no_whole_answer, reply_too_large
from .openai_api import DEFAULT_BASE_URL, check_endpoint


@dataclass
class ScoredSequence:
    tokens: list[str]  # the server's text of each token, as returned
    logprobs: list[float | None]  # log p(token t | tokens before t); entry 0 is None


class RemoteScorer:
    """Scores token-id sequences with an OpenAI-compatible server's legacy completions endpoint (echo + logprobs)."""

    def __init__(self, model: str, base_url: str, api_key: str, timeout_s: float, concurrency: int, max_retries: int):
        self.model, self.base_url, self.concurrency, self.max_retries = model, base_url, concurrency, max_retries
        self.timeout_s = timeout_s
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=max_retries, http_client=http_client(openai, timeout_s)
        )

    def score(self, sequences: list[list[int]]) -> list[ScoredSequence]:
        """One ScoredSequence per sequence, in order."""
        if not sequences:
            return []
        with ThreadPoolExecutor(min(self.concurrency, len(sequences))) as pool:
            return list(pool.map(self._score_one, sequences))

    def close(self) -> None:
        self.client.close()

    def _score_one(self, ids: list[int]) -> ScoredSequence:
        if not ids:
            return ScoredSequence([], [])
        return asked_until_usable(  # a 200 that was no completion: the SDK asks again after a 5xx only
            lambda: self._ask(ids),
            self.max_retries,
            lambda said: WarmstartError(f"{self._name()}: no usable answer from {self.base_url}: {said}"),
        )

    def _ask(self, ids: list[int]) -> ScoredSequence:
        """One request's scores; `RequestError` where a 200 came back that was no completion."""
        try:
            response = self.client.completions.create(
                model=self.model, prompt=ids, max_tokens=1, echo=True, logprobs=0, temperature=0
            )
        except openai.APIStatusError as exc:
            raise WarmstartError(
                f"{self._name()}: HTTP {exc.status_code} from {self.base_url}: {one_line(exc.message)}"
            ) from None
        except openai.APITimeoutError:  # each try bounded as a whole (bounded_http.http_client), and asked again
            raise WarmstartError(
                f"{self._name()}: {no_whole_answer(self.base_url, self.timeout_s, self.max_retries + 1)}"
            ) from None
        except (openai.APIError, ValueError) as exc:  # no answer after the retries, or one that was no completion
            if unreadable_body(exc) is not None or reply_too_large(exc):  # one that cannot be read, or held
                raise request_error(exc, openai) from None
            raise WarmstartError(
                f"{self._name()}: no usable answer from {self.base_url}: {type(exc).__name__}: {one_line(str(exc))}"
            ) from None
        require_parsed(response, Completion)  # a proxy's page the SDK handed over as text
        try:
            scored = prompt_scores(response, len(ids))
        except UNREADABLE as exc:  # the SDK builds its types from the body unchecked
            said = str(exc) if isinstance(exc, ReplyShape) else type(exc).__name__
            raise invalid_reply(f"a completion warmstart cannot read ({said})") from None
        if scored is None:
            raise WarmstartError(
                f"{self._name()}: {self.base_url} does not return prompt logprobs (echo + logprobs on /v1/completions), "
                "as OpenAI's hosted models do not; serve the teacher with vLLM or `warmstart serve`"
            )
        return scored

    def _name(self) -> str:
        return f"openai:{self.model}"


def connect_scorer(spec: PolicySpec, api_cfg, key: str) -> RemoteScorer:
    """An `openai:MODEL@URL` spec as a scorer, after checking that the server serves MODEL.
    `api_cfg` is the recipe's ApiConfig; `key` names the recipe setting in error messages."""
    base_url = spec.base_url or DEFAULT_BASE_URL
    secret = api_key(base_url, api_cfg.key_env or "OPENAI_API_KEY", key)
    check_endpoint(base_url, secret, spec.name, key)
    return RemoteScorer(spec.name, base_url, secret, api_cfg.timeout_s, api_cfg.concurrency, api_cfg.max_retries)


def prompt_scores(response: Completion, n: int) -> ScoredSequence | None:
    """The first `n` echoed tokens' texts and log-probs of a completion; None where it has none (a server
    that does not score prompts: no log-probs, or null for every token but the first); `ReplyShape` where
    they are not texts and log-probabilities. Only the first token's null is one: nothing predicts it."""
    choices = response.choices
    require_kind(choices, (list,), "choices", "a list")
    if not choices:
        return None
    require_kind(choices[0], (CompletionChoice,), "choices[0]", "an object")
    logprobs = choices[0].logprobs
    if logprobs is None:
        return None
    require_kind(logprobs, (CompletionLogprobs,), "choices[0].logprobs", "an object")
    tokens, listed = logprobs.tokens, logprobs.token_logprobs
    if tokens is None or listed is None:
        return None
    require_kind(tokens, (list,), "choices[0].logprobs.tokens", "a list")
    require_kind(listed, (list,), "choices[0].logprobs.token_logprobs", "a list")
    if len(listed) < n or len(tokens) < n or n > 1 and all(v is None for v in listed[1:n]):
        return None
    for position in range(n):
        require_kind(tokens[position], (str,), f"choices[0].logprobs.tokens[{position}]", "text")
        if position == 0 and listed[0] is None:
            continue  # the API's null for the first token, which nothing predicts
        if problem := logprob_problem(listed[position]):
            raise ReplyShape(f"choices[0].logprobs.token_logprobs[{position}] is {problem}")
    return ScoredSequence(list(tokens[:n]), [None, *listed[1:n]])  # nothing predicts the first token
