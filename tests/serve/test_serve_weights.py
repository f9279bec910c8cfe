"""Full-weight reload (`warmstart serve --enable-weight-updates`, SGLang's /update_weights_from_disk and
/get_model_info): a real server process; what it serves after a reload is what the reloaded directory
gives loaded on its own, and a directory that does not fit changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from serve_helpers import greedy, http, metric, running_server, scrape
from transformers import AutoConfig, AutoModelForCausalLM

SENTENCE = "what is 3 plus 4? the answer is"


@pytest.fixture(scope="module")
def base_url(model_dir, tmp_path_factory):
    with running_server(model_dir, tmp_path_factory.mktemp("serve-weights-log"), "--enable-weight-updates") as url:
        yield url


def root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


def update(base_url: str, body: dict) -> tuple[int, dict]:
    status, _, data = http("POST", root(base_url) + "/update_weights_from_disk", body)
    return status, json.loads(data)


def info(base_url: str) -> dict:
    status, _, data = http("GET", root(base_url) + "/get_model_info")
    assert status == 200
    return json.loads(data)


def served_greedy(client, prompt: list[int]) -> list[int]:
    choice = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=12, temperature=0, extra_body={"return_token_ids": True}
    ).choices[0]
    return choice.model_extra["token_ids"]


@pytest.fixture
def restore(base_url, model_dir):
    """Each test leaves the server as it found it: the served directory's weights, version "0"."""
    yield
    assert update(base_url, {"model_path": str(model_dir), "weight_version": "0"})[0] == 200


def perturbed_copy(model_dir: Path, out: Path) -> Path:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    model.save_pretrained(out)
    return out


def test_reloaded_weights_are_served_as_that_model_gives_them(
    client, base_url, model_dir, tokenizer, tmp_path, restore
):
    assert info(base_url) == {"model_path": str(model_dir), "weight_version": "0", "is_generation": True}
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    before = served_greedy(client, prompt)
    other = perturbed_copy(model_dir, tmp_path / "perturbed")
    status, answer = update(base_url, {"model_path": str(other), "weight_version": "step-1"})
    assert status == 200 and answer["success"] is True and answer["weight_version"] == "step-1", answer
    expected = greedy(AutoModelForCausalLM.from_pretrained(other, dtype="float32").eval(), tokenizer, prompt, 12)
    after = served_greedy(client, prompt)
    assert after == expected and after != before
    assert info(base_url)["model_path"] == str(other) and info(base_url)["weight_version"] == "step-1"
    # without a weight_version the last one stays, as SGLang keeps it
    assert update(base_url, {"model_path": str(model_dir)})[1]["weight_version"] == "step-1"
    assert served_greedy(client, prompt) == before


def _wider(model_dir: Path, out: Path) -> Path:
    config = AutoConfig.from_pretrained(model_dir)
    config.hidden_size, config.intermediate_size = 48, 96
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out


def test_directories_that_do_not_fit_leave_the_old_weights(client, base_url, model_dir, tokenizer, tmp_path):
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    before, state, counted = served_greedy(client, prompt), info(base_url), scrape(base_url)
    (tmp_path / "empty").mkdir()
    cases = [
        (_wider(model_dir, tmp_path / "wider"), "does not match the served model"),
        (tmp_path / "absent", "no directory at"),
        (tmp_path / "empty", "cannot load a model from"),
    ]
    for path, why in cases:
        status, answer = update(base_url, {"model_path": str(path), "weight_version": "bad"})
        assert status == 400 and answer["success"] is False and why in answer["message"], answer
    status, answer = update(base_url, {"weight_version": "bad"})
    assert status == 400 and answer["success"] is False and "model_path" in answer["message"]
    assert served_greedy(client, prompt) == before and info(base_url) == state
    updates = "warmstart_weight_updates_total"
    assert metric(scrape(base_url), updates, result="error") - metric(counted, updates, result="error") == 4
    assert metric(scrape(base_url), updates, result="ok") == metric(counted, updates, result="ok")


def test_a_directory_whose_weights_file_is_corrupt_is_a_400_and_changes_nothing(
    client, base_url, model_dir, tokenizer, tmp_path
):
    # A checkpoint cut short as it was written (a full disk, a copy interrupted): safetensors' own error,
    # which was a 500 in OpenAI's shape, not SGLang's refusal, and was not counted as a failed update.
    corrupt = tmp_path / "corrupt"
    shutil.copytree(model_dir, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    before, counted = served_greedy(client, prompt), scrape(base_url)
    status, answer = update(base_url, {"model_path": str(corrupt)})
    assert status == 400 and answer["success"] is False, answer
    assert "cannot load a model from" in answer["message"]
    assert served_greedy(client, prompt) == before
    updates = "warmstart_weight_updates_total"
    assert metric(scrape(base_url), updates, result="error") - metric(counted, updates, result="error") == 1


def _untied(model_dir: Path, out: Path) -> Path:
    """The same architecture with its own lm_head: the served model ties it to the embedding, one tensor."""
    config = AutoConfig.from_pretrained(model_dir)
    config.tie_word_embeddings = False
    model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype="float32")
    with torch.no_grad():
        model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(5)))
    model.save_pretrained(out)
    return out


def _with_nan(model_dir: Path, out: Path) -> Path:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    model.save_pretrained(out)
    return out


def test_untied_or_non_finite_weights_are_refused_and_change_nothing(client, base_url, model_dir, tokenizer, tmp_path):
    # Both were {"success": true}: the untied lm_head and the embedding were copied into the one tied tensor
    # (the last copy won, wrong log-probs from then on), and a NaN gave NaN log-probs, written as invalid JSON.
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    before, state = served_greedy(client, prompt), info(base_url)
    cases = [
        (_untied(model_dir, tmp_path / "untied"), "unties"),
        (_with_nan(model_dir, tmp_path / "nan"), "non-finite"),
    ]
    for path, why in cases:
        status, answer = update(base_url, {"model_path": str(path), "weight_version": "bad"})
        assert status == 400 and answer["success"] is False and why in answer["message"], answer
    assert served_greedy(client, prompt) == before and info(base_url) == state
