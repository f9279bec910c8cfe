"""Near-duplicates: texts of the same content that say it in nearly the same words.

Three parts, each for a reason:

- **The content signature decides who may be compared** (`text.content_signature`): only texts with the
  same numbers, math symbols and identifiers, in the same order within each sentence or line. Templated
  tasks (`What is 12+34?` / `What is 12+35?`) share all their words but one, so no word-overlap
  threshold can keep them apart; their signatures do. Grouping by it also keeps the work near-linear:
  most groups hold one text and are never compared.
- **MinHash LSH finds candidates inside a group** (datasketch), banded so that a pair exactly at the
  threshold is a candidate with probability >= MIN_RECALL (datasketch's own optimum misses ~60% of them).
- **The exact Jaccard of the stored features decides**, so LSH's false candidates never drop anything.

Features are the word shingles of each segment (lines, sentences: a reordered chain has the same ones),
or, for a text too short for one edit to leave its shingles above the threshold, its set of words
(`min_shingled_words`). A short and a long text are then never alike; at the boundary (about 49 words
for 5-word shingles at 0.8) a pair can be missed, which costs a duplicate, never a distinct problem.
A word set ignores order: below a threshold of 1, two short texts with the same words and numbers in
another order (names swapped: `Alice has 5 ... Bob has 3` / `Bob has 5 ... Alice has 3`) are alike; word
bigrams would not tell them apart either at 0.8 (in the pairs measured, a swap changed fewer bigrams than a contraction),
so a threshold of 1 compares whole word sequences: only copies are near-duplicates there.

Within a group, items are visited best first: one at least `threshold` similar to an item already kept
is a near-duplicate of it, otherwise it is kept. This is greedy, not transitive: a chain of small edits
(A~B, B~C, A and C not alike) keeps A and C rather than merging two texts that differ.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Hashable

from datasketch import MinHash, MinHashLSH

from .text import segments

NUM_PERM = 128
MIN_RECALL = 0.99  # chance that a pair exactly at the threshold becomes an LSH candidate
SEED = 1  # fixed permutations: the same data gives the same candidates on every run


@dataclass(frozen=True)
class Item:
    text: str
    group: Hashable  # only items of one group can be near-duplicates: their content signature
    rank: tuple  # sorts best first; the best of a cluster is kept


def near_duplicates(items: list[Item], shingle_size: int, threshold: float) -> dict[int, int]:
    """Index of each near-duplicate in `items` -> index of the kept item it repeats."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i in sorted(range(len(items)), key=lambda i: items[i].rank):
        groups[items[i].group].append(i)
    template = MinHash(num_perm=NUM_PERM, seed=SEED)  # made once: each sketch copies its permutations
    found: dict[int, int] = {}
    for members in groups.values():
        if len(members) > 1:
            texts = {i: items[i].text for i in members}
            found.update(dedupe_group(texts, shingle_size, threshold, template))
    return found


def dedupe_group(texts: dict[int, str], shingle_size: int, threshold: float, template: MinHash) -> dict[int, int]:
    """Near-duplicates among `texts` (visited in their order, best first) -> the kept item each repeats."""
    lsh = MinHashLSH(num_perm=NUM_PERM, params=lsh_params(threshold))
    kept: dict[int, tuple[int, frozenset[str]]] = {}  # index -> (order kept, features)
    found: dict[int, int] = {}
    for i, text in texts.items():
        text_features = features(segments(text), shingle_size, threshold)
        if not text_features:
            continue  # no words to compare: identical empty texts are exact duplicates, dedup's business
        sketch = template.copy()
        sketch.update_batch([feature.encode() for feature in text_features])
        match = best_match(text_features, lsh.query(sketch), kept, threshold)
        if match is None:
            lsh.insert(i, sketch)
            kept[i] = (len(kept), text_features)
        else:
            found[i] = match
    return found


def best_match(
    text_features: frozenset[str], candidates: list, kept: dict[int, tuple[int, frozenset[str]]], threshold: float
):
    """The most similar kept candidate at or above `threshold` (the earlier kept on a tie), or None."""
    scored = [(jaccard(text_features, kept[c][1]), -kept[c][0], c) for c in candidates]
    alike = [s for s in scored if s[0] >= threshold]
    return max(alike)[2] if alike else None


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b)


def features(parts: list[list[str]], shingle_size: int, threshold: float) -> frozenset[str]:
    """The word shingles of each segment (a segment shorter than a shingle is one), or the set of words
    of a text shorter than `min_shingled_words`. At a threshold of 1 (only copies are near-duplicates) the
    text's one feature is its whole sequence of words: equal sets of words or shingles are not a copy
    (`Alice has 5 and Bob has 3` is not `Bob has 5 and Alice has 3`, nor `a is a prefix of b` `b is a prefix
    of a`)."""
    if threshold >= 1.0:
        return frozenset(["\n".join(" ".join(part) for part in parts)])
    if sum(len(part) for part in parts) < min_shingled_words(shingle_size, threshold):
        return frozenset(word for part in parts for word in part)
    return frozenset(shingle for part in parts for shingle in shingles(part, shingle_size))


def shingles(part: list[str], size: int) -> list[str]:
    if len(part) <= size:
        return [" ".join(part)]
    return [" ".join(part[i : i + size]) for i in range(len(part) - size + 1)]


def min_shingled_words(shingle_size: int, threshold: float) -> float:
    """The fewest words at which one changed word can leave a text's shingles `threshold` alike.

    A changed word alters up to k of the n-k+1 shingles of an n-word text, leaving a Jaccard of
    (n-2k+1)/(n+1); that is >= t from n >= (2k-1+t)/(1-t) words (49 for k=5, t=0.8). Shorter texts, a
    prompt of a dozen words, would need to be identical to be near-duplicates by shingles, so they are
    compared by their sets of words instead (one changed word in ten leaves 9/11 = 0.82). At a threshold
    of 1, `features` compares whole word sequences instead."""
    if threshold >= 1.0:
        return math.inf
    return (2 * shingle_size - 1 + threshold) / (1 - threshold)


def lsh_params(threshold: float) -> tuple[int, int]:
    """(bands, rows): the most selective banding of NUM_PERM hash values that still makes a pair of
    Jaccard `threshold` a candidate with probability >= MIN_RECALL (rows=6, bands=21 at 0.8: 0.998)."""
    for rows in range(NUM_PERM // 2, 0, -1):
        bands = NUM_PERM // rows
        if 1 - (1 - threshold**rows) ** bands >= MIN_RECALL:
            return bands, rows
    return NUM_PERM, 1  # a threshold this low (< 0.04): every band of one value, the most candidates
