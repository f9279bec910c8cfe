"""A served teacher's log-prob of every token of given sequences: log p(token t | tokens before t).

On-policy distillation has the teacher score the tokens the student wrote. Behind an OpenAI-compatible
server that is the legacy completions endpoint, as vLLM and `warmstart serve` answer it: the sequence
as `prompt` token ids, `echo: true`, `logprobs: 0`, and `max_tokens: 1` (vLLM refuses 0; the one
generated token is dropped). The ids must be the served model's own tokenizer's: the student and the
teacher share a tokenizer. A server that does not return prompt log-probs (OpenAI's hosted models, for
one) is one clear error, not a silent fallback.

One request per sequence, `concurrency` in flight, through the official `openai` SDK, whose own retries
(`max_retries`, with backoff) cover 429s, 5xx and dropped connections.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import openai

from ..config import PolicySpec
from ..errors import WarmstartError
from .backend import api_key
from .bounded_http import http_client
from .openai_api import DEFAULT_BASE_URL, check_endpoint


@dataclass
class ScoredSequence:
    tokens: list[str]  # the server's text of each token, as returned
    logprobs: list[float | None]  # log p(token t | tokens before t); entry 0 is None


class RemoteScorer:
    """Scores token-id sequences with an OpenAI-compatible server's legacy completions endpoint (echo + logprobs)."""

    def __init__(self, model: str, base_url: str, api_key: str, timeout_s: float, concurrency: int, max_retries: int):
        self.model, self.base_url, self.concurrency = model, base_url, concurrency
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
        try:
            response = self.client.completions.create(
                model=self.model, prompt=ids, max_tokens=1, echo=True, logprobs=0, temperature=0
            )
        except openai.APIStatusError as exc:
            raise WarmstartError(
                f"{self._name()}: HTTP {exc.status_code} from {self.base_url}: {_one_line(exc.message)}"
            ) from None
        except (openai.APIError, ValueError) as exc:  # no answer after the retries; ValueError: a body that is not JSON
            raise WarmstartError(
                f"{self._name()}: no usable answer from {self.base_url}: {type(exc).__name__}: {_one_line(str(exc))}"
            ) from None
        logprobs = response.choices[0].logprobs if response.choices else None
        n = len(ids)
        listed = logprobs.token_logprobs if logprobs is not None and logprobs.tokens is not None else None
        if listed is None or len(listed) < n or len(logprobs.tokens) < n or any(v is None for v in listed[1:n]):
            raise WarmstartError(
                f"{self._name()}: {self.base_url} does not return prompt logprobs (echo + logprobs on /v1/completions), "
                "as OpenAI's hosted models do not; serve the teacher with vLLM or `warmstart serve`"
            )
        return ScoredSequence(list(logprobs.tokens[:n]), [None, *listed[1:n]])  # nothing predicts the first token

    def _name(self) -> str:
        return f"openai:{self.model}"


def connect_scorer(spec: PolicySpec, api_cfg, key: str) -> RemoteScorer:
    """An `openai:MODEL@URL` spec as a scorer, after checking that the server serves MODEL.
    `api_cfg` is the recipe's ApiConfig; `key` names the recipe setting in error messages."""
    base_url = spec.base_url or DEFAULT_BASE_URL
    secret = api_key(base_url, api_cfg.key_env or "OPENAI_API_KEY", key)
    check_endpoint(base_url, secret, spec.name, key)
    return RemoteScorer(spec.name, base_url, secret, api_cfg.timeout_s, api_cfg.concurrency, api_cfg.max_retries)


def _one_line(text: str) -> str:
    return " ".join(text.split())
