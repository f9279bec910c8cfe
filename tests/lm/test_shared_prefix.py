"""Shared prefixes run once (lm/shared_prefix.py) against the plain forward: the same log-probs and gradients."""

from __future__ import annotations

import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from helpers import tiny_model
from warmstart.config import LoraSettings
from warmstart.lm.precision import enable_activation_checkpointing
from warmstart.lm.scoring import sequence_logprobs
from warmstart.lm.shared_prefix import PrefixPass, expand_to_rows, prefix_of_rows, shared_prefix_hidden
from warmstart.train import lora


def grouped_batch(vocab: int) -> tuple[dict, torch.Tensor]:
    """Two prompts (5 and 8 tokens) with three samples each of different lengths, right-padded; one of
    them multi-turn (a tool's tokens, unscored, between two scored turns); a row with nothing scored."""
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, vocab, (5,), generator=generator), torch.randint(4, vocab, (8,), generator=generator)]
    rows, scored_spans = [], []
    for prompt, lengths in zip(prompts, [(3, 9, 6), (4, 2, 11)]):
        for length in lengths:
            rows.append(torch.cat([prompt, torch.randint(4, vocab, (length,), generator=generator)]))
            scored_spans.append([(len(prompt) - 1, len(prompt) - 1 + length)])  # position t scores token t+1
    scored_spans[1] = [(4, 7), (10, 13)]  # turn, tool output, turn
    rows.append(torch.randint(4, vocab, (7,), generator=generator))  # an infra error: nothing scored
    scored_spans.append([])
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    scored = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    for index, (row, spans) in enumerate(zip(rows, scored_spans)):
        ids[index, : len(row)] = row
        for start, end in spans:
            scored[index, start:end] = True
    return {"input_ids": ids}, scored


def logprobs_and_gradients(model, batch, scored, share: bool):
    model.zero_grad()
    weights = torch.linspace(0.5, 2.0, scored.numel()).reshape(scored.shape)  # any loss over the scored tokens
    logp = sequence_logprobs(model, batch, scored, share_prefixes=share)
    (logp * weights).sum().backward()
    return logp.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def chunked_logprobs_and_gradients(model, batch, scored, chunks: list[list[int]]):
    """As GRPO's update runs them: the batch's prefixes once (PrefixPass), each chunk of rows on top of
    them with its own backward, then the prefixes' backward."""
    model.zero_grad()
    weights = torch.linspace(0.5, 2.0, scored.numel()).reshape(scored.shape)
    prefix_pass = PrefixPass.start(model, batch["input_ids"], scored, list(range(len(scored))))
    assert prefix_pass is not None
    logp = torch.zeros(scored.shape)
    for rows in chunks:
        index = torch.tensor(rows)
        chunk = {"input_ids": batch["input_ids"][index], "rows": index}
        part = sequence_logprobs(model, chunk, scored[index], prefix_pass=prefix_pass)
        (part * weights[index]).sum().backward()
        logp[index] = part.detach()
    prefix_pass.backward()
    return logp, [p.grad.clone() for p in model.parameters() if p.grad is not None]


def assert_sharing_changes_nothing(model, batch, scored):
    plain, plain_grads = logprobs_and_gradients(model, batch, scored, share=False)
    shared, shared_grads = logprobs_and_gradients(model, batch, scored, share=True)
    chunked, chunked_grads = chunked_logprobs_and_gradients(model, batch, scored, [[0, 3, 6], [1, 4], [2, 5]])
    for logp, grads in ((shared, shared_grads), (chunked, chunked_grads)):
        torch.testing.assert_close(logp, plain, rtol=1e-5, atol=1e-5)
        assert (logp[~scored] == 0).all()
        assert len(grads) == len(plain_grads) > 0
        for a, b in zip(grads, plain_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_shared_prompts_give_the_plain_forward_log_probs_and_gradients():
    model, _ = tiny_model()
    batch, scored = grouped_batch(model.config.vocab_size)
    assert_sharing_changes_nothing(model, batch, scored)


def test_each_distinct_prefix_runs_once():
    model, _ = tiny_model()
    batch, scored = grouped_batch(model.config.vocab_size)
    calls = []
    decoder = model.get_decoder()
    forward = decoder.forward

    def recording(*args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    decoder.forward = recording
    sequence_logprobs(model, batch, scored)
    # The prefixes (2 prompts, left-padded to the longer one's 7 tokens before its first scored position),
    # then the 6 scored rows' suffixes; the unscored row is not run.
    assert calls[0] == (2, 7)
    assert calls[1][0] == 6 and len(calls) == 2


def test_grouped_query_attention_and_a_lora_adapter():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    batch, scored = grouped_batch(config.vocab_size)
    assert_sharing_changes_nothing(model, batch, scored)
    adapted = lora.wrap(model, LoraSettings(r=4, alpha=8.0), "grpo.lora")
    for name, p in adapted.named_parameters():  # peft starts B at zero: move it so the adapter counts
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    assert_sharing_changes_nothing(adapted, batch, scored)


def test_rows_that_share_nothing_take_the_plain_forward():
    ids = torch.tensor([[5, 6, 7, 8], [5, 9, 7, 8], [4, 6, 7, 8]])
    scored = torch.zeros((3, 3), dtype=torch.bool)
    scored[:, 2] = True  # prefixes [5, 6], [5, 9], [4, 6]: all distinct
    assert prefix_of_rows(ids, scored) is None
    scored[:, 1:] = True  # prefixes [5], [5], [4]: rows 0 and 1 share one
    assert prefix_of_rows(ids, scored) == ([0, 1, 2], [0, 0, 1], [[5], [4]])
    scored[2, 0] = True  # a row scored from its first position has no prefix: nothing is shared
    assert prefix_of_rows(ids, scored) is None


def test_a_sliding_window_shorter_than_the_prompts():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=4,
    )  # fmt: skip
    model = MistralForCausalLM(config)
    batch, scored = grouped_batch(config.vocab_size)
    assert_sharing_changes_nothing(model, batch, scored)


def test_expanding_the_cache_sums_the_sharers_gradients_in_row_order():
    """The backward of the prefix cache's expansion adds each prefix's rows in their order, every run: an
    index (`x[idx]`) accumulates repeated rows in parallel on the CPU, in no fixed order, so GRPO's
    updates differed at rounding level from run to run. The gradient reaches it as attention gives it: a
    slice of the gradient of the prefix's K/V concatenated with the suffix's (not contiguous)."""
    generator = torch.Generator().manual_seed(0)
    prefixes, rows = 64, 4096
    which = torch.randint(0, prefixes, (rows,), generator=generator)
    keys = torch.randn(prefixes, 2, 3, 8, generator=generator, requires_grad=True)
    values = torch.randn(prefixes, 2, 3, 8, generator=generator, requires_grad=True)
    upstream = torch.randn(rows, 2, 5, 8, generator=generator) * 10.0 ** torch.randint(-4, 4, (rows, 1, 1, 1))
    cache = DynamicCache()
    cache.update(keys, values, 0)
    expand_to_rows(cache, which)
    assert cache.layers[0].keys.shape == (rows, 2, 3, 8)
    suffix = torch.zeros(rows, 2, 2, 8)
    both = torch.cat([cache.layers[0].keys + cache.layers[0].values, suffix], dim=2)
    (both * upstream).sum().backward()
    in_order = torch.zeros_like(keys)
    for row, prefix in enumerate(which.tolist()):
        in_order[prefix] += upstream[row, :, :3]
    assert torch.equal(keys.grad, in_order)
    assert torch.equal(values.grad, in_order)


def test_gradient_checkpointing_takes_the_plain_forward():
    """With activations recomputed in the backward (grpo.gradient_checkpointing), sequence_logprobs
    gives the plain forward's log-probs and gradients: its layers drop the KV cache a shared prefix would
    be kept in, so nothing is shared (sharing crashed on the empty cache before)."""
    model, _ = tiny_model()
    enable_activation_checkpointing(model)
    model.train()
    batch, scored = grouped_batch(model.config.vocab_size)
    plain, plain_grads = logprobs_and_gradients(model, batch, scored, share=False)
    shared, shared_grads = logprobs_and_gradients(model, batch, scored, share=True)
    assert PrefixPass.start(model, batch["input_ids"], scored, list(range(len(scored)))) is None
    assert torch.equal(shared, plain)
    assert all(torch.equal(a, b) for a, b in zip(shared_grads, plain_grads))


def test_a_prefix_pass_larger_than_its_budget_is_not_started():
    """The batch's prefixes live through every chunk: beyond the tokens the caller's memory allows
    (2 prompts left-padded to 7 tokens here: 14) the update runs each chunk's own instead."""
    model, _ = tiny_model()
    batch, scored = grouped_batch(model.config.vocab_size)
    rows = list(range(len(scored)))
    assert PrefixPass.start(model, batch["input_ids"], scored, rows, max_tokens=13) is None
    assert PrefixPass.start(model, batch["input_ids"], scored, rows, max_tokens=14) is not None


def test_a_model_that_drops_its_cache_under_checkpointing_without_gradients_runs_the_plain_forward():
    """GPT-2 under gradient checkpointing drops the KV cache in training mode even with gradients off (GRPO's
    old log-probs pass), where Llama's layers keep it: the prefix pass had crashed reading the empty cache."""
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=50, bos_token_id=0, eos_token_id=0))
    model.gradient_checkpointing_enable()
    model.train()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 8, 9]])
    scored = torch.zeros(2, 5, dtype=torch.bool)
    scored[:, 3:] = True
    with torch.no_grad():
        assert shared_prefix_hidden(model, ids, scored) is None
        assert PrefixPass.start(model, ids, scored, [0, 1]) is None
