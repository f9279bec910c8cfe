"""Runtime LoRA adapters (`warmstart serve --enable-lora`, vLLM's /v1/load_lora_adapter and
/v1/unload_lora_adapter): a real server process, adapters written by peft's save_pretrained, and what
each serves checked against peft's merged model (`merge_and_unload`) in this process."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from serve_helpers import chosen_logprobs, greedy, http, metric, running_server, scrape
from transformers import AutoConfig, AutoModelForCausalLM

from warmstart.lm.chat import render_prompt
from warmstart.types import Message

SENTENCE = "what is 3 plus 4? the answer is"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IDS = {"return_token_ids": True}


@pytest.fixture(scope="module")
def base_url(model_dir, tmp_path_factory):
    with running_server(model_dir, tmp_path_factory.mktemp("serve-lora-log"), "--enable-lora") as url:
        yield url


def save_adapter(base, out: Path, seed: int, **settings) -> Path:
    """An adapter of `base` whose B matrices (peft starts them at zero) are random, so that it changes the output."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=ALL_LINEAR, task_type="CAUSAL_LM", **settings)
    wrapped = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    wrapped.save_pretrained(out)
    return out


def load_base(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()


@pytest.fixture(scope="module")
def base(model_dir):
    return load_base(model_dir)


@pytest.fixture(scope="module")
def adapters(model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "plain": save_adapter(load_base(model_dir), root / "plain", seed=1),
        # rsLoRA and a per-module alpha: the scale each layer gets must be peft's
        "scaled": save_adapter(
            load_base(model_dir), root / "scaled", seed=2, use_rslora=True, alpha_pattern={"v_proj": 32}
        ),
    }


def merged(model_dir, adapter: Path):
    return PeftModel.from_pretrained(load_base(model_dir), adapter).merge_and_unload().eval()


def post(base_url: str, path: str, body: dict) -> tuple[int, str]:
    status, _, data = http("POST", base_url.removesuffix("/v1") + path, body)
    return status, data.decode()


def load(base_url: str, name: str, path) -> tuple[int, str]:
    return post(base_url, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})


def unload(base_url: str, name: str) -> tuple[int, str]:
    return post(base_url, "/v1/unload_lora_adapter", {"lora_name": name})


def complete(client, model: str, prompt: list[int], max_tokens: int = 12):
    choice = client.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, logprobs=0, extra_body=IDS
    ).choices[0]
    return choice.model_extra["token_ids"], choice.logprobs.token_logprobs


@pytest.mark.parametrize("name", ["plain", "scaled"])
def test_an_adapter_serves_what_the_merged_model_gives(client, base_url, model_dir, base, tokenizer, adapters, name):
    status, text = load(base_url, name, adapters[name])
    assert status == 200 and name in text
    try:
        listed = {m.id: m for m in client.models.list()}
        assert listed[name].model_extra["parent"] == "tiny" and listed[name].model_extra["root"] == str(adapters[name])
        assert listed["tiny"].model_extra["parent"] is None
        assert client.models.retrieve(name).model_extra["root"] == str(adapters[name])
        prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
        reference = merged(model_dir, adapters[name])
        ids, logprobs = complete(client, name, prompt)
        assert ids == greedy(reference, tokenizer, prompt, 12)
        assert logprobs == pytest.approx(chosen_logprobs(reference, prompt + ids, len(prompt)), abs=1e-4)
        base_ids, base_logprobs = complete(client, "tiny", prompt)
        assert base_ids == greedy(base, tokenizer, prompt, 12) and base_ids != ids
        assert base_logprobs == pytest.approx(chosen_logprobs(base, prompt + base_ids, len(prompt)), abs=1e-4)
        # chat too: the response names the adapter, and its turn is the merged model's
        chat = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0, extra_body=IDS
        )
        chat_prompt = tokenizer(
            render_prompt(tokenizer, [Message(role="user", content="hi")]), add_special_tokens=False
        )
        assert chat.model == name
        assert chat.choices[0].model_extra["token_ids"] == greedy(reference, tokenizer, chat_prompt["input_ids"], 8)
    finally:
        assert unload(base_url, name)[0] == 200


def test_unloading_makes_the_name_unknown(client, base_url, adapters):
    assert load(base_url, "gone", adapters["plain"])[0] == 200
    status, text = unload(base_url, "gone")
    assert status == 200 and "gone" in text
    assert [m.id for m in client.models.list()] == ["tiny"]
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gone", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert caught.value.code == "model_not_found"
    status, text = unload(base_url, "gone")
    assert status == 404 and json.loads(text)["error"]["code"] == "model_not_found"


def _other_shapes(model_dir, out: Path) -> Path:
    config = AutoConfig.from_pretrained(model_dir)
    config.hidden_size, config.intermediate_size = 48, 96
    return save_adapter(AutoModelForCausalLM.from_config(config), out, seed=3)


def _renamed(adapter: Path, out: Path) -> Path:
    """The adapter with its first layer's weights moved to a layer the base model does not have."""
    out.mkdir()
    (out / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    tensors = load_file(adapter / "adapter_model.safetensors")
    save_file({k.replace("layers.0.", "layers.9."): v for k, v in tensors.items()}, out / "adapter_model.safetensors")
    return out


def test_adapters_that_cannot_be_served_are_400_and_serving_goes_on(
    client, base_url, model_dir, tokenizer, adapters, tmp_path
):
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    before, counted = complete(client, "tiny", prompt), scrape(base_url)
    (tmp_path / "empty").mkdir()
    assert load(base_url, "kept", adapters["plain"])[0] == 200
    kept = complete(client, "kept", prompt)
    cases = [
        ("kept", adapters["scaled"], "already a served model"),
        ("tiny", adapters["plain"], "is the base model's name"),
        ("x", tmp_path / "absent", "no directory at"),
        ("x", tmp_path / "empty", "not a peft adapter: it has no adapter_config.json"),
        ("x", _other_shapes(model_dir, tmp_path / "wide"), "does not fit the base model"),
        ("x", _renamed(adapters["plain"], tmp_path / "renamed"), "not a linear layer of it"),
    ]
    for name, path, why in cases:
        status, text = load(base_url, name, path)
        error = json.loads(text)["error"]
        assert status == 400 and why in error["message"] and error["type"] == "invalid_request_error", text
    status, text = post(base_url, "/v1/load_lora_adapter", {"lora_name": "x"})
    assert status == 400 and "lora_path" in text
    assert [m.id for m in client.models.list()] == ["tiny", "kept"]
    assert complete(client, "tiny", prompt) == before and complete(client, "kept", prompt) == kept
    now = scrape(base_url)
    for result, count in [("ok", 1), ("error", len(cases))]:
        loads = "warmstart_adapter_loads_total"
        assert metric(now, loads, result=result) - metric(counted, loads, result=result) == count
    assert unload(base_url, "kept")[0] == 200


def test_loading_while_requests_run_breaks_none(client, base_url, base, tokenizer, adapters):
    prompts = [tokenizer(f"what is {i} plus 2?", add_special_tokens=False)["input_ids"] for i in range(6)]
    with ThreadPoolExecutor(7) as pool:
        # long enough to take several slices, base and adapter rows alternating between them
        running = [pool.submit(complete, client, "tiny", p, 200) for p in prompts]
        while metric(scrape(base_url), "warmstart_rows_running") == 0:  # the load comes while they run
            assert not all(f.done() for f in running), "the requests ended before any was seen running"
        loaded = pool.submit(load, base_url, "late", adapters["plain"])
        assert loaded.result()[0] == 200
        late = [pool.submit(complete, client, "late", p, 70) for p in prompts[:2]]
        results = [f.result() for f in running]
        late_results = [f.result() for f in late]
    for prompt, (ids, logprobs) in zip(prompts, results):
        assert ids == greedy(base, tokenizer, prompt, 200)
    for prompt, (ids, _) in zip(prompts, late_results):
        assert ids != greedy(base, tokenizer, prompt, 70)
    assert unload(base_url, "late")[0] == 200


def test_load_inplace_replaces_a_loaded_adapter(client, base_url, model_dir, tokenizer, adapters):
    prompt = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    assert load(base_url, "policy", adapters["plain"])[0] == 200
    body = {"lora_name": "policy", "lora_path": str(adapters["scaled"]), "load_inplace": True}
    assert post(base_url, "/v1/load_lora_adapter", body)[0] == 200
    assert [m.id for m in client.models.list()] == ["tiny", "policy"]
    assert client.models.retrieve("policy").model_extra["root"] == str(adapters["scaled"])
    ids, _ = complete(client, "policy", prompt)
    assert ids == greedy(merged(model_dir, adapters["scaled"]), tokenizer, prompt, 12)
    refused = post(base_url, "/v1/load_lora_adapter", {**body, "lora_name": "tiny"})  # never the base
    assert refused[0] == 400 and "is the base model's name" in refused[1] and "load_inplace" not in refused[1]
    assert unload(base_url, "policy")[0] == 200


def _broken(adapter: Path, out: Path, config: dict | None = None, tensors=None, data: bytes | None = None) -> Path:
    """A copy of `adapter` with its config changed, its tensors replaced (a function of each), or its
    weights file overwritten with `data`."""
    shutil.copytree(adapter, out)
    if config is not None:
        settings = json.loads((out / "adapter_config.json").read_text())
        (out / "adapter_config.json").write_text(json.dumps({**settings, **config}))
    if tensors is not None:
        weights = load_file(adapter / "adapter_model.safetensors")
        save_file({k: tensors(k, v) for k, v in weights.items()}, out / "adapter_model.safetensors")
    if data is not None:
        (out / "adapter_model.safetensors").write_bytes(data)
    return out


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ({"data": b""}, "cannot be read: SafetensorError"),
        ({"data": b"\x00" * 64}, "cannot be read: SafetensorError"),
        ({"config": {"lora_alpha": "eight"}}, "must be a number, got 'eight'"),
        ({"config": {"lora_alpha": None}}, "must be a number, got None"),
        ({"config": {"alpha_pattern": {"v_proj(": 16}}}, "is not a regular expression"),
        ({"tensors": lambda k, v: v[:0] if "lora_A" in k else v[:, :0]}, "does not fit the base model"),  # rank 0
        ({"tensors": lambda k, v: torch.tensor(1.0)}, "does not fit the base model"),
        ({"tensors": lambda k, v: torch.full_like(v, float("nan"))}, "not all finite"),
    ],
    ids=["empty-file", "corrupt-file", "alpha-text", "alpha-null", "bad-pattern", "rank-0", "scalars", "nan"],
)
def test_an_adapter_with_broken_files_or_config_is_a_400(client, base_url, adapters, tmp_path, broken, why):
    # Each was a 500 that quoted the server's own exception (ZeroDivisionError, IndexError, re.error, ...),
    # not counted as a failed load; the NaN one loaded and served NaN log-probs.
    counted = scrape(base_url)
    status, text = load(base_url, "broken", _broken(adapters["plain"], tmp_path / "broken", **broken))
    error = json.loads(text)["error"]
    assert status == 400 and why in error["message"] and error["param"] == "lora_path", text
    assert "broken" not in [m.id for m in client.models.list()]
    loads = "warmstart_adapter_loads_total"
    assert metric(scrape(base_url), loads, result="error") - metric(counted, loads, result="error") == 1
