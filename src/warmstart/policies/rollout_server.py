"""GRPO's rollouts sampled by an inference server (`grpo.rollout_server = "openai:NAME@URL"`).

The server serves NAME, the model GRPO starts from, and answers the legacy completions endpoint on token
ids: `prompt` as a list of token-id lists (a turn's rollouts, up to 256 per request), `return_token_ids:
true` (vLLM's extension, also SGLang's and `warmstart serve`'s) and `logprobs: 0`, so each sampled turn
comes back as the exact ids the policy produced and their log-probs, which GRPO trains on and weights by
(train/mismatch.py). A server that does not return the ids
is one clear error: re-tokenized text is not what was sampled.

The policy the server samples is named in each request: NAME itself, or after a LoRA update the adapter
the trainer loaded (`load_adapter`, vLLM's /v1/load_lora_adapter); full weights are reloaded in place
(`update_weights`, SGLang's /update_weights_from_disk, with a weight version read back from
/get_model_info). Every answer must name the policy asked for: one that does not is a policy-version
mismatch and stops the run instead of training on another policy's tokens.

Where the server stops is its own (its end-of-turn tokens): a completion is cut at the first of the
trainer's stop ids, and one that stopped on a token the trainer does not know as a stop is an error.
Requests carry no seed: a server batches them with others, so its samples are not reproducible from the
run's seed (the local sampler's are). A 200 that is no completion (a body that is not JSON, not UTF-8 or
not in its Content-Encoding; log-probs that are not log-probabilities, a null among them) is a server
fault, as it is for a teacher, and so is an answer larger than the request can need (`bounded_http`): asked
again up to `api.max_retries` times (`backend.asked_until_usable`), then one line naming what was wrong.
Each request is bounded as a whole by `api.timeout_s` (`bounded_http.http_client`: a body trickled a byte at
a time cannot hold a run), and one that timed out is asked again by the SDK, as after a 5xx.

Every request runs on a daemon thread while the calling thread waits for it (`_detached`), so that a
Ctrl-C stops the run at once, whatever the server does: the main thread stops waiting when the interrupt
comes, `close` ends the waits of other threads (one step off policy, the batch sampled ahead), and the
interpreter does not join daemon threads at exit (it joins a ThreadPoolExecutor's, which is what made an
interrupted run wait out its requests). Closing the client does not wake a thread blocked in a read, and
shutting its sockets down would not be enough either: the SDK retries a request whose connection failed,
after a sleep, on a thread that exit would still join. An abandoned request only reads the network:
nothing it returns is written anywhere.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Callable
from urllib.parse import urlsplit

import httpx2
import openai
from openai.types import Completion

from ..errors import WarmstartError, one_line
from ..lm.generation import Sampled
from ..types import Sampling
from .backend import (
    UNREADABLE,
    ReplyShape,
    api_key,
    asked_until_usable,
    invalid_reply,
    logprob_problem,
    make_client,
    request_error,
    require_kind,
    require_parsed,
    served_models,
    unreadable_body,
)
from .bounded_http import http_client, no_whole_answer, reply_too_large
from .openai_api import check_endpoint

WHERE = "grpo.rollout_server"
PROMPTS_PER_REQUEST = 256  # a turn's rollouts in few requests; bounded so one answer stays a few MB


class RolloutServer:
    """Samples turns from a served policy; loads the trainer's new weights into the server."""

    def __init__(self, name: str, base_url: str, key: str, timeout_s: float, concurrency: int, max_retries: int):
        self.base_name, self.base_url, self.key, self.concurrency = name, base_url, key, concurrency
        self.max_retries, self.timeout_s = max_retries, timeout_s
        self.policy = name  # the model name requests use: the base, or the newest adapter
        self.client = make_client(
            lambda: openai.OpenAI(
                base_url=base_url, api_key=key, max_retries=max_retries, http_client=http_client(openai, timeout_s)
            ),
            base_url,
            WHERE,
        )
        self.http = make_client(
            lambda: http_client(openai, timeout_s, headers={"Authorization": f"Bearer {key}"}), base_url, WHERE
        )
        self.closed: Future = Future()  # done once closed: every wait on a request (`_detached`) ends then

    def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.client.close()
        self.http.close()

    # --- sampling -------------------------------------------------------------------------------------

    def sample(self, model, pad_id, prompts, sampling: Sampling, stop_ids, seed, keys=None) -> list[Sampled]:
        """`lm.generation.sample_ids`'s signature: one completion per prompt (token ids). The model, pad id,
        seed and keys are the local sampler's and not used: the server holds the policy."""
        if not prompts:
            return []
        chunks = [prompts[i : i + PROMPTS_PER_REQUEST] for i in range(0, len(prompts), PROMPTS_PER_REQUEST)]
        calls = [lambda chunk=chunk: self._sample_chunk(chunk, sampling, set(stop_ids)) for chunk in chunks]
        answers = self._detached(calls, self.concurrency)
        return [turn for answer in answers for turn in answer]

    def _sample_chunk(self, prompts: list[list[int]], sampling: Sampling, stop_ids: set[int]) -> list[Sampled]:
        """One request for several prompts (vLLM's and `warmstart serve`'s batch form): the server starts them
        together, where one request per prompt would start them as they happen to arrive. Asked again
        where a 200 came back that was no completion (the SDK asks again after a 5xx only)."""
        return asked_until_usable(
            lambda: self._ask(prompts, sampling, stop_ids),
            self.max_retries,
            lambda said: WarmstartError(f"{WHERE}: no usable answer from {self.base_url}: {said}"),
            self._pause,
        )

    def _ask(self, prompts: list[list[int]], sampling: Sampling, stop_ids: set[int]) -> list[Sampled]:
        """One request's turns; `RequestError` where a 200 came back that was no completion."""
        try:
            response = self.client.completions.create(
                model=self.policy,
                prompt=prompts,
                max_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                logprobs=0,
                extra_body={"return_token_ids": True},
            )
        except openai.APIStatusError as exc:
            raise WarmstartError(
                f"{WHERE}: HTTP {exc.status_code} from {self.base_url}: {one_line(exc.message)}"
            ) from None
        except openai.APITimeoutError:  # each try bounded as a whole (bounded_http.http_client), and asked again
            raise WarmstartError(
                f"{WHERE}: {no_whole_answer(self.base_url, self.timeout_s, self.max_retries + 1)}"
            ) from None
        except (openai.APIError, ValueError) as exc:
            if unreadable_body(exc) is not None or reply_too_large(exc):  # a 200 that cannot be read, or held
                raise request_error(exc, openai) from None
            raise WarmstartError(f"{WHERE}: no usable answer from {self.base_url}: {one_line(str(exc))}") from None
        require_parsed(response, Completion)  # a proxy's page the SDK handed over as text
        if response.model != self.policy:
            raise WarmstartError(
                f"{WHERE}: asked {self.base_url} for policy {self.policy!r} and got an answer from {response.model!r} "
                "(a policy-version mismatch); no update is taken on it"
            )
        try:
            return self._turns(response, prompts, stop_ids)
        except UNREADABLE as exc:  # the SDK builds its types from the body unchecked
            said = str(exc) if isinstance(exc, ReplyShape) else type(exc).__name__
            raise invalid_reply(f"a completion warmstart cannot read ({said})") from None

    def _turns(self, response: Completion, prompts: list[list[int]], stop_ids: set[int]) -> list[Sampled]:
        require_kind(response.choices, (list,), "choices", "a list")
        choices = sorted(response.choices, key=lambda c: c.index)
        if [c.index for c in choices] != list(range(len(prompts))):
            raise WarmstartError(f"{WHERE}: {self.base_url} answered {len(choices)} choices for {len(prompts)} prompts")
        return [sampled_turn(p, c, stop_ids, self.base_url, c.index) for p, c in zip(prompts, choices)]

    def _pause(self, seconds: float) -> None:
        """Wait before asking again; closed meanwhile, nothing more is asked."""
        if wait([self.closed], timeout=seconds).done:
            raise WarmstartError(f"{WHERE}: the client of {self.base_url} is closed")

    # --- weights --------------------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str) -> None:
        self._post("/load_lora_adapter", {"lora_name": name, "lora_path": path}, under_v1=True)

    def unload_adapter(self, name: str) -> None:
        self._post("/unload_lora_adapter", {"lora_name": name}, under_v1=True)

    def update_weights(self, path: str, version: str) -> None:
        self._post("/update_weights_from_disk", {"model_path": path, "weight_version": version}, under_v1=False)

    def weight_version(self) -> str | None:
        info = self._get("/get_model_info")
        return None if info.get("weight_version") is None else str(info["weight_version"])

    def served(self) -> list[str]:
        def listed() -> list[str] | None:
            client = make_client(
                lambda: openai.OpenAI(
                    base_url=self.base_url, api_key=self.key, max_retries=0, http_client=http_client(openai, 15.0)
                ),
                self.base_url,
                WHERE,
            )
            return served_models(client, openai, self.base_url, WHERE)

        return self._detached([listed])[0] or []

    def _post(self, path: str, body: dict, under_v1: bool) -> None:
        url = (self.base_url if under_v1 else self.root) + path
        try:
            answer = self._detached([lambda: self.http.post(url, json=body)])[0]
        except (httpx2.HTTPError, ValueError) as exc:  # ValueError: an answer past its bound (bounded_http)
            raise WarmstartError(f"{WHERE}: cannot reach {url}: {one_line(str(exc)) or type(exc).__name__}") from None
        if answer.status_code != 200 or not accepted(answer):
            raise WarmstartError(f"{WHERE}: {url} refused {body}: HTTP {answer.status_code} {reason(answer)}")

    def _get(self, path: str) -> dict:
        url = self.root + path
        try:
            answer = self._detached([lambda: self.http.get(url)])[0]
            answer.raise_for_status()
            return answer.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise WarmstartError(f"{WHERE}: {url}: {one_line(str(exc)) or type(exc).__name__}") from None

    def _detached(self, calls: list[Callable], workers: int = 1) -> list:
        """Each call's result, in order, once all have ended, the calls made on up to `workers` daemon
        threads (the module's docstring says why); the first failed call's exception, in order, once all
        have ended. Closed before or meanwhile: a WarmstartError at once, whatever is still in flight."""
        if self.closed.done():
            raise WarmstartError(f"{WHERE}: the client of {self.base_url} is closed")
        futures = start_daemons(calls, workers)
        unfinished = set(futures)
        while unfinished and not self.closed.done():
            unfinished = wait([*unfinished, self.closed], return_when=FIRST_COMPLETED).not_done - {self.closed}
        if unfinished:
            raise WarmstartError(f"{WHERE}: closed with {len(unfinished)} requests to {self.base_url} in flight")
        return [future.result() for future in futures]

    @property
    def root(self) -> str:
        """The server's root, where SGLang's weight endpoints are (the base URL without its /v1)."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/').removesuffix('/v1')}"


def start_daemons(calls: list[Callable], workers: int) -> list[Future]:
    """A future per call, the calls taken in order by up to `workers` daemon threads: threads the
    interpreter does not join at exit, unlike a ThreadPoolExecutor's."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    futures = [Future() for _ in calls]
    for item in zip(calls, futures):
        todo.put(item)
    for _ in range(min(workers, len(calls))):
        threading.Thread(target=work_through, args=(todo,), name="rollout-request", daemon=True).start()
    return futures


def work_through(todo: queue.SimpleQueue) -> None:
    """Make the queued calls until none is left, each one's outcome on its future."""
    while True:
        try:
            call, future = todo.get_nowait()
        except queue.Empty:
            return
        try:
            future.set_result(call())
        except BaseException as exc:  # noqa: BLE001 - the caller's to raise, as an executor hands it over
            future.set_exception(exc)


def sampled_turn(prompt: list[int], choice, stop_ids: set[int], base_url: str, number: int = 0) -> Sampled:
    """The choice's ids and log-probs as a Sampled turn, cut at the first stop id. `number`: the choice's
    index, which a reply's problem is named by."""
    extra = choice.model_extra or {}
    ids = extra.get("token_ids")
    if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
        raise WarmstartError(
            f"{WHERE}: {base_url} does not return the sampled token ids (return_token_ids on /v1/completions: "
            "vLLM >= 0.10.2, SGLang and `warmstart serve` do); re-tokenized text is not what the policy sampled"
        )
    listed = choice.logprobs.token_logprobs if choice.logprobs is not None else None
    where = f"choices[{number}].logprobs.token_logprobs"
    logprobs = listed_logprobs(listed, ids, choice.finish_reason == "stop", base_url, where)
    cut = next((i for i, t in enumerate(ids) if t in stop_ids), None)
    if cut is not None:
        return Sampled(list(prompt), ids[: cut + 1], True, logprobs[: cut + 1])
    if choice.finish_reason == "stop":
        raise WarmstartError(
            f"{WHERE}: {base_url} stopped on token {ids[-1] if ids else None}, which is not one of the policy's "
            f"stop tokens {sorted(stop_ids)}: the server and the trainer disagree on where a turn ends"
        )
    return Sampled(list(prompt), ids, False, logprobs)


def listed_logprobs(listed, ids: list[int], stopped: bool, base_url: str, where: str) -> list[float | None]:
    """One log-prob per id. A server that leaves the stop token's out (one short, stopped) gets None there:
    unknown (train/mismatch.py weights it 1). A null the server lists has no such meaning: every token here
    was sampled, none echoed, so it is `ReplyShape`, as a NaN or a positive one is."""
    if listed is None:
        raise WarmstartError(f"{WHERE}: {base_url} returned no logprobs (asked with logprobs: 0)")
    require_kind(listed, (list,), where, "a list")
    for position, value in enumerate(listed):
        if problem := logprob_problem(value):
            raise ReplyShape(f"{where}[{position}] is {problem}")
    if len(listed) == len(ids) - 1 and stopped:
        listed = [*listed, None]
    if len(listed) != len(ids):
        raise WarmstartError(f"{WHERE}: {base_url} returned {len(listed)} logprobs for {len(ids)} token ids")
    return [None if v is None else float(v) for v in listed]


def accepted(answer) -> bool:
    """vLLM and `warmstart serve` answer an adapter load with text; SGLang and a weight update answer with
    JSON, whose `success` may be false."""
    try:
        body = answer.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and body.get("success") is False)


def reason(answer) -> str:
    try:
        body = answer.json()
    except ValueError:
        return one_line(answer.text)[:300]
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else body.get("message")
        if message:
            return one_line(str(message))[:300]
    return one_line(str(body))[:300]


def connect_rollout_server(spec, api_cfg) -> RolloutServer:
    """`grpo.rollout_server` as a RolloutServer, after checking the server is reachable and serves NAME.
    `api_cfg`: the recipe's ApiConfig (key variable, timeout, concurrency, retries)."""
    secret = api_key(spec.base_url, api_cfg.key_env or "OPENAI_API_KEY", WHERE)
    check_endpoint(spec.base_url, secret, spec.name, WHERE)
    return RolloutServer(spec.name, spec.base_url, secret, api_cfg.timeout_s, api_cfg.concurrency, api_cfg.max_retries)
