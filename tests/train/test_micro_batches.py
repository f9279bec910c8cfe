"""GRPO's update chunks (train/grpo.micro_batches): every row once, within the token budget, cut where the
padded tokens plus a cost per chunk are fewest."""

from __future__ import annotations

import itertools
import random

from warmstart.train.grpo import micro_batches


def padded(chunks: list[list[int]], lengths: list[int], chunk_cost: int) -> int:
    return sum(len(chunk) * max(lengths[r] for r in chunk) + chunk_cost for chunk in chunks)


def cheapest_by_enumeration(lengths: list[int], max_tokens: int, chunk_cost: int) -> int:
    """Every way to cut the length-sorted rows into consecutive chunks, the cheapest within the budget."""
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    best = None
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        chunks, current = [], [order[0]]
        for row, cut in zip(order[1:], cuts):
            if cut:
                chunks.append(current)
                current = []
            current.append(row)
        chunks.append(current)
        if any(len(c) > 1 and len(c) * max(lengths[r] for r in c) > max_tokens for c in chunks):
            continue
        cost = padded(chunks, lengths, chunk_cost)
        best = cost if best is None else min(best, cost)
    return best


def test_every_row_once_in_length_order_within_the_budget():
    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randrange(1, 120) for _ in range(rng.randrange(1, 60))]
        chunks = micro_batches(lengths, 256, chunk_cost=rng.choice([0, 30, 1000]))
        assert sorted(r for c in chunks for r in c) == list(range(len(lengths)))
        flat = [lengths[r] for c in chunks for r in c]
        assert flat == sorted(flat)
        for chunk in chunks:
            assert len(chunk) == 1 or len(chunk) * max(lengths[r] for r in chunk) <= 256


def test_the_cut_is_the_cheapest_of_all_consecutive_cuts():
    rng = random.Random(1)
    for _ in range(40):
        lengths = [rng.randrange(1, 60) for _ in range(rng.randrange(1, 9))]
        max_tokens, chunk_cost = rng.choice([40, 100, 1000]), rng.choice([0, 10, 50])
        chunks = micro_batches(lengths, max_tokens, chunk_cost)
        assert padded(chunks, lengths, chunk_cost) == cheapest_by_enumeration(lengths, max_tokens, chunk_cost)


def test_short_rows_are_not_padded_to_long_ones_when_a_chunk_costs_less():
    lengths = [100] * 10 + [10] * 10
    assert micro_batches(lengths, 4096, chunk_cost=100) == [list(range(10, 20)), list(range(10))]
    assert micro_batches(lengths, 4096, chunk_cost=1000) == [list(range(10, 20)) + list(range(10))]


def test_a_row_longer_than_the_budget_is_a_chunk_alone():
    assert micro_batches([5, 500, 6], 64, chunk_cost=10) == [[0, 2], [1]]
    assert micro_batches([], 64) == []
