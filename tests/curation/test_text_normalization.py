"""Normalization keeps what makes a problem (numbers, symbols, identifiers) and folds what does not."""

from __future__ import annotations

from warmstart.curation.text import checked_texts, content_signature, prompt_text, segments, trajectory_text, words
from warmstart.types import Message, ToolCall, ToolFunction


def test_case_punctuation_spacing_and_unicode_forms_fold():
    assert words("What is 12+34? End with 'Answer: <integer>'.") == words(
        "WHAT  is 12 + 34 ?? end with answer: <integer>"
    )
    assert words("１２×３４ − 5 ≤ 7") == ["12", "*", "34", "-", "5", "<", "=", "7"]  # fullwidth digits, operator forms
    assert words("1,000 apples, 2, 3") == ["1000", "apples", "2", "3"]  # a thousands separator, not a list's comma


def test_numbers_identifiers_and_word_hyphens():
    assert words("step-by-step x-3 3.5 count_vowels(x1)") == [
        "step", "by", "step", "x", "-", "3", "3.5", "count_vowels", "(", "x1", ")",
    ]  # fmt: skip


def test_segments_are_lines_and_sentences():
    text = 'What is 12+34? End with "Answer: <integer>." Then stop\n2+4+0=6 carry 0, so far 6'
    assert segments(text) == [
        ["what", "is", "12", "+", "34"],
        ["end", "with", "answer", "<", "integer", ">"],
        ["then", "stop"],
        ["2", "+", "4", "+", "0", "=", "6", "carry", "0", "so", "far", "6"],
    ]


def test_signature_keeps_order_within_a_segment_but_not_of_segments():
    def signature(text):
        return content_signature(segments(text))

    assert signature("What is 12-34?") != signature("What is 34-12?")
    assert signature("Subtract 12 from 34.") != signature("Subtract 34 from 12.")
    assert signature("What is 12+34?") != signature("What is 12+35?")
    assert signature("What is 12+34?") != signature("What is 12*34?")
    assert signature("What is 12+34? End with 'Answer: <integer>'.") == signature(
        "End with 'Answer: <integer>'. Please tell me: what's 12 + 34?"
    )
    chain = ["2+4+0=6 carry 0, so far 6", "1+3+0=4 carry 0, so far 46"]
    assert signature("\n".join(chain)) == signature("\n".join(reversed(chain)))
    assert signature("Is it true that cats purr?") == ()  # no content: prose is compared by its words only


def test_prompt_and_checked_texts():
    messages = [
        Message(role="system", content="You are a careful solver."),
        Message(role="user", content="What is 2+2?"),
        Message(
            role="assistant",
            reasoning="add them",
            tool_calls=[ToolCall(id="c", function=ToolFunction(name="calc", arguments='{"x": "2+2"}'))],
        ),
        Message(role="tool", tool_call_id="c", content="4"),
        Message(role="assistant", content="Answer: 4"),
    ]
    assert prompt_text(messages) == "What is 2+2?"  # a system prompt all tasks share would make them alike
    # A tool call is its name and the text its JSON arguments hold (not the JSON's quotes, keys and escapes).
    assert trajectory_text(messages) == "What is 2+2?\nadd them\ncalc\n2+2\n4\nAnswer: 4"
    # System prompts and tool results are not checked for contamination; the user's and assistant's turns are.
    assert checked_texts(messages) == ["What is 2+2?", "add them", "calc\n2+2", "Answer: 4"]


def test_invisible_characters_do_not_split_words():
    """Zero-width spaces, joiners, soft hyphens and direction marks inside words (scraped or obfuscated text)
    would otherwise split them: a benchmark item carrying them escaped decontamination."""
    plain = "How many legs does a spider have in total?"
    marked = "How many le\u200bgs does a spi\u00adder ha\u2060ve in to\u200dtal\u200e?\ufeff"
    assert words(marked) == words(plain)


def test_a_superscript_is_a_power_not_a_digit():
    """NFKC alone reads `2³` as 23: two distinct problems would be one to near-dedup."""
    assert words("2³ + x² - 10⁻³") == ["2", "^", "3", "+", "x", "^", "2", "-", "10", "^", "-", "3"]
    assert words("What is 2³ + 1?") != words("What is 23 + 1?")
    assert words("What is 2³ + 1?") == words("What is 2^3 + 1?")


def test_typeset_dashes_are_a_minus_and_the_fraction_slash_a_division():
    assert words("12 – 3, 12 ‐ 3, 12 ‒ 3") == words("12 - 3, 12 - 3, 12 - 3")
    assert words("½ of 8") == words("1/2 of 8")
    assert words("step‐by‐step and Smith–Jones") == ["step", "by", "step", "and", "smith", "jones"]
