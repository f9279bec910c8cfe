"""Tokenized training examples and sequence packing.

Packing puts several examples in one row. Position ids restart at 0 for each example; with no 2-D
attention mask, transformers turns those restarts into a block-diagonal causal mask, so a token
never attends across an example boundary (tested: packed logits equal unpacked ones). The first
token of each example is never a target, since it cannot be predicted from the example before it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .chat import render_for_training
from .types import Trajectory


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[int]


def tokenize(tokenizer, trajectories: list[Trajectory], seq_len: int, tools: list[dict] | None = None) -> tuple[list[Example], int]:
    """Examples that fit in a row, and the number dropped as too long. `tools`: the environment's."""
    examples, too_long = [], 0
    for trajectory in trajectories:
        rendered = render_for_training(tokenizer, trajectory.messages, tools)
        if len(rendered.input_ids) > seq_len:
            too_long += 1
            continue
        examples.append(Example(rendered.input_ids, rendered.loss_mask))
    return examples, too_long


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}/epoch/{epoch}").shuffle(order)
    return order


def pack(examples: list[Example], order: list[int], seq_len: int) -> list[list[int]]:
    """Rows of example indices, filled greedily in `order`; each row's examples fit in `seq_len`."""
    rows, row, used = [], [], 0
    for index in order:
        length = len(examples[index].input_ids)
        if used + length > seq_len:
            rows.append(row)
            row, used = [], 0
        row.append(index)
        used += length
    if row:
        rows.append(row)
    return rows


def collate(rows: list[list[int]], examples: list[Example], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, position_ids, loss_mask: [rows, seq_len]. Padding is its own segment, never a target."""
    ids = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), seq_len), dtype=torch.long)
    mask = torch.zeros((len(rows), seq_len), dtype=torch.float32)
    for r, row in enumerate(rows):
        at = 0
        for index in row:
            example = examples[index]
            n = len(example.input_ids)
            ids[r, at : at + n] = torch.tensor(example.input_ids)
            positions[r, at : at + n] = torch.arange(n)
            mask[r, at : at + n] = torch.tensor(example.loss_mask, dtype=torch.float32)
            mask[r, at] = 0.0
            at += n
        positions[r, at:] = torch.arange(seq_len - at)
    return {"input_ids": ids, "position_ids": positions, "loss_mask": mask}
