"""Text as curation compares it: normalized words, segments, and the content a text is about.

Normalization folds what does not change a problem (case, Unicode forms, invisible characters, a
letter's accents and marks, the script of a digit and of its decimal and thousands separators,
punctuation, spacing, the hyphen of `step-by-step`, a dash for a minus) and keeps what does: every number
as written (a superscript as a power), the math symbols and parentheses, and identifiers. `What is
12+34?`, `what is 12 + 34` and `What is ١٢+٣٤?` are the same words; `What is 12+35?` is not.

A segment is a line or a sentence (its end in any script's full stop, question or exclamation mark):
near-duplicate detection takes its shingles within segments, so steps or sentences put in another order
are the same text to it.
"""

from __future__ import annotations

import re
import unicodedata

from ..types import Message

# Operator look-alikes that NFKC leaves alone. The hyphens and the en dash are how typeset text (and a word
# processor's autocorrect) writes a minus: `12 – 3` is `12 - 3`. The fraction slash is a division: NFKC
# writes `½` as `1⁄2`, which is `1/2`. The dot and asterisk operators are a typeset `*` as `×` is.
OPERATOR_FORMS = {
    "×": "*", "⋅": "*", "∗": "*", "÷": "/", "∕": "/", "\u2044": "/", "−": "-", "≤": "<=", "≥": ">=",
    "\u2010": "-", "\u2012": "-", "\u2013": "-",
}  # fmt: skip
# The number punctuation of Arabic script (Arabic, Persian, Urdu), written with its own digits: `٣٫١٤` is
# 3.14, `١٬٢٥٠` is 1,250, `٨٪` is 8%. NFKC leaves them alone (it folds the fullwidth `．，％` itself), so a copy
# of a benchmark item in Arabic-Indic digits would split its decimals and lose its percent signs.
NUMBER_PUNCTUATION = {"\u066b": ".", "\u066c": ",", "\u066a": "%"}
SYMBOL_FORMS = str.maketrans(OPERATOR_FORMS | NUMBER_PUNCTUATION)
# What Unicode says a renderer may show as nothing (its Default_Ignorable_Code_Point set: zero-width space and
# joiners, soft hyphen, word joiner, direction marks, BOM, variation selectors, the combining grapheme joiner,
# Hangul fillers, the tag characters that spell hidden ASCII), and the Arabic tatweel that only stretches a
# word: inside a word each would split or change it (`cap\u200bital` as `cap ital`), so a copy carrying
# them, as scraped or deliberately obfuscated text does, would escape decontamination and dedup. NFKC
# leaves them in.
INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u0640\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
# NFKC makes a superscript a plain digit, so `2³` would read as the number 23: it is a power, `2^3`.
SUPERSCRIPT = re.compile("[⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]+")
# A decimal digit of another script (`٣` Arabic-Indic, `۳` Extended Arabic-Indic, `३` Devanagari): NFKC folds
# only the fullwidth and mathematical ones, so `What is ٣ + ٤?` would escape a benchmark's `What is 3 + 4?`.
# Python's `\d` is exactly Unicode's category Nd, the digits `unicodedata.decimal` gives the value of.
OTHER_SCRIPT_DIGIT = re.compile(r"(?![0-9])\d")
WORD_HYPHEN = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")  # step-by-step: one word each side, no minus
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # 1,000 is the number 1000, not 1 and 000
TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W\d]\w*|[-+*/=<>^%()]")
# A sentence's end in ASCII, fullwidth, CJK, Arabic-script and Devanagari punctuation, and the quote or
# bracket that may close it: a copy in fullwidth forms or another script must have the same segments, or its
# content signature (per segment) differs and near-dedup never compares it.
SENTENCE_END = "[" + re.escape(".!?;．！？；。｡؟؛۔।॥") + "]"
CLOSING = "[" + re.escape("\"')]”’»）］」』") + "]"
SEGMENT_BREAK = re.compile(rf"\n|(?<={SENTENCE_END})\s+|(?<={SENTENCE_END}{CLOSING})\s+")
# A run of non-ASCII characters and the one before it (a mark's letter may be ASCII): `without_letter_marks` reads it.
NON_ASCII_RUN = re.compile(r"(?s).?[^\x00-\x7f]+")
SYMBOLS = frozenset("-+*/=<>^%()")
DIGIT_OR_UNDERSCORE = re.compile(r"[\d_]")


def normalize(text: str) -> str:
    text = SUPERSCRIPT.sub(lambda power: "^" + power[0], INVISIBLE.sub("", text))
    text = ascii_digits(compatibility_form(text).translate(SYMBOL_FORMS).casefold())
    return THOUSANDS.sub("", WORD_HYPHEN.sub(" ", text))


def compatibility_form(text: str) -> str:
    """NFKC, the marks on a letter of an alphabet that writes its accents as optional marks left out: `Whát`,
    `Wh\u0301at` and `W\u0336h\u0336a\u0336t` are `What`.

    A combining mark NFKC cannot compose splits a word (`q\u0301uestion` as `q uestion`), and one it can
    makes another letter (`á`), so a copy with marks sprinkled on would escape. A mark on a symbol stays
    (`≠` is `=` with an overlay, and not `=`), and so does one in a script where marks are the letters'
    vowels or sounds (Devanagari `का` is not `क`, kana `が` is not `か`): folding those would make different
    words one."""
    if text.isascii():  # nearly every text: no marks, and NFKC changes nothing
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", NON_ASCII_RUN.sub(lambda run: without_letter_marks(run[0]), decomposed))


# Scripts whose marks are accents, tones or optional vowel points (harakat, niqqud) over a letter.
MARKS_OPTIONAL = ("LATIN", "GREEK", "CYRILLIC", "ARABIC", "HEBREW")


def without_letter_marks(text: str) -> str:
    """`text` (decomposed) less the combining marks that follow a digit or a letter of `MARKS_OPTIONAL`'s
    scripts."""
    kept, on_letter = [], False
    for char in text:
        if unicodedata.category(char)[0] != "M":
            on_letter = char.isdecimal() or (char.isalnum() and unicodedata.name(char, "").startswith(MARKS_OPTIONAL))
        elif on_letter:
            continue
        kept.append(char)
    return "".join(kept)


def ascii_digits(text: str) -> str:
    """Every decimal digit as the ASCII digit of its value: `٤٦+٨٨` is `46+88`."""
    if text.isascii():  # nearly every text: nothing to fold, and no scan for it
        return text
    return OTHER_SCRIPT_DIGIT.sub(lambda digit: str(unicodedata.decimal(digit[0])), text)


def words(text: str) -> list[str]:
    """The normalized tokens of `text`: words, numbers, math symbols; punctuation dropped."""
    return TOKEN.findall(normalize(text))


def segments(text: str) -> list[list[str]]:
    """The words of each line and sentence of `text` (empty ones left out)."""
    parts = (words(part) for part in SEGMENT_BREAK.split(text))
    return [part for part in parts if part]


def is_content(token: str) -> bool:
    """A number, a math symbol, or an identifier (a name with a digit or an underscore: `x1`, `count_vowels`):
    what makes two problems of one template different problems."""
    return token in SYMBOLS or DIGIT_OR_UNDERSCORE.search(token) is not None


def content_signature(parts: list[list[str]]) -> tuple[tuple[str, ...], ...]:
    """The content tokens of each segment in their order, the segments sorted.

    Two texts can be near-duplicates only if these are equal: within a segment order is content
    (`12-34` is not `34-12`, `subtract 12 from 34` is not `subtract 34 from 12`), while the order of
    segments is not (a reordered chain, a sentence moved). A paraphrase that splits or merges the
    sentences holding the numbers has another signature and is not caught: a missed near-duplicate is
    cheaper than two distinct problems merged."""
    content = (tuple(t for t in part if is_content(t)) for part in parts)
    return tuple(sorted(c for c in content if c))


def message_texts(message: Message) -> list[str]:
    """What a message says: its content, its reasoning and its tool calls' names and arguments."""
    texts = [message.content, message.reasoning]
    texts += [f"{call.function.name} {call.function.arguments}" for call in message.tool_calls or []]
    return [t for t in texts if t]


def prompt_messages(messages: list[Message]) -> list[Message]:
    """The messages before the first assistant turn: the task as the policy was asked it."""
    first = next((i for i, m in enumerate(messages) if m.role == "assistant"), len(messages))
    return messages[:first]


def prompt_text(messages: list[Message]) -> str:
    """The prompt's turns but the system's: a system prompt every task shares would make any two prompts
    look alike."""
    return "\n".join(text for m in prompt_messages(messages) if m.role != "system" for text in message_texts(m))


def trajectory_text(messages: list[Message]) -> str:
    """Every turn but the system's (see `prompt_text`), tool results included."""
    return "\n".join(text for m in messages if m.role != "system" for text in message_texts(m))


def checked_texts(messages: list[Message]) -> list[str]:
    """The texts decontamination reads: the user's turns and the assistant's (content, reasoning, tool
    calls), each alone. System prompts are left out (train and eval share them by construction, so they
    would match every item), and so are tool results (what the environment said, not the data's text)."""
    return [text for m in messages if m.role in ("user", "assistant") for text in message_texts(m)]


def searched_texts(messages: list[Message]) -> list[str]:
    """What decontamination searches in a trajectory: `checked_texts` each alone, and joined as the items
    it looks for are (an eval task's prompt: its turns' texts joined; a benchmark's chat item: its user
    turns joined), so that a copied few-shot or multi-turn prompt, whose n-grams span its turns, is found."""
    texts = checked_texts(messages)
    users = [text for m in messages if m.role == "user" for text in message_texts(m)]
    return texts + ["\n".join(joined) for joined in (texts, users) if len(joined) > 1]
