"""A number grouped by spaces or apostrophes is the number (only where the grouping is unambiguous), and a copy
whose Latin letters were swapped for Cyrillic or Greek look-alikes is the copy; genuine Russian and Greek text
keeps its letters."""

from __future__ import annotations

import random
import unicodedata

import pytest

from warmstart.curation.contamination import Source, find_contamination
from warmstart.curation.dedup import exact_duplicates
from warmstart.curation.text import words
from warmstart.types import Message, Provenance, Trajectory

ITEM = "A town of 1,250 people grows by 8% in a year."  # 11 words: found only whole
LONG_ITEM = (
    "A bakery packs muffins in boxes of 6. On Monday it baked 138 muffins and sold every full box for $4. "
    "How many dollars did the full boxes bring in?"
)
# Look-alikes a disguise swaps in for Latin letters (Unicode's confusables), by name.
DISGUISES = {
    latin: [unicodedata.lookup(name) for name in names]
    for latin, names in {
        "a": ["CYRILLIC SMALL LETTER A", "GREEK SMALL LETTER ALPHA"],
        "c": ["CYRILLIC SMALL LETTER ES"],
        "e": ["CYRILLIC SMALL LETTER IE"],
        "i": ["CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I", "GREEK SMALL LETTER IOTA"],
        "o": ["CYRILLIC SMALL LETTER O", "GREEK SMALL LETTER OMICRON"],
        "p": ["CYRILLIC SMALL LETTER ER", "GREEK SMALL LETTER RHO"],
        "s": ["CYRILLIC SMALL LETTER DZE"],
        "x": ["CYRILLIC SMALL LETTER HA"],
        "y": ["CYRILLIC SMALL LETTER U", "GREEK SMALL LETTER GAMMA"],
    }.items()
}


def found(item: str, copy: str) -> str | None:
    matches, _ = find_contamination([Source("bench", [item])], [[copy]], n=13)
    return matches[0]


def disguised(text: str, share: float, seed: int) -> str:
    """`text` with `share` of its small Latin letters that have a look-alike swapped for one."""
    rng = random.Random(seed)
    return "".join(rng.choice(DISGUISES[c]) if c in DISGUISES and rng.random() < share else c for c in text)


@pytest.mark.parametrize(
    "separator",
    [" ", "\u00a0", "\u202f", "\u2009", "\u2007", "'", "\u2019"],
    ids=["space", "no-break space", "narrow no-break space", "thin space", "figure space", "apostrophe", "U+2019"],
)
def test_a_number_grouped_by_a_space_or_an_apostrophe_is_the_number(separator):
    assert words(f"1{separator}250 people") == words("1,250 people") == words("1250 people") == ["1250", "people"]
    assert words(f"12{separator}345{separator}678.5") == ["12345678.5"]
    assert found(ITEM, ITEM.replace("1,250", f"1{separator}250")) == "bench"
    assert found(ITEM.replace("1,250", f"1{separator}250"), ITEM.replace("1,250", "1250")) == "bench"
    assert found(ITEM, ITEM.replace("1,250", f"1{separator}251")) is None  # the value, not just any number


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("3 4", ["3", "4"]),  # two numbers a space apart
        ("2024 123", ["2024", "123"]),  # a first group of four digits is no grouping
        ("1 2345", ["1", "2345"]),  # nor is a group of four after it
        ("1 250 12", ["1", "250", "12"]),  # the run is one number only if all of it is a grouping
        ("1, 2, 3", ["1", "2", "3"]),  # a list's comma and space
        ("3.141 592", ["3.141", "592"]),  # decimals grouped after a point are not a thousands grouping
        ("12345,678", ["12345", "678"]),  # a comma after five digits groups nothing
        ("1 250'000", ["1250", "000"]),  # one separator throughout a number
        ("it's 5 o'clock", ["it", "s", "5", "o", "clock"]),
    ],
)
def test_only_an_unambiguous_grouping_is_one_number(text, numbers):
    assert words(text) == numbers


@pytest.mark.parametrize("share", [0.3, 1.0])
@pytest.mark.parametrize("item", [ITEM, LONG_ITEM])
def test_a_copy_with_latin_letters_swapped_for_lookalikes_is_found(item, share):
    copy = disguised(item, share, seed=7)
    assert copy != item and words(copy) == words(item)
    assert found(item, copy) == "bench"
    # Another problem still: every number changed (a long item's 13 words between two numbers are an n-gram of
    # its own; only a 1-item, 1-trajectory run used to count that as a template, and a leaked copy hid so).
    other = item.translate(str.maketrans("864", "975"))
    assert found(item, disguised(other, share, seed=7)) is None


def test_a_disguised_copy_of_a_trajectory_is_an_exact_duplicate():
    def record(text: str) -> Trajectory:
        messages = [Message(role="user", content=text), Message(role="assistant", content="Answer: 92")]
        return Trajectory(
            task_id="t", policy="p", messages=messages, provenance=Provenance(provider="p", model="m", created=0.0)
        )

    records = [record(LONG_ITEM), record(disguised(LONG_ITEM, 0.5, seed=1)), record(LONG_ITEM.replace("6", "7"))]
    assert exact_duplicates(records, [0, 1, 2]) == {1: "exact duplicate"}


def test_capitals_fold_through_their_small_letters_and_capital_only_lookalikes_do_not():
    assert words("WHАT IS TНE PRICE?") != words("WHAT IS THE PRICE?")  # Cyrillic `Н` looks like `H` only as a capital
    assert words("WHАT IS THE PRICE?") == words("what is the price?")  # Cyrillic `А` is `а`, a look-alike of `a`


@pytest.mark.parametrize(
    ("genuine", "genuine_words"),
    [
        # Russian words wholly of look-alikes (`сор`: litter; `а`, `у`, `с`) stay Russian: no word mixes scripts
        ("Сор на улице, а у нас с утра сорок", ["сор", "на", "улице", "а", "у", "нас", "с", "утра", "сорок"]),
        ("Ο ρόλος του χρήστη", ["ο", "ρολοσ", "του", "χρηστη"]),  # Greek: accents and final sigma folded as before
    ],
)
def test_genuine_russian_and_greek_text_keeps_its_letters(genuine, genuine_words):
    assert words(genuine) == genuine_words


def test_greek_letters_in_latin_text_stay_where_no_word_mixes_the_scripts():
    assert words("Let ρ = 5 and ν = 3; find p.") == ["let", "ρ", "=", "5", "and", "ν", "=", "3", "find", "p"]
    russian = "Магазин продаёт коробки по 6 кексов. Сколько долларов принесли полные коробки, если их 138?"
    assert found(LONG_ITEM, russian) is None  # a translation is not a copy
    with_russian = "Магазин продаёт коробки по 6 кексов. " + LONG_ITEM  # an English item after a Russian sentence
    assert found(LONG_ITEM, with_russian) == "bench"
    assert found(LONG_ITEM, disguised(with_russian, 0.5, seed=3)) == "bench"
