"""A tiny Llama-architecture student built from a config, with a tokenizer trained locally.

This is the student of the offline demo and the end-to-end tests: no model hub is reachable, so the
model is built from `LlamaConfig` and its byte-level BPE tokenizer is trained on the run's own training
text. Both are saved with `save_pretrained`, so `AutoModelForCausalLM` / `AutoTokenizer` load them
unchanged. Digits are always split one per token: arithmetic on multi-digit tokens is needlessly hard
for a model this small.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ..config import TinyModelConfig
from ..types import Message
from .chat import template_messages

PAD, BOS, EOS_TURN, TURN_START = "<|pad|>", "<|bos|>", "<|im_end|>", "<|im_start|>"

# ChatML without a system default. `{% generation %}` marks the tokens the assistant produced, which is
# how `apply_chat_template(..., return_assistant_tokens_mask=True)` builds the loss mask. Tool calls are
# written in the `<tool_call>{json}</tool_call>` format `toolcalls.py` parses; tool results are a `tool`
# turn. Tool schemas (`tools=`) are not rendered: they would cost the tiny student most of its context,
# and it learns its tools from the teacher's calls.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}"
    "{{- message['content'] -}}"
    "{%- for call in message.tool_calls or [] -%}"
    "{%- if message['content'] or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
    "{{- '<tool_call>\\n' + {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson + '\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{%- else -%}"
    "{{- message['content'] + '<|im_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, TURN_START, EOS_TURN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown tokens
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS_TURN,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def tiny_llama_config(config: TinyModelConfig, vocab_size: int | None = None, **special_ids) -> LlamaConfig:
    """The tiny student's architecture; `vocab_size` defaults to the configured one (an upper bound: a
    tokenizer trained on little text can come out smaller)."""
    return LlamaConfig(
        vocab_size=vocab_size or config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        **special_ids,
    )


def build_tiny_llama(tokenizer: PreTrainedTokenizerFast, config: TinyModelConfig, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    llama_config = tiny_llama_config(
        config,
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(llama_config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny_student(texts: Iterable[str], out_dir: Path, config: TinyModelConfig, seed: int) -> Path:
    tokenizer = train_tokenizer(texts, config.vocab_size)
    model = build_tiny_llama(tokenizer, config, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tokenizer_corpus(conversations: list[list[Message]]) -> list[str]:
    """The texts the tiny student's tokenizer is trained on: each conversation's turns as the chat
    template sees them, role names included, so that template headers become a few tokens, not one per byte."""
    return ["\n".join(_corpus_line(m) for m in template_messages(messages)) for messages in conversations]


def _corpus_line(message: dict) -> str:
    calls = "".join(f"<tool_call>\n{json.dumps(c['function'])}\n</tool_call>" for c in message.get("tool_calls", []))
    return f"{message['role']}\n{message['content']}{calls}"
