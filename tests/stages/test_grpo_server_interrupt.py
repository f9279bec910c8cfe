"""Ctrl-C during `warmstart grpo` with a rollout server that answers slowly: the process stops within a few
seconds, whatever the server still holds, exiting as an interrupted CLI command does (status 130), its
run directory intact.

A hang check, not a speed test: the server holds each completion for `HOLD_S` (30 s) and the bound is 8 s,
so only a process that waits for its requests fails it. Synchronous GRPO is interrupted while the main
thread waits for its own batch; one step off policy (`grpo.async = 1`) while the batch sampled ahead is in
flight on the prefetch thread."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import curated_run, write_recipe_file
from warmstart.stages import sft

WARMSTART = Path(sys.executable).with_name("warmstart")  # the console script of the venv running the tests
HOLD_S = 30.0  # how long the server holds a completion it does not answer at once
EXIT_BOUND_S = 8.0  # generous: the fix exits in well under 2 s; the old code waited out HOLD_S
SETTINGS = [
    "sft.steps=1",
    "grpo.init=base",
    "grpo.steps=3",
    "grpo.tasks_per_step=2",
    "grpo.group_size=2",
    "grpo.max_new_tokens=4",
    "grpo.max_refills=0",  # one completions request per step
    "grpo.mismatch_limit=1000",  # the fake log-probs are not the model's
]


class SlowServer(ThreadingHTTPServer):
    """An OpenAI-compatible rollout server for model "policy" taking full-weight updates (SGLang's
    endpoints) that answers its first `prompt_answers` completions at once and holds every later one for
    `HOLD_S` (`held` is set when one arrives)."""

    daemon_threads = True

    def __init__(self, prompt_answers: int):
        super().__init__(("127.0.0.1", 0), Handler)
        self.prompt_answers, self.weight_version = prompt_answers, None
        self.held = threading.Event()
        self.lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:
        pass  # the interrupted client goes away mid-request: no traceback on the test's output

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SlowServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/v1/models":
            return self.json({"object": "list", "data": [{"id": "policy", "object": "model", "created": 0}]})
        if self.path == "/get_model_info":
            return self.json({"weight_version": self.server.weight_version})
        self.json({"error": {"message": "not found"}}, 404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path == "/update_weights_from_disk":
            self.server.weight_version = body["weight_version"]
            return self.json({"success": True})
        with self.server.lock:
            hold = self.server.prompt_answers <= 0
            self.server.prompt_answers -= 1
        if hold:
            self.server.held.set()
            time.sleep(HOLD_S)
        self.json(completion(body))

    def json(self, obj: dict, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def completion(body: dict) -> dict:
    """A completion per prompt of `max_tokens` ids (cut by length), with their log-probs."""
    ids = [5] * body["max_tokens"]
    choices = [
        {
            "index": i,
            "text": "",
            "finish_reason": "length",
            "logprobs": {"tokens": [], "token_logprobs": [-1.0] * len(ids), "top_logprobs": None, "text_offset": []},
            "token_ids": ids,
        }
        for i in range(len(body["prompt"]))
    ]
    usage = {"prompt_tokens": 1, "completion_tokens": len(ids), "total_tokens": 1 + len(ids)}
    return {
        "id": "c",
        "object": "text_completion",
        "created": 0,
        "model": body["model"],
        "choices": choices,
        "usage": usage,
    }


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    """A run whose base model exists (the model GRPO starts from), as a recipe file."""
    root = tmp_path_factory.mktemp("grpo-interrupt")
    recipe = curated_run(root / "run", *SETTINGS)
    sft.run(recipe)  # builds models/base
    return write_recipe_file(root / "recipe.toml", recipe)


def interrupted(recipe_file: Path, server: SlowServer, *settings: str) -> tuple[float, str, int]:
    """`warmstart grpo` against `server`, sent SIGINT once the server holds a completion: the seconds from
    the signal to the process's exit, its stderr and exit status."""
    overrides = [f"grpo.rollout_server='openai:policy@{server.url}'", *settings]
    command = [str(WARMSTART), "grpo", str(recipe_file), *[a for o in overrides for a in ("--set", o)]]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert server.held.wait(timeout=180), "grpo never reached the held request"
        time.sleep(0.5)  # into its wait for the answer
        os.kill(process.pid, signal.SIGINT)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=HOLD_S + 30)
        return time.monotonic() - sent, stderr, process.returncode
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(
    ("mode", "prompt_answers", "settings"),
    [("sync", 0, []), ("async", 1, ["grpo.async=1"])],  # async: step 1's batch answered, step 2's held
)
def test_ctrl_c_stops_grpo_promptly_while_the_rollout_server_holds_requests(
    recipe_file, mode, prompt_answers, settings
):
    server = SlowServer(prompt_answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        seconds, stderr, status = interrupted(recipe_file, server, *settings)
    finally:
        server.shutdown()
        server.server_close()
    assert seconds < EXIT_BOUND_S, f"{mode}: exited {seconds:.1f} s after SIGINT (waited on the held requests)"
    # The CLI's interrupted exit (typer's: status 130, no message), with no traceback from an abandoned request.
    assert status == 130 and "Traceback" not in stderr, stderr
    manifest = json.loads((recipe_file.parent / "run" / "manifest.json").read_text())  # still whole
    assert manifest["stages"].get("grpo:student-grpo", {}).get("status") != "done"
