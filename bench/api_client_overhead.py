"""Client-side cost of warmstart's API path against the `openai` SDK used directly, same server, one run.

    python bench/api_client_overhead.py [--requests 400] [--concurrency 1 16 64]

The server is the tests' loopback fake (tests/fake_api.py), which answers at once, so what is measured
is the client: warmstart's policy (asyncio loop, limiter bookkeeping, response cache with one fsynced
line per reply, trajectory records) versus bare `AsyncOpenAI.chat.completions.create` calls under the
same concurrency. Reports requests/s for both, their ratio (warmstart / SDK), and the wall time
warmstart adds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake server lives with the tests
from fake_api import FakeAPI  # noqa: E402

from warmstart.envs.arithmetic import Arithmetic  # noqa: E402
from warmstart.policies.api import APIPolicy, ApiSettings, ResponseCache  # noqa: E402
from warmstart.policies.base import Request, Sampling  # noqa: E402
from warmstart.policies.limits import RateLimiter  # noqa: E402
from warmstart.policies.openai_api import OpenAIBackend  # noqa: E402


async def direct(url: str, prompts: list[str], concurrency: int) -> float:
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str):
        async with gate:
            await client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": prompt}], max_tokens=16, temperature=0.0)

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


def through_warmstart(url: str, tasks, concurrency: int, cache_dir: Path) -> float:
    settings = ApiSettings(concurrency=concurrency, timeout_s=30, max_retries=0, backoff_s=0.1, top_logprobs=0)
    cache = ResponseCache(cache_dir / f"cache-{concurrency}.jsonl")
    policy = APIPolicy(OpenAIBackend("fake-model", url, "unused", 30), Arithmetic(), 1, settings, RateLimiter(None, None), cache)
    started = time.perf_counter()
    trajectories = policy.rollout([Request(t, 0) for t in tasks], Sampling(0.0, 1.0, 16), seed=0)
    elapsed = time.perf_counter() - started
    assert all(t.error is None for t in trajectories)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    tasks = Arithmetic().tasks("train", args.requests, seed=0)
    prompts = [t.prompt[0].content for t in tasks]
    print(f"{args.requests} requests per run, loopback fake server answering at once")
    print(f"{'concurrency':>11} {'SDK req/s':>10} {'warmstart req/s':>16} {'ratio':>6} {'extra ms/request':>17}")
    with FakeAPI() as api, tempfile.TemporaryDirectory() as tmp:
        url = f"{api.url}/v1"
        for concurrency in args.concurrency:
            sdk = asyncio.run(direct(url, prompts, concurrency))
            ours = through_warmstart(url, tasks, concurrency, Path(tmp))
            extra_ms = (ours - sdk) / args.requests * 1000  # wall time added per request at this concurrency
            print(f"{concurrency:>11} {args.requests / sdk:>10.0f} {args.requests / ours:>16.0f} {sdk / ours:>6.2f} {extra_ms:>17.2f}")


if __name__ == "__main__":
    main()
