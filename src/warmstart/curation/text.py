"""Text as curation compares it: normalized words, segments, and the content a text is about.

Normalization folds what does not change a problem (case, Unicode forms, invisible characters, a
letter's accents and marks, the script of a digit and of its decimal and thousands separators, a thousands
grouping by a space or an apostrophe, Latin letters swapped for their Cyrillic or Greek look-alikes,
punctuation, spacing, the hyphen of `step-by-step`, a dash for a minus) and keeps what does: every number
as written (a superscript as a power), the math symbols and parentheses, and identifiers. `What is
12+34?`, `what is 12 + 34` and `What is ١٢+٣٤?` are the same words; `What is 12+35?` is not.

A segment is a line or a sentence (its end in any script's full stop, question or exclamation mark):
near-duplicate detection takes its shingles within segments, so steps or sentences put in another order
are the same text to it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

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
# Unicode's confusables (UTS #39, confusables.txt) among the small Greek and Cyrillic letters: each looks like
# one Latin letter. By name, as a table of glyphs typed in would look like the Latin letters themselves. Applied
# after case folding, so a capital whose small letter is here folds too (`А` is `а` is `a`); a look-alike only as
# a capital (Cyrillic `В`, `Н`, `Т`, Greek `Η`, `Κ`) is not folded.
LOOKALIKE_NAMES = {
    "a": "CYRILLIC SMALL LETTER A, GREEK SMALL LETTER ALPHA",
    "c": "CYRILLIC SMALL LETTER ES",
    "d": "CYRILLIC SMALL LETTER KOMI DE",
    "e": "CYRILLIC SMALL LETTER IE, CYRILLIC SMALL LETTER ABKHASIAN CHE",
    "h": "CYRILLIC SMALL LETTER SHHA",
    "i": "CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I, CYRILLIC SMALL LETTER PALOCHKA, GREEK SMALL LETTER IOTA",
    "j": "CYRILLIC SMALL LETTER JE",
    "o": "CYRILLIC SMALL LETTER O, GREEK SMALL LETTER OMICRON, GREEK SMALL LETTER SIGMA",
    "p": "CYRILLIC SMALL LETTER ER, GREEK SMALL LETTER RHO",
    "q": "CYRILLIC SMALL LETTER QA",
    "r": "CYRILLIC SMALL LETTER GHE",
    "s": "CYRILLIC SMALL LETTER DZE",
    "u": "GREEK SMALL LETTER UPSILON",
    "v": "CYRILLIC SMALL LETTER IZHITSA, GREEK SMALL LETTER NU",
    "w": "CYRILLIC SMALL LETTER OMEGA, CYRILLIC SMALL LETTER WE",
    "x": "CYRILLIC SMALL LETTER HA",
    "y": "CYRILLIC SMALL LETTER U, CYRILLIC SMALL LETTER STRAIGHT U, GREEK SMALL LETTER GAMMA",
}
LOOKALIKES = {unicodedata.lookup(name): latin for latin, names in LOOKALIKE_NAMES.items() for name in names.split(", ")}
LOOKALIKE_LETTERS = "".join(LOOKALIKES)
LOOKALIKE_TO_LATIN = str.maketrans(LOOKALIKES)
LOOKALIKE_LETTER = re.compile(f"[{LOOKALIKE_LETTERS}]")
LATIN_LETTER = re.compile("[a-z]")  # after case folding and the marks left out
LETTER_RUN = re.compile(r"[^\W\d_]+")  # a word's letters: a word mixing scripts is one run
WORD_HYPHEN = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")  # step-by-step: one word each side, no minus
# A run of digit groups joined by one separator: a comma (Arabic script's `٬` is one by now), a space (NFKC has
# made the no-break, narrow no-break and thin spaces of SI and French style one: `1 250`) or an apostrophe
# (Swiss `1'250`, typeset `1’250`); not after a decimal point, where `3.141 592` groups decimals.
DIGIT_GROUPS = re.compile(r"(?<![\d.])\d+(?:([,' ’])\d+)(?:\1\d+)*")
# The run is one number only where it can be nothing else: a first group of 1-3 digits, then groups of exactly
# three (`12 345 678` is 12345678, `1,000` is 1000). `3 4`, `2024 123` and `1 250 12` stay numbers apart, and so
# does `1, 2`. Three-digit numbers listed with one separator (`100 200`) read as one number, in every text alike.
THOUSANDS_GROUPING = re.compile(r"\d{1,3}(?:[,' ’]\d{3})+")
# Scripts written without spaces between words (Han, kana, Hangul, Thai): `\w+` would make a whole clause
# (`小明有15个苹果`) one word, so a copy with one character added, or with a lead-in and no punctuation before
# it, would share no word with the item it copies. Each of their characters is a word of its own (a Thai letter
# with the vowel and tone marks on it), as n-gram decontamination of such text usually does.
THAI_MARKS = "\u0e31\u0e34-\u0e3a\u0e47-\u0e4e"
UNSPACED = (
    "[\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3038-\u303b\u3041-\u309f\u30a0-\u30ff\u3131-\u318e"
    "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff\uf900-\ufaff"
    "\uff66-\uff9f\u1100-\u11ff\U00020000-\U0003134f]"
    f"|[\u0e01-\u0e30\u0e32\u0e33\u0e3f-\u0e46\u0e4f\u0e5a\u0e5b][{THAI_MARKS}]*"
)
UNSPACED_CHAR = re.compile(UNSPACED)
TOKEN = re.compile(rf"\d+(?:\.\d+)?|{UNSPACED}|[^\W\d]\w*|[-+*/=<>^%()]")
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
    text = latin_lookalikes(ascii_digits(compatibility_form(text).translate(SYMBOL_FORMS).casefold()))
    return DIGIT_GROUPS.sub(without_group_separators, WORD_HYPHEN.sub(" ", text))


def without_group_separators(run: re.Match) -> str:
    """A run of digit groups (`DIGIT_GROUPS`) as one number where it is a thousands grouping, else as it was."""
    return run[0].replace(run[1], "") if THOUSANDS_GROUPING.fullmatch(run[0]) else run[0]


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


def latin_lookalikes(text: str) -> str:
    """`text` (case folded) with every look-alike of a Latin letter as that letter, where a word of it mixes the
    two (`whаt` with a Cyrillic `а`): no language writes such a word, a copy disguised by swapped letters does.
    The whole text is folded then, as its words made wholly of look-alikes (`іѕ` for `is`) hide Latin ones too.
    Genuine Russian or Greek text (`сор`, `ρ = 5`) has no such word and keeps its letters; a Greek letter in a
    disguised text (`ρ`) folds with the rest, which costs that word's match, never merges two texts."""
    if not mixes_scripts(text) or not any(mixes_scripts(word) for word in LETTER_RUN.findall(text)):
        return text  # nearly every text (all English, all Russian): nothing disguised, and no scan for it
    return text.translate(LOOKALIKE_TO_LATIN)


def mixes_scripts(word: str) -> bool:
    """Whether `word` (or a text) holds both a Latin letter and a look-alike of one (linear: a regex spanning a
    word from one to the other would rescan a long run of letters from each look-alike in it)."""
    return not word.isascii() and LATIN_LETTER.search(word) is not None and LOOKALIKE_LETTER.search(word) is not None


def matching_key(text: str) -> str:
    """`text` as exact matching compares it: normalized (`normalize`), its whitespace collapsed."""
    return " ".join(normalize(text).split())


def words(text: str) -> list[str]:
    """The normalized tokens of `text`: words, numbers, math symbols; punctuation dropped. A character of a
    script written without spaces (`UNSPACED`) is a word of its own."""
    text = normalize(text)
    if not text.isascii():  # nearly every text is ASCII: no scan for them
        text = UNSPACED_CHAR.sub(r" \g<0> ", text)
    return TOKEN.findall(text)


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
    """What a message says: its content, its reasoning and its tool calls' names and arguments (the text
    the arguments hold: `argument_text`)."""
    texts = [message.content, message.reasoning]
    texts += [f"{call.function.name}\n{argument_text(call.function.arguments)}" for call in message.tool_calls or []]
    return [t for t in texts if t]


def argument_text(arguments: str) -> str:
    """A tool call's arguments as the text they hold: the strings (and numbers) of their JSON, each on a line of
    its own, in order; the arguments as written where they are not JSON. Read raw, the JSON escapes a file
    written through a tool (`"...uppercase\\nvowels..."`) would make words of the escapes (`n`) and split
    every line break's n-gram, and `\\u00e9` would not be `é`: a benchmark item copied that way went unseen."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):  # not JSON (a model's own format): its text as written
        return arguments
    return "\n".join(json_strings(value))


def json_strings(value: Any) -> list[str]:
    """The strings and numbers in a JSON value, depth first in order (keys are the schema's, not the data's)."""
    found: list[str] = []
    stack = [value]
    while stack:  # iterative: a deeply nested value cannot exhaust the stack
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, (int, float)):
            found.append(json.dumps(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


def prompt_messages(messages: list[Message]) -> list[Message]:
    """The task as the policy was asked it: every message up to its last user turn. A few-shot prompt's worked
    examples (user and assistant turns) and a multi-turn prompt's earlier turns are part of it: cut at the first
    assistant turn, distinct tasks that share a first shot or an opening exchange would be one prompt to dedup
    and to the one-prompt-per-task check. What the policy produced comes after the last user turn (its
    replies, and the environment's tool results between them: no environment answers with a user turn). A
    conversation without a user turn: the messages before its first assistant turn."""
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    if last_user is None:
        last_user = next((i for i, m in enumerate(messages) if m.role == "assistant"), len(messages)) - 1
    return messages[: last_user + 1]


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
