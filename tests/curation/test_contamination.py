"""Decontamination: whole items and n-grams are found; a shared template or a different number is not."""

from __future__ import annotations

from warmstart.curation.contamination import Source, find_contamination

CLEAN = [[f"Task {k}: add the numbers {k} and {k + 1}, then explain the carry in words please."] for k in range(30)]
QUESTION = (
    "A farmer has 17 sheep and buys 5 more each week for 6 weeks, then sells half of the flock at the "
    "market on Saturday. How many sheep does the farmer keep?"
)
INSTRUCTION = "Use the tools to look at the code, change it and run the tests; then reply with a one-line summary."


def matches(sources: list[Source], *trajectories: list[str]) -> list[str | None]:
    found, _ = find_contamination(sources, list(trajectories), n=13)
    return found


def test_a_short_item_is_found_whole_and_only_with_the_same_words():
    bench = [Source("bench", ["What is 2+3?"])]
    assert matches(bench, ["Q: what is 2 + 3 ? Think step by step."]) == ["bench"]
    assert matches(bench, ["What is 12+3?"], ["What is 2+33?"], ["What is 2?"]) == [None, None, None]


def test_an_item_of_n_words_or_more_is_found_by_any_shared_ngram():
    bench = [Source("bench", [QUESTION])]
    words = QUESTION.split()
    part = [f"Here is a problem: {' '.join(words[4:17])} and more."]  # 13 of its words
    assert matches(bench, *CLEAN, part, [" ".join(words[4:16])])[30:] == ["bench", None]  # 12 words: fewer than n
    assert matches(bench, *CLEAN, ["unrelated text", QUESTION.upper()])[30] == "bench"  # any of a trajectory's texts


def test_an_instruction_the_eval_prompts_share_is_a_template_but_a_whole_prompt_is_not():
    tail = "? A calculator tool is available. End with 'Answer: <integer>'."
    eval_split = [Source("eval split", [f"What is {a}+{b}{tail}" for a in range(10, 40) for b in range(1, 10)])]
    # 16 words each: every 13-gram is the instruction with a number or two, e.g. `+ 7 a calculator tool ... >`
    # in the 30 eval prompts ending in 7: it says nothing about one of them leaking.
    found = matches(eval_split, [f"What is 55+7{tail}"], [f"What is 7+12{tail}"], [f"What is 12+7{tail}"])
    assert found == [None, None, "eval split"]  # the last is an eval prompt, whole


def test_an_instruction_shared_with_the_training_data_is_a_template_however_few_the_items():
    # One eval task whose instruction all training prompts repeat: the source alone cannot tell, the two sides can.
    eval_split = [Source("eval split", [f"Fix this issue: `median([1, 2])` returns 2. {INSTRUCTION}"])]
    train = [[f"Fix this issue: `slug('{word}')` keeps the punctuation. {INSTRUCTION}"] for word in ("a!", "b?")]
    assert matches(eval_split, *train) == [None, None]
    assert matches(eval_split, *train, [f"Fix this issue: `median([1, 2])` returns 2. {INSTRUCTION}"])[2] == (
        "eval split"
    )


def test_an_ngram_running_from_a_template_into_common_words_is_not_evidence_but_an_items_own_is():
    instruction = "Complete this Python function. Reply with the whole function in one ```python block."

    def prompt(name: str, doc: str) -> str:
        return (
            f'{instruction}\n```python\nfrom typing import List\n\ndef {name}(xs: List[int]) -> int:\n    """{doc}"""'
        )

    docs = [
        "Return the largest sum of a contiguous run of the values in xs, or zero when it is empty.",
        "Count how many times the sign changes between neighbouring values, ignoring any zeros on the way.",
        "Give the length of the longest strictly increasing run; an empty list has a run of length zero.",
        "Sum every second value starting from the first, then subtract the sum of all the others.",
    ]
    eval_split = [Source("eval split", [prompt(f"eval_{k}", doc) for k, doc in enumerate(docs)])]
    own = [
        [prompt(f"train_{k}", f"Keep only the items of kind {w} in xs; none counts as zero.")]
        for k, w in enumerate("abcdefghijklmnopqrstuvwxyz")
    ]
    # `... in one python block python from typing import list` is in every prompt: only the docstrings are
    # own. The copy has the 13 first words of a docstring.
    copied = [
        prompt("train_copy", "Count how many times the sign changes between neighbouring values, ignoring any zeros.")
    ]
    assert matches(eval_split, *own, copied) == [None] * 26 + ["eval split"]


def test_a_leaked_item_repeated_by_a_few_trajectories_is_still_caught():
    bench = [Source("bench", [QUESTION, "Another question entirely, about trains and their speed in miles."])]
    leaked = [[f"Solve: {QUESTION[:-1]}, then explain."]] * 3  # three samples of one leaked task, not whole
    assert matches(bench, *CLEAN, *leaked) == [None] * 30 + ["bench"] * 3


def test_items_too_short_to_mean_anything_are_skipped_and_counted():
    bench = [Source("bench", ["yes", "No.", "is 7 prime", "is 7 prime"])]
    found, index = find_contamination(bench, [["yes, no"], ["Is 7 prime? Yes."]], n=13)
    assert found == [None, "bench"]
    assert index.sizes == {"bench": {"items": 1, "too_short": 2}}  # duplicates counted once
    assert index.report([("bench", "t/1"), ("bench", "t/1"), ("bench", "t/2")]) == {
        "ngram": 13,
        "sources": {"bench": {"items": 1, "too_short": 2, "dropped": 3, "examples": ["t/1", "t/2"]}},
    }


def test_the_first_source_listed_is_reported():
    both = [Source("eval split", ["What is 2+3?"]), Source("b.jsonl", ["what is 2 + 3"])]
    assert matches(both, ["What is 2+3?"]) == ["eval split"]
    assert matches([Source("a", [QUESTION]), Source("b", [QUESTION])], [QUESTION]) == ["a"]
