"""Text as curation compares it: normalized words, segments, and the content a text is about.

Normalization folds what does not change a problem (case, Unicode forms, invisible characters, the
script of a digit, punctuation, spacing, thousands separators, the hyphen of `step-by-step`, a dash for a
minus) and keeps what does: every number as written (a superscript as a power), the math symbols and
parentheses, and identifiers. `What is 12+34?`, `what is 12 + 34` and `What is ١٢+٣٤?` are the same
words; `What is 12+35?` is not.

A segment is a line or a sentence: near-duplicate detection takes its shingles within segments, so
steps or sentences put in another order are the same text to it.
"""

from __future__ import annotations

import re
import unicodedata

from ..types import Message

# Operator look-alikes that NFKC leaves alone. The hyphens and the en dash are how typeset text (and a word
# processor's autocorrect) writes a minus: `12 – 3` is `12 - 3`. The fraction slash is a division: NFKC
# writes `½` as `1⁄2`, which is `1/2`.
SYMBOL_FORMS = str.maketrans(
    {"×": "*", "÷": "/", "−": "-", "≤": "<=", "≥": ">=", "\u2010": "-", "\u2012": "-", "\u2013": "-", "\u2044": "/"}
)
# Invisible format characters (zero-width space and joiners, soft hyphen, word joiner, direction marks, BOM):
# inside a word they would split it (`cap\u200bital` as `cap ital`), so a copy carrying them, as scraped
# or deliberately obfuscated text does, would escape decontamination and dedup. NFKC leaves them in.
INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
# NFKC makes a superscript a plain digit, so `2³` would read as the number 23: it is a power, `2^3`.
SUPERSCRIPT = re.compile("[⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]+")
# A decimal digit of another script (`٣` Arabic-Indic, `۳` Extended Arabic-Indic, `३` Devanagari): NFKC folds
# only the fullwidth and mathematical ones, so `What is ٣ + ٤?` would escape a benchmark's `What is 3 + 4?`.
# Python's `\d` is exactly Unicode's category Nd, the digits `unicodedata.decimal` gives the value of.
OTHER_SCRIPT_DIGIT = re.compile(r"(?![0-9])\d")
WORD_HYPHEN = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")  # step-by-step: one word each side, no minus
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # 1,000 is the number 1000, not 1 and 000
TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W\d]\w*|[-+*/=<>^%()]")
SEGMENT_BREAK = re.compile(r"\n|(?<=[.!?;])\s+|(?<=[.!?;][\"')\]])\s+")  # a line, or a sentence's end
SYMBOLS = frozenset("-+*/=<>^%()")
DIGIT_OR_UNDERSCORE = re.compile(r"[\d_]")


def normalize(text: str) -> str:
    text = SUPERSCRIPT.sub(lambda power: "^" + power[0], INVISIBLE.sub("", text))
    text = ascii_digits(unicodedata.normalize("NFKC", text).translate(SYMBOL_FORMS).lower())
    return THOUSANDS.sub("", WORD_HYPHEN.sub(" ", text))


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
