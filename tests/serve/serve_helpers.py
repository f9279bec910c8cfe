"""Starting a real `warmstart serve` process for a test module, with whatever flags it needs, or the server in
this process where a test changes a limit the flags do not reach, and the few checks several modules share
(greedy decoding and log-probs by a forward pass in this process)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import torch

from warmstart.lm.chat import stop_token_ids
from warmstart.serve.server import ChatHTTPServer, ChatServer, ServeOptions


@contextmanager
def running_server(model_dir: Path, log_dir: Path, *flags: str, env: dict | None = None):
    """The URL (`http://127.0.0.1:PORT/v1`) of a `warmstart serve` process, terminated on leaving."""
    stderr = (log_dir / "stderr.txt").open("w+")  # a file: a full pipe would block the server
    command = [sys.executable, "-m", "warmstart.cli", "serve", str(model_dir), "--port", "0", "--max-batch", "16"]
    process = subprocess.Popen(
        [*command, *flags], stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, **(env or {})}
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 90)
        line = process.stdout.readline() if ready else ""
        if " on http://127.0.0.1:" not in line:
            stderr.seek(0)
            raise AssertionError(f"no 'serving' line (got {line!r}); server stderr:\n{stderr.read()[-3000:]}")
        yield line.split(" on ")[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=15)
        stderr.close()


@contextmanager
def in_process_server(served_model, host: str = "127.0.0.1", **options):
    """(host, port) of a server in this process on `host`, built as `warmstart serve` builds it with these
    `ServeOptions`, stopped on leaving; the tests close their connections first."""
    model, tokenizer = served_model
    app = ChatServer(model, tokenizer, "tiny", 16, ServeOptions(**options))
    httpd = ChatHTTPServer((host, 0), app)
    app.engine.start()
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield httpd.server_address[:2]  # an IPv6 address has two more fields
    finally:
        httpd.shutdown()
        httpd.server_close()
        app.engine.stop()


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request, errors included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def greedy(model, tokenizer, ids: list[int], steps: int) -> list[int]:
    """What the server generates at temperature 0: the tokens, the end-of-turn token included if it came
    (transformers' own greedy `generate`, KV-cached, on this process's copy of the model)."""
    stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    with torch.no_grad():
        output = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=steps,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
        )
    out = output[0, len(ids) :].tolist()
    end = next((i for i, t in enumerate(out) if t in stops), None)
    return out if end is None else out[: end + 1]


def chosen_logprobs(model, ids: list[int], start: int) -> list[float]:
    """log p(ids[t] | ids[:t]) for t from `start` on, from one forward pass."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), dim=-1)
    return logp.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)[start - 1 :].tolist()


def scrape(base_url: str) -> dict[tuple[str, frozenset], float]:
    """GET /metrics, parsed by prometheus-client's own parser: {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, content_type, data = http("GET", base_url.removesuffix("/v1") + "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(data.decode())
        for sample in family.samples
    }


def metric(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
