"""A copy of a text in other forms is the same text to curation: Arabic-script number punctuation, marks on
letters, invisible characters, case, sentence ends of other scripts; exact dedup compares normalized text;
a benchmark field of content parts has text; many items of one opening are found as fast as few."""

from __future__ import annotations

import json

import pytest

from warmstart.curation.benchmarks import read_texts
from warmstart.curation.contamination import Source, find_contamination
from warmstart.curation.dedup import exact_duplicates
from warmstart.curation.near_dup import Item, near_duplicates
from warmstart.curation.text import content_signature, segments, words
from warmstart.types import Message, Provenance, ToolCall, ToolFunction, Trajectory

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
FULLWIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}  # `!` .. `~` as `！` .. `～`
QUESTION = "What is 41+57? End with 'Answer: <integer>'."


def found(item: str, copy: str) -> str | None:
    matches, _ = find_contamination([Source("bench", [item])], [[copy]], n=13)
    return matches[0]


def test_arabic_decimal_and_thousands_separators_and_percent_sign_are_number_punctuation():
    assert words("٣٫١٤ ١٬٢٥٠ ٨٪") == words("3.14 1,250 8%") == ["3.14", "1250", "8", "%"]
    assert words("۳٫۱۴") == ["3.14"]  # Persian digits, the same separator
    assert words("٣٫١٥") != words("3.14")  # the value, not just any number
    item = "What do 4 pens cost at 3.14 dollars each?"
    assert found(item, item.replace("3.14", "3٫14").translate(ARABIC_INDIC)) == "bench"
    assert found(item, item.replace("3.14", "3٫14").translate(PERSIAN)) == "bench"
    item = "A town of 1,250 people grows by 8% in a year."
    assert found(item, item.replace("1,250", "١٬٢٥٠").replace("8%", "٨٪")) == "bench"
    assert found(item, item.replace("8%", "٨")) is None  # a percent sign is content: 8 is not 8%


def test_the_dot_and_asterisk_operators_and_the_division_slash_are_operators():
    assert words("3 ⋅ 4 ∗ 5 ∕ 6") == words("3 * 4 * 5 / 6")


@pytest.mark.parametrize(
    "copy",
    [
        "Hów mány vówels does the word question hold in total?",  # precomposed accents: other letters to NFKC
        "How many vowels does the word q\u0301uestion hold in total?",  # a mark NFKC cannot compose: split a word
        "H\u0336o\u0336w\u0336 many vowels does the word question hold in total?",  # strikethrough
        "How ma\U000e0041ny vowels does the wo\u034frd question hold in total?",  # a tag character, a grapheme joiner
        "How many vow\ufe0fels does the word ques\u3164tion hold in to\u061ctal?",  # variation selector, filler, mark
        "HOW MANY VOWELS DOES THE WORD QUESTION HOLD IN TOTAL?",
    ],
)
def test_marks_on_letters_and_invisible_characters_do_not_hide_a_copy(copy):
    assert found("How many vowels does the word question hold in total?", copy) == "bench"


def test_a_mark_on_a_symbol_stays_and_case_folds_fully():
    assert words("x ≠ 3") != words("x = 3")  # `≠` decomposes to `=` and an overlay: not `=`
    assert words("die STRASSE") == words("die Straße")  # upper case has no ß
    assert words("İSTANBUL") == words("istanbul")
    assert words("مـــرحبا") == words("مرحبا")  # the tatweel only stretches a word
    assert words("مَرْحَبًا") == words("مرحبا")  # Arabic's vowel points are optional
    assert words("काम") != words("कम") and words("が") != words("か")  # marks that are vowels or sounds stay


@pytest.mark.parametrize(
    "copy",
    [
        "".join(FULLWIDTH.get(char, char) for char in QUESTION),  # `？` ends its sentence as `?` does
        QUESTION.translate(ARABIC_INDIC).replace("?", "؟"),  # the Arabic question mark
    ],
)
def test_a_copy_with_another_scripts_sentence_end_is_a_near_duplicate(copy):
    assert content_signature(segments(copy)) == content_signature(segments(QUESTION))
    texts = [QUESTION, copy]
    items = [Item(text, content_signature(segments(text)), (rank,)) for rank, text in enumerate(texts)]
    assert near_duplicates(items, shingle_size=5, threshold=0.8) == {1: 0}


def test_a_sentence_closed_by_a_typographic_quote_ends_there():
    assert segments("Say “What is 12+34?” Then stop.") == [["say", "what", "is", "12", "+", "34"], ["then", "stop"]]
    assert segments("「１２＋３４は？」 Then stop.") == [["12", "+", "34", "は"], ["then", "stop"]]


def trajectory(task: str, *messages: Message) -> Trajectory:
    return Trajectory(
        task_id=task,
        policy="reference",
        messages=list(messages),
        provenance=Provenance(provider="reference", model="m", created=0.0),
    )


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(content: str | None = None, reasoning: str | None = None, call_id: str = "c1") -> Message:
    calls = [ToolCall(id=call_id, function=ToolFunction(name="calc", arguments='{"x": "41+57"}'))]
    return Message(role="assistant", content=content, reasoning=reasoning, tool_calls=calls if call_id else None)


def test_exact_dedup_compares_the_normalized_text_and_keeps_the_first():
    chain = "1+7+0=8 carry 0, so far 8\n4+5+0=9 carry 0, so far 98"
    original = trajectory("a", user(QUESTION), assistant("Answer: 98", chain))
    copies = [
        trajectory("b", user(QUESTION.translate(ARABIC_INDIC)), assistant("Answer: ٩٨", chain.translate(PERSIAN))),
        trajectory("c", user("".join(FULLWIDTH.get(c, c) for c in QUESTION)), assistant("ＡＮＳＷＥＲ： ９８", chain)),
        trajectory("d", user(QUESTION), assistant("Answer: 98", chain, call_id="call_other")),  # another call id
    ]
    distinct = [
        trajectory("e", user(QUESTION), assistant("Answer: 99", chain)),
        trajectory("f", user(QUESTION), assistant(chain, "Answer: 98")),  # the chain as the answer: another field
        trajectory("g", user(QUESTION), assistant("Answer: 98", chain.replace("+", "-"))),
        trajectory("h", user(QUESTION), assistant("Answer: 98", chain.replace(", ", "; "))),  # punctuation stays
    ]
    everything = [*copies, original, *distinct]  # a copy first: the first seen stays, whatever its form
    assert exact_duplicates(everything, list(range(len(everything)))) == {
        1: "exact duplicate",
        2: "exact duplicate",
        3: "exact duplicate",
    }


def test_a_benchmark_field_of_content_parts_gives_their_text(tmp_path):
    parts = [{"type": "text", "text": "What is 3.14 times 2?"}, {"type": "image_url", "image_url": {"url": "x"}}]
    rows = [
        {"prompt": parts},
        {"prompt": [{"role": "user", "content": parts}]},
        {"prompt": "How many legs does a spider have?"},
    ]
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert read_texts(path, None) == [
        "What is 3.14 times 2?",
        "What is 3.14 times 2?",
        "How many legs does a spider have?",
    ]


def test_among_many_items_of_one_opening_the_first_source_listed_is_found():
    """Benchmark items that all open with one long instruction, in trajectories that repeat it (each text
    had been compared with every item of that opening: 6,000 x 6,000 took ~25 s on 2 cores, now ~1 s)."""
    instruction = "Solve the following math problem step by step and put the final answer on the last line."
    items = [f"{instruction} Problem {i}: what is {i} times {i % 97} plus {i % 13}?" for i in range(6000)]
    checked = [[f"{instruction} Problem {i}: what is {i} minus {i % 89}?"] for i in range(6000)]
    checked.append([f"Here it is: {items[7]} And more."])
    matches, _ = find_contamination([Source("bench", items), Source("other", items[7:8])], checked, n=13)
    assert matches[-1] == "bench" and matches[:-1] == [None] * 6000  # the first source listed that has it
