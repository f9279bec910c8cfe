"""The lean decoding step (lm/decode_step.py) against the model's own forward: greedy decoding equals
`generate`'s for every architecture it takes (GQA, Qwen2's biased projections), across the buffers'
growth and rows finishing in any order; every other model decodes through its forward, and says why."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from helpers import tiny_model
from warmstart.lm import decode_step, generation
from warmstart.lm.decode_step import LeanDecoder, lean_decoding_blocker
from warmstart.lm.generation import cache_argument, left_padded, left_padded_positions, sample_ids, sample_ids_pruned
from warmstart.types import Sampling

SHAPE = dict(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6)


def gqa_llama() -> LlamaForCausalLM:
    torch.manual_seed(1)
    return LlamaForCausalLM(LlamaConfig(**SHAPE, num_key_value_heads=2, pad_token_id=0)).eval()


def biased_qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(2)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPE, num_key_value_heads=3, pad_token_id=0)).eval()
    with torch.no_grad():  # Qwen2's q/k/v biases start at zero: make them count
        for layer in model.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                projection.bias.normal_(0, 0.5)
    return model


def prompts() -> list[list[int]]:
    """Unequal lengths (left padding) and a repeated prompt (one prefill, its cache copied to two rows)."""
    return [[5, 9, 11, 40], [7, 8], [5, 9, 11, 40], [60, 61, 62, 63, 64, 65, 66], [12]]


def stop_ids_for(model, new_tokens: int) -> list[int]:
    """Tokens greedy decoding reaches in some rows, none in its first two steps (a random model's greedy
    rows soon repeat one token: which rows stop, and when, depends on the model)."""
    out = sample_ids(model, 0, prompts(), Sampling(0.0, 1.0, new_tokens), [], 0)
    early = {t for row in out for t in row.completion_ids[:2]}
    return sorted({t for row in out for t in row.completion_ids} - early)[:3]


@pytest.mark.parametrize(
    "build", [gqa_llama, biased_qwen2, lambda: tiny_model()[0].eval()], ids=["gqa", "qwen2", "tiny"]
)
def test_greedy_lean_decoding_is_generate(build, monkeypatch):
    model = build()
    assert lean_decoding_blocker(model) is None
    steps = []
    monkeypatch.setattr(LeanDecoder, "step", record(LeanDecoder.step, steps))
    monkeypatch.setattr(decode_step, "ROOM_STEP", 3)  # the buffers grow several times in 40 tokens
    sampling = Sampling(0.0, 1.0, 40)
    stops = stop_ids_for(model, 40)
    ours = sample_ids_pruned(model, 0, prompts(), sampling, stops, 0)
    theirs = sample_ids(model, 0, prompts(), sampling, stops, 0)
    assert steps, "the lean step did not run"
    assert [(s.completion_ids, s.stopped) for s in ours] == [(s.completion_ids, s.stopped) for s in theirs]
    assert max(len(s.completion_ids) for s in ours) > 3  # past the first room: the buffers grew


@pytest.mark.parametrize("build", [gqa_llama, biased_qwen2], ids=["gqa", "qwen2"])
def test_lean_and_forward_decoding_give_the_same_samples_and_log_probs(build, monkeypatch):
    """Sampled (each row its own stream), rows stop at scattered steps: the lean step's rows move into
    finished rows' places and its buffers grow, and every row's tokens are still the forward's."""
    model = build()
    batch = prompts() * 3
    sampling, keys = Sampling(1.0, 1.0, 60), [f"k{i}" for i in range(len(batch))]
    stops = list(range(100, 110))  # a random model's next token is near uniform: rows stop early and late
    monkeypatch.setattr(decode_step, "ROOM_STEP", 3)
    lean = sample_ids_pruned(model, 0, batch, sampling, stops, 7, keys)
    monkeypatch.setattr(generation, "lean_decoding_blocker", lambda model: "forced")
    forward = sample_ids_pruned(model, 0, batch, sampling, stops, 7, keys)
    assert len({len(s.completion_ids) for s in lean}) > 5 and max(len(s.completion_ids) for s in lean) > 3
    assert [s.completion_ids for s in lean] == [s.completion_ids for s in forward]
    for a, b in zip(lean, forward):  # batched-matmul attention against SDPA's kernel: rounding only
        torch.testing.assert_close(a.logprobs, b.logprobs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-4), (torch.bfloat16, 0.1)], ids=["fp32", "bf16"])
def test_the_lean_steps_logits_are_the_forwards(dtype, atol):
    """Teacher-forced: each step's logits against the plain forward's over the whole left-padded
    sequences, in fp32 and in bf16. Weights 5x the default scale give logits up to ~2.6, so that an error
    shows: a rotary position off by one moves a logit by 0.94 (seen), bf16's rounding by 0.04."""
    torch.manual_seed(1)
    config = LlamaConfig(**SHAPE, num_key_value_heads=2, pad_token_id=0, initializer_range=0.1)
    model = LlamaForCausalLM(config).eval().to(dtype)
    continuation = torch.randint(3, 300, (len(prompts()), 6), generator=torch.Generator().manual_seed(0))
    ids, attention = left_padded([p + c.tolist() for p, c in zip(prompts(), continuation)], 0)
    prompt_ids, prompt_mask = left_padded(prompts(), 0)
    positions = left_padded_positions(prompt_mask)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=attention, position_ids=left_padded_positions(attention))
        cache = DynamicCache(config=model.config)
        prefill = dict(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True)
        model(**prefill, **cache_argument(model, cache))
        decoder = LeanDecoder(model, cache, torch.arange(len(prompts())), prompt_mask, 6)
        for j in range(6):  # continuation token j sits at column width - 6 + j of the whole sequences
            got = decoder.step(continuation[:, j], positions[:, -1:] + 1 + j)
            want = expected.logits[:, ids.shape[1] - 6 + j]
            torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=atol, msg=f"step {j}")


def test_models_the_lean_step_does_not_take_decode_through_their_forward(monkeypatch):
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(gqa_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    assert "not a plain linear layer" in lean_decoding_blocker(lora.get_base_model())
    assert "is not one of" in lean_decoding_blocker(lora)
    monkeypatch.setattr(LeanDecoder, "__init__", refuse)
    sampling = Sampling(0.0, 1.0, 12)
    ours = sample_ids_pruned(lora, 0, prompts(), sampling, [], 0)
    theirs = sample_ids(lora, 0, prompts(), sampling, [], 0)
    assert [s.completion_ids for s in ours] == [s.completion_ids for s in theirs]


def test_a_hooked_module_sends_decoding_through_the_forward():
    model = gqa_llama()
    handle = model.model.layers[1].mlp.down_proj.register_forward_hook(lambda module, args, out: out * 2)
    assert lean_decoding_blocker(model).startswith("a module's forward is hooked")
    handle.remove()
    assert lean_decoding_blocker(model) is None


def test_a_namesake_of_a_lean_architecture_is_refused():
    namesake = type("LlamaForCausalLM", (torch.nn.Module,), {})()  # e.g. remote code: not transformers' class
    assert lean_decoding_blocker(namesake).startswith("LlamaForCausalLM is not one of transformers'")


def test_sliding_window_and_biased_mlp_are_refused():
    qwen = Qwen2ForCausalLM(Qwen2Config(**SHAPE, use_sliding_window=True, sliding_window=4, max_window_layers=0))
    assert lean_decoding_blocker(qwen) == "it has sliding-window attention"
    llama = LlamaForCausalLM(LlamaConfig(**SHAPE, mlp_bias=True))
    assert lean_decoding_blocker(llama) == "its output or MLP projections have biases"


def record(step, calls: list):
    def recording(self, *args):
        calls.append(self.rows)
        return step(self, *args)

    return recording


def refuse(*args, **kwargs):
    raise AssertionError("the lean step was used for a model it does not take")
