"""`warmstart serve` under load: the latency of short requests while long ones run.

    .venv/bin/python bench/serve_latency.py [--short 12] [--short-every 1.0] [--long 4] [--model-dir DIR]

Starts a real `warmstart serve` process over a tiny Llama built here (wider and with a longer context than
the tests' one, so that a long request takes seconds on a CPU), then fires `--long` long requests (a
prompt of about half the context, `max_tokens` the other half) and, while they run, `--short` short ones
(one question, 8 tokens), one every `--short-every` seconds. Reports p50 / p99 / max of the short requests'
latency, the same with no long request running (the baseline), and how long the long ones took. Every
request is sampled at temperature 1 with no seed, as a batch-friendly client sends them.

The server is started from whatever `warmstart` Python imports: run it with `PYTHONPATH=<other checkout>/src`
to measure another version of the code on the same model.
"""

from __future__ import annotations

import argparse
import json
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from warmstart.config import TinyModelConfig
from warmstart.lm.tinymodel import save_tiny_student

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

MODEL = TinyModelConfig(
    vocab_size=300, hidden_size=256, intermediate_size=512, num_layers=4, num_heads=4, max_positions=1024
)
TEXTS = [f"what is {a} plus {b}? the answer is {a + b}." for a in range(20) for b in range(15)]
QUESTION = "what is 2 plus 3?"
SHORT_MAX_TOKENS = 8


def build_model(out_dir: Path) -> Path:
    return save_tiny_student(TEXTS, out_dir / "tiny", MODEL, seed=0)


def start_server(model_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "warmstart.cli", "serve", str(model_dir), "--port", "0", "--max-batch", "16"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_path.open("w"), text=True)
    ready, _, _ = select.select([process.stdout], [], [], 120)
    line = process.stdout.readline() if ready else ""
    if " on http://" not in line:
        process.terminate()
        process.wait()
        # The log lives in a temporary directory removed on exit: its last line (the server's `error:`) goes here.
        said = (log_path.read_text().strip().splitlines() or ["(nothing)"])[-1]
        raise SystemExit(f"the server did not start: {said}")
    return process, line.split(" on ")[1].strip()


def ask(base_url: str, content: str, max_tokens: int) -> float:
    """One chat completion; returns its wall-clock latency in seconds."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    request = urllib.request.Request(
        f"{base_url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        json.loads(response.read())
    return time.perf_counter() - start


def long_prompt(tokens: int) -> str:
    # "what is 3 plus 4? " is ~9 tokens of the tiny tokenizer (trained on such questions): ~half a token per char.
    return "what is 3 plus 4? " * (tokens // 9)


def short_latencies(base_url: str, count: int, every_s: float) -> list[float]:
    with ThreadPoolExecutor(count) as pool:
        futures = []
        for _ in range(count):
            futures.append(pool.submit(ask, base_url, QUESTION, SHORT_MAX_TOKENS))
            time.sleep(every_s)
        return [f.result() for f in futures]


def under_load(base_url: str, args) -> tuple[list[float], list[float]]:
    """Short latencies while `args.long` long requests run, and the long requests' latencies."""
    half = MODEL.max_positions // 2
    longs: list[float] = []
    lock = threading.Lock()

    start_together = threading.Barrier(args.long)  # so that the engine can take them as one batch

    def one_long() -> None:
        start_together.wait()
        latency = ask(base_url, long_prompt(half - 40), half - 40)
        with lock:
            longs.append(latency)

    threads = [threading.Thread(target=one_long) for _ in range(args.long)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # the long ones reach the engine first, as they would in a busy server
    shorts = short_latencies(base_url, args.short, args.short_every)
    for thread in threads:
        thread.join()
    return shorts, longs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, values: list[float]) -> str:
    return (
        f"| {name} | {len(values)} | {statistics.median(values):.2f} | {percentile(values, 0.99):.2f} | "
        f"{max(values):.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=harness.positive_int, default=12, help="short requests per phase")
    parser.add_argument("--short-every", type=float, default=1.0, help="seconds between short requests")
    parser.add_argument("--long", type=harness.positive_int, default=4, help="long requests running meanwhile")
    parser.add_argument("--model-dir", type=Path, help="a model to serve instead of the tiny one built here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or build_model(Path(tmp))
        process, base_url = start_server(model_dir, Path(tmp) / "server.log")
        try:
            ask(base_url, QUESTION, SHORT_MAX_TOKENS)  # warm-up
            idle = short_latencies(base_url, args.short, args.short_every)
            loaded, longs = under_load(base_url, args)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print("| short requests | count | p50 s | p99 s | max s |\n|---|---|---|---|---|")
    print(summary("alone", idle))
    print(summary(f"while {args.long} long ones run", loaded))
    print(summary("the long ones", longs))


if __name__ == "__main__":
    harness.report_errors(main)
