"""Tokenized training examples and sequence packing.

Packing puts several examples in one row. Position ids restart at 0 for each example; with no 2-D
attention mask, transformers turns those restarts into a block-diagonal causal mask, so a token
never attends across an example boundary (tested: packed logits equal unpacked ones). A model that does
not (OPT, BLOOM, MPT, a state-space layer's) gets one example per row (`train/packing.py`). The first
token of each example is never a target, since it cannot be predicted from the example before it.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import torch
from jinja2 import TemplateError

from ..distill.topk import Alignment, TeacherTokens, TokenIndex, align, logprobs_problem
from ..errors import WarmstartError, first_line
from ..lm.chat import render_for_training
from ..types import Trajectory


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[int]
    teacher: TeacherTokens | None = None  # the teacher's top-k per position (sparse KD only)


TOO_LONG, NO_TARGET = "longer than a row", "no assistant turn to learn"
BEYOND_POSITIONS = "longer than the model's position table"


def tokenize(
    tokenizer,
    trajectories: list[Trajectory],
    seq_len: int,
    tools: list[dict] | None = None,
    teacher_index: TokenIndex | None = None,
    max_positions: int | None = None,
) -> tuple[list[Example], Counter, Alignment]:
    """Examples that fit in a row; those dropped, counted per reason (longer than `seq_len` tokens, longer
    than `max_positions`, a learned position table's size, no assistant turn: nothing to learn); and how
    the teacher's recorded log-probs lined up (only with a `teacher_index`, `distill.topk.token_index`; the
    log-probs checked first, `check_logprobs`). `tools`: the environment's. A conversation its chat
    template cannot render is one error naming the record."""
    examples, dropped, alignment = [], Counter(), Alignment()
    for trajectory in trajectories:
        if not any(m.role == "assistant" for m in trajectory.messages):
            dropped[NO_TARGET] += 1
            continue
        rendered = rendered_example(tokenizer, trajectory, tools)
        if len(rendered.input_ids) > seq_len:
            dropped[TOO_LONG] += 1
            continue
        if max_positions is not None and len(rendered.input_ids) > max_positions:
            dropped[BEYOND_POSITIONS] += 1
            continue
        teacher = None
        if teacher_index is not None:
            teacher, stats = align(rendered.input_ids, rendered.loss_mask, trajectory.logprobs, teacher_index)
            alignment.add(stats)
        examples.append(Example(rendered.input_ids, rendered.loss_mask, teacher))
    return examples, dropped, alignment


def check_logprobs(trajectories: list[Trajectory]) -> None:
    """Refuse, naming the record, log-probs of another shape than generate records (data of one's own)."""
    for trajectory in trajectories:
        if problem := logprobs_problem(trajectory.logprobs):
            raise WarmstartError(f"sft: record {record_name(trajectory)}: {problem}")


def record_name(trajectory: Trajectory) -> str:
    return f"{trajectory.task_id}#{trajectory.sample_index}"


def rendered_example(tokenizer, trajectory: Trajectory, tools: list[dict] | None):
    if trajectory.messages[0].role == "assistant":
        raise WarmstartError(
            f"sft: record {record_name(trajectory)}: the conversation starts with an assistant turn; "
            "a chat template renders an assistant turn after a system or user turn"
        )
    try:
        return render_for_training(tokenizer, trajectory.messages, tools)
    except (TemplateError, ValueError, TypeError) as exc:  # e.g. a template that refuses a role order
        raise WarmstartError(
            f"sft: record {record_name(trajectory)}: the chat template cannot render it ({first_line(str(exc))})"
        ) from None


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


def row_width(rows: list[list[int]], examples: list[Example]) -> int:
    """Tokens in the fullest of `rows`: collating to this width instead of seq_len drops only padding."""
    return max(sum(len(examples[i].input_ids) for i in row) for row in rows)


def collate(rows: list[list[int]], examples: list[Example], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, position_ids, loss_mask: [rows, seq_len]. Padding is never a target, and its positions
    are all 0 (each padding token a segment of its own): counting them up from the row's end would run past
    a learned position table (GPT-2's 1024) beside a long row, though every example fits in it."""
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
    batch = {"input_ids": ids, "position_ids": positions, "loss_mask": mask}
    if any(examples[i].teacher is not None for row in rows for i in row):
        batch |= collate_teacher(rows, examples, seq_len)
    return batch


def collate_teacher(rows: list[list[int]], examples: list[Example], seq_len: int) -> dict[str, torch.Tensor]:
    """kd_ids, kd_logp: [rows, seq_len, K]; kd_mask: [rows, seq_len]. Padding repeats the position's
    first id with log-prob -inf (what `distill.losses.sparse_kl` expects); positions without a teacher get id 0."""
    width = max([1, *(len(ids) for row in rows for i in row if examples[i].teacher for ids in examples[i].teacher.ids)])
    kd_ids = torch.zeros((len(rows), seq_len, width), dtype=torch.long)
    kd_logp = torch.full((len(rows), seq_len, width), float("-inf"))
    kd_mask = torch.zeros((len(rows), seq_len), dtype=torch.bool)
    for r, row in enumerate(rows):
        at = 0
        for index in row:
            teacher = examples[index].teacher
            for offset, (ids, logps) in enumerate(zip(teacher.ids, teacher.logp) if teacher else ()):
                if ids:
                    kd_ids[r, at + offset] = torch.tensor(ids + ids[:1] * (width - len(ids)))
                    kd_logp[r, at + offset, : len(ids)] = torch.tensor(logps)
                    kd_mask[r, at + offset] = True
            at += len(examples[index].input_ids)
    return {"kd_ids": kd_ids, "kd_logp": kd_logp, "kd_mask": kd_mask}
