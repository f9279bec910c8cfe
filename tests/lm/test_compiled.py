"""`sft.compile` / `grpo.compile` (lm/compiled.py): the same training and sampling as eager, checkpoints
in the ordinary format, and a backend that fails is one warning and an eager run.

Compiling on CPU takes tens of seconds per graph: the models are tiny, the steps few."""

from __future__ import annotations

import logging
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import curated_run
from warmstart.config import SftConfig, TinyModelConfig
from warmstart.lm.compiled import compile_decoder, is_compiled
from warmstart.lm.generation import sample_ids_pruned
from warmstart.lm.tinymodel import build_tiny_llama, train_tokenizer
from warmstart.stages import sft
from warmstart.train.data import Example
from warmstart.train.sft import RowStream, make_optimizer, train_step
from warmstart.types import Sampling

SHAPE = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=300)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compiled code is cached per code object, across models: each test starts with none."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["user\nWhat is 12+3?", "assistant\n2+3=5 carry 0, so far 5\nAnswer: 15"] * 20, 300)


def tiny(tokenizer):
    return build_tiny_llama(tokenizer, SHAPE, seed=0)


def examples(tokenizer) -> list[Example]:
    """Rows of different lengths: micro-batches of different widths, as in a real run."""
    rng = random.Random(0)
    out = []
    for n in (9, 23, 14, 30, 7, 18, 26, 11):
        out.append(Example([rng.randrange(5, len(tokenizer)) for _ in range(n)], [0] * (n // 2) + [1] * (n - n // 2)))
    return out


def sft_steps(model, tokenizer, steps: int, precision: str = "fp32") -> list[float]:
    cfg = SftConfig(
        seq_len=64, rows_per_micro_batch=2, kd_weight=0.0, lr=1e-3, warmup_steps=0, steps=steps, precision=precision
    )
    torch.manual_seed(0)
    optimizer, scheduler = make_optimizer(model, cfg)
    stream, losses = RowStream(examples(tokenizer), cfg, seed=0), []
    model.train()
    for _ in range(steps):
        losses.append(train_step(model, optimizer, stream, cfg, tokenizer.pad_token_id)[0])
        scheduler.step()
    return losses


def test_sft_steps_compiled_equal_eager_and_save_the_ordinary_checkpoint(tokenizer, tmp_path, caplog):
    eager, compiled = tiny(tokenizer), tiny(tokenizer)
    keys = list(compiled.state_dict())
    with caplog.at_level(logging.WARNING):
        compile_decoder(compiled, True, "sft.compile")
        eager_losses, compiled_losses = sft_steps(eager, tokenizer, 3), sft_steps(compiled, tokenizer, 3)
    assert is_compiled(compiled) and not caplog.records  # compiled indeed, not a silent fallback
    # Inductor fuses and reorders fp32 reductions (norms, softmax, matmul splits): gradients differ by
    # ~1e-6 relative. AdamW's step (m / sqrt(v)) is scale-free, so a weight moves ~lr x that differently:
    # seen 1.5e-6 after 3 steps at lr 1e-3. atol 1e-4 = lr / 10 admits float noise and catches a real
    # difference: a gradient computed otherwise moves a weight by ~lr, or ~2 lr when its sign flips.
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-4, atol=1e-5)
    for name, weight in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[name], weight, rtol=0, atol=1e-4, msg=name)
    # The model is compiled in place: same keys (no `_orig_mod.`), and from_pretrained reads it back.
    assert list(compiled.state_dict()) == keys
    compiled.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    for name, weight in compiled.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], weight), name


def test_bf16_sft_steps_compiled_trace_the_decoder_once_and_train_as_eager_bf16(tokenizer):
    """Under CPU bf16 autocast warmstart routes linear layers and attention through its own autograd
    Functions (lm/precision.py), whose kept weight casts are Python state that changes every call: traced,
    Dynamo recompiled them per call up to its limit (8), then ran them eager with a multi-line warning.
    Inside a compiled graph the route stands aside and the graph runs plain autocast's ops."""
    graphs = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    eager, compiled = tiny(tokenizer), tiny(tokenizer)
    compile_decoder(compiled, True, "sft.compile", backend=counting)
    steps = 6  # micro-batches of several widths (examples()): symbolic shapes, one graph for all
    eager_losses, compiled_losses = (
        sft_steps(eager, tokenizer, steps, "bf16"),
        sft_steps(compiled, tokenizer, steps, "bf16"),
    )
    assert is_compiled(compiled)
    # The whole decoder in one graph (~200 nodes for 2 layers), as in fp32. Before: 34 fragments of 1-33 nodes.
    assert [len(g.graph.nodes) > 100 for g in graphs].count(True) == 1, [len(g.graph.nodes) for g in graphs]
    # The same bf16 products in another order (autocast's kernels, not Bf16Linear's layouts): losses agree to
    # bf16 rounding.
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=2e-3, atol=0)


def prompts(tokenizer) -> list[list[int]]:
    rng = random.Random(1)
    return [[rng.randrange(5, len(tokenizer)) for _ in range(n)] for n in (5, 9, 7, 12)]


def test_greedy_sampling_compiled_equals_eager(tokenizer):
    eager, compiled = tiny(tokenizer).eval(), tiny(tokenizer).eval()
    compile_decoder(compiled, True, "grpo.compile")
    greedy, stop = Sampling(temperature=0.0, max_new_tokens=8), [tokenizer.eos_token_id]
    expected = sample_ids_pruned(eager, tokenizer.pad_token_id, prompts(tokenizer), greedy, stop, seed=0)
    got = sample_ids_pruned(compiled, tokenizer.pad_token_id, prompts(tokenizer), greedy, stop, seed=0)
    assert is_compiled(compiled)
    assert [s.completion_ids for s in got] == [s.completion_ids for s in expected]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.logprobs, e.logprobs, rtol=1e-4, atol=1e-5)


def failing_backend(graph, example_inputs):
    raise RuntimeError("no C++ compiler here\nsecond line of the report")


def one_warning(caplog, key: str) -> str:
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert message.startswith(f"{key}: torch.compile failed") and "\n" not in message
    return message


def test_a_backend_failing_at_the_first_call_runs_eager_with_one_warning(tokenizer, caplog):
    eager, model = tiny(tokenizer).eval(), tiny(tokenizer).eval()
    compile_decoder(model, True, "grpo.compile", backend=failing_backend)
    ids = torch.tensor([prompts(tokenizer)[1]])
    with caplog.at_level(logging.WARNING):
        first, second = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert "no C++ compiler here" in one_warning(caplog, "grpo.compile")
    assert not is_compiled(model)
    expected = eager(input_ids=ids).logits
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_a_backend_failing_at_a_later_graph_runs_eager_from_then_on_with_one_warning(tokenizer, caplog):
    """GRPO's first decoder call samples without gradients; its update's first call, with them, compiles a
    second graph: a backend that fails only there falls back as one failing at the first call does."""
    graphs = []

    def fails_on_the_second_graph(graph, example_inputs):
        graphs.append(graph)
        if len(graphs) > 1:
            raise RuntimeError("lowering not supported for this graph")
        return graph.forward

    eager, model = tiny(tokenizer), tiny(tokenizer)
    compile_decoder(model, True, "grpo.compile", backend=fails_on_the_second_graph)
    ids = torch.tensor([prompts(tokenizer)[1]])
    with caplog.at_level(logging.WARNING):
        with torch.no_grad():
            sampled = model(input_ids=ids).logits
        assert is_compiled(model) and not [r for r in caplog.records if r.levelno >= logging.WARNING]  # ran compiled
        trained = model(input_ids=ids).logits
        trained.sum().backward()
    assert "lowering not supported" in one_warning(caplog, "grpo.compile")
    assert not is_compiled(model) and len(graphs) == 2
    expected = eager(input_ids=ids).logits
    expected.sum().backward()
    assert torch.equal(sampled, expected.detach()) and torch.equal(trained, expected)
    for ours, theirs in zip(model.parameters(), eager.parameters()):
        assert torch.equal(ours.grad, theirs.grad)


def test_torch_compile_raising_up_front_runs_eager_with_one_warning(tokenizer, caplog, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Windows not yet supported for torch.compile")

    monkeypatch.setattr(torch, "compile", refuse)
    model = tiny(tokenizer)
    with caplog.at_level(logging.WARNING):
        assert compile_decoder(model, True, "sft.compile") is model
    assert "Windows not yet supported" in one_warning(caplog, "sft.compile")
    assert not is_compiled(model)
    assert sft_steps(model, tokenizer, 1)[0] > 0


def test_an_unknown_backend_runs_eager_with_one_warning(tokenizer, caplog):
    model = tiny(tokenizer)
    with caplog.at_level(logging.WARNING):
        compile_decoder(model, True, "sft.compile", backend="no-such-backend")
        model(input_ids=torch.tensor([prompts(tokenizer)[0]]))
    one_warning(caplog, "sft.compile")
    assert not is_compiled(model)


def test_off_leaves_the_model_alone(tokenizer):
    model = tiny(tokenizer)
    assert compile_decoder(model, False, "sft.compile") is model
    assert not is_compiled(model) and "forward" not in model.get_decoder().__dict__


def test_turning_compile_on_keeps_a_finished_sft_done(tmp_path, monkeypatch):
    """compile changes speed, not results: it is left out of the stage's fingerprint."""
    recipe = curated_run(tmp_path, "sft.steps=2", train=20)
    sft.run(recipe)
    monkeypatch.setattr(sft, "train", lambda *a, **k: pytest.fail("the finished stage trained again"))
    sft.run(recipe.model_copy(update={"sft": recipe.sft.model_copy(update={"compile": True})}))
