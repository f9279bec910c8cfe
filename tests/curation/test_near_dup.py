"""Near-duplicates: paraphrases and reordered chains are found, problems that differ in a number never are."""

from __future__ import annotations

import random

import pytest

from warmstart.curation.near_dup import Item, features, jaccard, lsh_params, min_shingled_words, near_duplicates
from warmstart.curation.text import content_signature, segments
from warmstart.envs.arithmetic import Arithmetic, ArithmeticOptions, prompt_text, reference_chain


def item(text: str, rank: int) -> Item:
    return Item(text, content_signature(segments(text)), (rank,))


def dedupe(texts: list[str], threshold: float = 0.8, shingle_size: int = 5) -> dict[int, int]:
    return near_duplicates([item(t, i) for i, t in enumerate(texts)], shingle_size, threshold)


def test_templated_prompts_that_differ_in_numbers_are_all_distinct():
    env = Arithmetic(ArithmeticOptions(ops=["+", "-", "*"], digits=[1, 2]))
    prompts = [t.prompt[0].content for t in env.tasks("train", 600, seed=0)]
    # 12+34 and 34+12 are both there, and distinct tasks of the environment
    assert dedupe(prompts) == {}
    assert dedupe(prompts, threshold=0.3) == {}  # however low the threshold: numbers are content


@pytest.mark.parametrize(
    "paraphrase",
    [
        "End with 'Answer: <integer>'. What is 47+25?",  # sentences reordered
        "what's 47 + 25?? END WITH answer: <integer>",  # case, spacing, punctuation, a contraction
        "What is 47+25? End your reply with 'Answer: <integer>'.",  # words added
        "What is 47 + 25? Finish with 'Answer: <integer>'.",  # a word changed
    ],
)
def test_a_paraphrase_with_the_same_numbers_is_a_near_duplicate(paraphrase):
    original = prompt_text(47, "+", 25)
    assert dedupe([original, paraphrase]) == {1: 0}
    assert dedupe([prompt_text(47, "+", 26), paraphrase]) == {}  # one number off: another problem
    assert dedupe([prompt_text(25, "+", 47), paraphrase]) == {}  # the same numbers in another order too


def test_a_heavier_rewording_needs_a_lower_threshold_and_still_never_merges_other_numbers():
    reworded = "Compute 47+25. End with 'Answer: <integer>'."  # 3 of 11 words changed: Jaccard 9/12
    assert dedupe([prompt_text(47, "+", 25), reworded]) == {}
    assert dedupe([prompt_text(47, "+", 25), reworded], threshold=0.7) == {1: 0}
    assert dedupe([prompt_text(47, "-", 25), prompt_text(47, "+", 26), reworded], threshold=0.7) == {}


def test_a_reordered_chain_is_a_near_duplicate_and_another_problems_chain_is_not():
    lines, answer = reference_chain(58, "*", 7, 0.0, random.Random(0))
    assert len(lines) >= 3
    prompt = prompt_text(58, "*", 7)

    def trajectory(chain):
        return "\n".join([prompt, *chain, f"Answer: {answer}"])

    reordered = [lines[1], lines[0], *lines[2:]]
    assert dedupe([trajectory(lines), trajectory(reordered)]) == {1: 0}
    other_lines, other_answer = reference_chain(85, "*", 7, 0.0, random.Random(0))
    other = "\n".join([prompt_text(85, "*", 7), *other_lines, f"Answer: {other_answer}"])
    assert dedupe([trajectory(lines), other]) == {}


def test_the_best_ranked_member_of_a_cluster_is_kept_wherever_it_comes():
    texts = [
        prompt_text(3, "+", 4),
        "What is 3+4? Please end with 'Answer: <integer>'.",
        "What is 3 + 4 ? End with Answer: <integer>",
    ]
    items = [Item(t, content_signature(segments(t)), rank) for t, rank in zip(texts, [(1, 0), (0, 1), (1, 2)])]
    assert near_duplicates(items, 5, 0.8) == {0: 1, 2: 1}


def test_clusters_are_not_chained_through_small_edits():
    base = "one two three four five six seven eight nine ten"
    step = "one two three four five six seven eight nine ten eleven twelve"  # 10/12 alike to base
    far = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"  # 10/14 to base
    assert jaccard(frozenset(base.split()), frozenset(far.split())) < 0.8
    assert dedupe([base, step, far]) == {1: 0}  # far is like step, which was dropped: far stays


def test_long_texts_use_lsh_over_shingles():
    rng = random.Random(0)
    # Plain words (no digits: `w12` would be an identifier, and every text's signature would differ).
    vocabulary = ["".join(chr(97 + int(c)) for c in str(i)) + "x" for i in range(3000)]
    documents = [" ".join(rng.choice(vocabulary) for _ in range(200)) for _ in range(150)]
    near = []
    for doc in documents[:20]:
        words = doc.split()
        words[100] = "changed"
        near.append(" ".join(words))
    assert len(segments(documents[0])[0]) >= min_shingled_words(5, 0.8)  # compared by shingles, not word sets
    found = dedupe(documents + near)
    assert found == {150 + k: k for k in range(20)}


def test_one_edit_keeps_a_text_at_the_shingling_length_above_the_threshold():
    for shingle_size, threshold in [(5, 0.8), (3, 0.7), (5, 0.5)]:
        n = int(min_shingled_words(shingle_size, threshold)) + 1
        text = [f"t{i}" for i in range(n)]
        edited = text[: n // 2] + ["other"] + text[n // 2 + 1 :]
        a, b = features([text], shingle_size, threshold), features([edited], shingle_size, threshold)
        assert jaccard(a, b) >= threshold
        assert features([text[: n - 2]], shingle_size, threshold) == frozenset(text[: n - 2])  # shorter: word sets


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 0.9, 1.0])
def test_lsh_banding_finds_pairs_at_the_threshold(threshold):
    bands, rows = lsh_params(threshold)
    assert bands * rows <= 128 and bands >= 2
    assert 1 - (1 - threshold**rows) ** bands >= 0.99
