"""A user's student whose tables are smaller than the data needs: a learned position table (GPT-2's) shorter
than sft.seq_len, a tokenizer with tokens the embedding has no row for. Each is handled before training
(padding kept in range, examples beyond the table dropped and said, one error), never an IndexError mid-step."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from warmstart.errors import WarmstartError
from warmstart.lm.models import check_ids_embedded, learned_position_limit
from warmstart.lm.tinymodel import train_tokenizer
from warmstart.train.data import BEYOND_POSITIONS, TOO_LONG, Example, collate, tokenize
from warmstart.train.sft import masked_ce_sum
from warmstart.types import Message, Provenance, Trajectory


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=40))


def test_padding_beside_a_long_row_stays_inside_a_learned_position_table(gpt2):
    examples = [
        Example(list(range(5, 35)), [1] * 30),
        Example(list(range(5, 35)), [1] * 30),
        Example([5] * 10, [1] * 10),
    ]
    batch = collate([[0, 1], [2]], examples, 60, 0)  # every example fits in 40 positions, the rows do not
    assert batch["position_ids"].max() < 40
    assert torch.isfinite(masked_ce_sum(gpt2, batch))


def test_padding_positions_leave_the_examples_positions_as_they_were():
    examples = [Example([7] * 5, [1] * 5), Example([8] * 3, [1] * 3)]
    positions = collate([[0, 1]], examples, 12, 0)["position_ids"][0].tolist()
    assert positions[:8] == [0, 1, 2, 3, 4, 0, 1, 2] and positions[8:] == [0] * 4


def test_the_position_limit_is_that_of_a_learned_table_only(gpt2):
    assert learned_position_limit(gpt2) == 40
    rotary = LlamaForCausalLM(
        LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    assert learned_position_limit(rotary) is None


def trajectory(answer: str) -> Trajectory:
    return Trajectory(
        task_id="t",
        policy="p",
        messages=[Message(role="user", content="What is 1+1?"), Message(role="assistant", content=answer)],
        provenance=Provenance(provider="p", model="m", created=0),
    )


def test_an_example_beyond_the_position_table_is_dropped_with_its_own_reason():
    tokenizer = train_tokenizer(["user\nWhat is 1+1?", "assistant\nAnswer: 2"] * 10, 300)
    short, long = trajectory("Answer: 2"), trajectory("Answer: 2 " + "1 " * 40)
    examples, dropped, _ = tokenize(tokenizer, [short, long], 1024, max_positions=30)
    assert len(examples) == 1 and dropped == {BEYOND_POSITIONS: 1}
    examples, dropped, _ = tokenize(tokenizer, [short, long], 30, max_positions=1024)
    assert len(examples) == 1 and dropped == {TOO_LONG: 1}


def test_an_id_past_the_embedding_is_one_error_naming_it_and_the_size(gpt2):
    tokenizer = train_tokenizer(["user\nWhat is 1+1?", "assistant\nAnswer: 2"] * 10, 300)
    check_ids_embedded(63, tokenizer, gpt2, "sft.student")
    with pytest.raises(WarmstartError, match=r"^sft.student: .*\(id 64\), but the model has 64 token embeddings"):
        check_ids_embedded(64, tokenizer, gpt2, "sft.student")
