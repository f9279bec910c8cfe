"""The teacher's recorded top-k log-probs, lined up with the student's training tokens (sparse KD).

A trajectory's `logprobs` hold one list per generated assistant turn (None where the backend gave
none), one entry per token: `{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}` from an API
(token text), or the same with `"id"` instead of `"token"` from a local teacher (`policies/hf.py`).

A turn is used only if the teacher's tokens are exactly the first tokens of that turn's span in the
rendered training ids (the span ends with the end-of-turn token, which gets no teacher distribution).
Token text is mapped to ids through the student's own vocabulary; text that is not one of its tokens
means the teacher tokenizes differently, which logit KD cannot bridge. Turns that do not line up
(e.g. a tool call the template re-renders with other spacing, or reasoning the API left out of the
log-probs) are trained with cross-entropy only and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..lm.chat import assistant_spans
from ..lm.token_bytes import TokenBytes

REPLACEMENT = "\ufffd".encode()


@dataclass
class Alignment:
    """Counts over a dataset, for the report and the shared-tokenizer check."""

    turns: int = 0  # generated turns that carry log-probs
    aligned: int = 0
    foreign_tokens: int = 0  # turns with a token text that is not a token of the student
    example: str | None = None  # the first foreign token, for the error message
    foreign_ids: int = 0  # turns of token ids a teacher of another vocabulary recorded (`foreign_id_teachers`)
    foreign_ids_reason: str | None = None

    def add(self, other: "Alignment") -> None:
        self.turns += other.turns
        self.aligned += other.aligned
        self.foreign_tokens += other.foreign_tokens
        self.example = self.example or other.example


@dataclass
class TeacherTokens:
    """Per training position: the teacher's support ids and log-probs (empty lists: no teacher there)."""

    ids: list[list[int]] = field(default_factory=list)
    logp: list[list[float]] = field(default_factory=list)


def records_ids(trajectory) -> bool:
    """Whether a trajectory's log-probs name tokens by id (a local teacher's: ids of its own vocabulary)."""
    return any(isinstance(e, dict) and "id" in e for turn in trajectory.logprobs or [] for e in turn or [])


def foreign_id_teachers(trajectories, vocabulary_problem) -> dict[str, str]:
    """The local teachers (their model as recorded) whose token ids are not the student's, and why:
    `vocabulary_problem(path)` says how a teacher's vocabulary differs (None: it is the student's). A
    teacher no longer at its path cannot be checked, and its ids are not used either."""
    models = {t.provenance.model for t in trajectories if records_ids(t)}
    problems = {}
    for model in sorted(models):
        path = Path(model).expanduser()
        problem = vocabulary_problem(path) if path.is_dir() else f"the teacher {model} is not there to check it"
        if problem:
            problems[model] = problem
    return problems


@dataclass
class TokenIndex:
    """The student's tokens by their text decoded alone and by their own bytes (lm/token_bytes.py), each
    without the keys two ids share (ambiguous). A teacher's recorded token is found by its bytes where it
    gives them, as OpenAI's API and `warmstart serve` do: a token holding part of a multi-byte character
    reads as U+FFFD, a text many ids share, but its bytes are its own. Else by its text. `rows`: the
    student's output rows (None: unknown); a recorded id at or past them is no token of the student."""

    by_text: dict[str, int]
    by_bytes: dict[bytes, int]
    rows: int | None = None

    def holds(self, token_id: int) -> bool:
        return 0 <= token_id and (self.rows is None or token_id < self.rows)


def token_index(tokenizer, rows: int | None = None) -> TokenIndex:
    own_bytes = TokenBytes(tokenizer)
    ids = range(len(tokenizer))
    # SentencePiece's byte-fallback pieces (<0x20>) stand for bytes its ordinary pieces may hold too ("▁"):
    # an ordinary piece is the one it writes for them, so it wins such a tie.
    fallback = {i for i in ids if own_bytes.is_byte_piece(i)}
    return TokenIndex(
        unambiguous(((tokenizer.decode([i]), i) for i in ids), fallback),
        unambiguous(((data, i) for i in ids if (data := own_bytes(i)) is not None), fallback),
        rows,
    )


def unambiguous(pairs, second_choice: set[int] = frozenset()) -> dict:
    """key -> id, without the keys more than one id has, but where one of them is not a `second_choice`
    and the others are (it is then the key's)."""
    ids: dict = {}
    for key, token_id in pairs:
        ids.setdefault(key, []).append(token_id)
    index = {}
    for key, candidates in ids.items():
        first_choices = [i for i in candidates if i not in second_choice] if len(candidates) > 1 else candidates
        if len(first_choices) == 1:
            index[key] = first_choices[0]
    return index


LOGPROBS_SHAPE = (
    "per assistant turn, null or a list of one entry per token: {token or id, logprob, top_logprobs: "
    "[{token or id, logprob}, ...]}, as generate records them"
)


def logprobs_problem(turns) -> str | None:
    """What is wrong with a record's `logprobs` for top-k KD (a user's data may hold another shape), or None."""
    if turns is None:
        return None
    if not isinstance(turns, list):
        return f"its logprobs are a {type(turns).__name__}, not {LOGPROBS_SHAPE}"
    for number, entries in enumerate(turns):
        if entries is None:
            continue
        if not isinstance(entries, list):
            return f"logprobs[{number}] is a {type(entries).__name__}, not a list ({LOGPROBS_SHAPE})"
        for position, entry in enumerate(entries):
            where = f"logprobs[{number}][{position}]"
            problem = entry_problem(entry, sampled=True) or next(
                (entry_problem(a) for a in entry.get("top_logprobs") or [] if entry_problem(a)), None
            )
            if problem:
                return f"{where} {problem} ({LOGPROBS_SHAPE})"
            if (mass := listed_mass(entry.get("top_logprobs") or [])) > 1 + MASS_SLACK:
                return (
                    f"{where} has top_logprobs whose probabilities sum to {mass:.3g}, more than 1: not the "
                    "log-probabilities of one distribution (a server's raw logits, say: vLLM's --logprobs-mode "
                    "raw_logits; its default, raw_logprobs, is what KD needs)"
                )
    return None


# A log-prob a little above 0 is a server's rounding (as the API clients allow: policies/backend.py).
LOGPROB_SLACK = 1e-3
# Rounded log-probs of a top-k that holds nearly all the mass can sum to a hair over 1 (the loss clamps the
# tail at 0: distill/losses.py); more is no distribution.
MASS_SLACK = 0.01


def listed_mass(alternatives: list[dict]) -> float:
    """The probability the alternatives of one token (checked by `entry_problem`) hold, each token once
    (a server may list one twice)."""
    seen = {}
    for entry in alternatives:
        if entry.get("logprob") is not None:
            key = ("id", entry["id"]) if "id" in entry else ("token", entry.get("token"), str(entry.get("bytes")))
            seen[key] = entry["logprob"]
    return sum(math.exp(logprob) for logprob in seen.values())


def entry_problem(entry, sampled: bool = False) -> str | None:
    """What is wrong with one token's entry, or None. An alternative's null log-prob is skipped (`support`);
    the `sampled` token's is refused: it is where the teacher's distribution is lined up with the training
    ids, and without it the turn had crashed the alignment (no alternatives) or gone unaligned unsaid."""
    if not isinstance(entry, dict):
        return f"holds a {type(entry).__name__}"
    if "id" in entry and (isinstance(entry["id"], bool) or not isinstance(entry["id"], int) or entry["id"] < 0):
        return f"has an id that is not a token id, an integer from 0 ({entry['id']!r})"
    if "id" not in entry and not isinstance(entry.get("token"), str):
        return "has no token text or id"
    if "logprob" not in entry:
        return "has no logprob"
    logprob = entry["logprob"]
    if logprob is None:
        return "has a null logprob (the sampled token's must be a number)" if sampled else None
    if isinstance(logprob, bool) or not isinstance(logprob, (int, float)):
        return f"has a logprob that is not a number ({logprob!r})"
    # An alternative's -inf is a probability of 0 (left out: `support`); the sampled token's cannot be.
    if math.isnan(logprob) or logprob > LOGPROB_SLACK or (sampled and math.isinf(logprob)):
        return f"has a logprob that is not a log-probability ({logprob!r}: a finite number at most 0)"
    if "top_logprobs" in entry and not isinstance(entry["top_logprobs"], (list, type(None))):
        return f"has top_logprobs that are a {type(entry['top_logprobs']).__name__}, not a list"
    return None


def entry_id(entry: dict, index: TokenIndex) -> int | None:
    """The student's id of a recorded token, or None where it names none of the student's tokens."""
    if "id" in entry:
        return entry["id"] if index.holds(entry["id"]) else None
    data = entry.get("bytes")
    if (
        isinstance(data, list)
        and data
        and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in data)
    ):
        # U+FFFD's own bytes are what some servers give for a part of a character: not a token's own
        if bytes(data) != REPLACEMENT and (token_id := index.by_bytes.get(bytes(data))) is not None:
            return token_id
    # "" with no bytes is how some servers (vLLM) give a token of no text: an end-of-turn, a part of a character
    return index.by_text.get(entry["token"]) if entry["token"] else None


def support(entry: dict, index: TokenIndex) -> tuple[list[int], list[float]] | None:
    """The sampled token first, then the alternatives not already listed; None if the sampled token is not
    one of the student's. An alternative that is not (a server's "" of no bytes, an id past the student's
    rows: a wider embedding's padding) or has no probability is left out: its mass stays in the teacher's
    tail, where the student's mass of it is too, so the KL over that coarser partition is still exact."""
    sampled = entry_id(entry, index)
    if sampled is None:
        return None
    ids, logps = [sampled], [float(entry["logprob"])]
    for item in entry.get("top_logprobs") or []:
        token_id = entry_id(item, index)
        if token_id is None or token_id in ids or item["logprob"] is None or math.isinf(item["logprob"]):
            continue
        ids.append(token_id)
        logps.append(float(item["logprob"]))
    return ids, logps


def without_stop_entries(entries: list, index: TokenIndex) -> list:
    """A turn's entries without the trailing ones of a token of no text the student cannot name (a server's
    end-of-turn token, "" of no bytes): the span's end-of-turn gets no teacher distribution anyway."""
    end = len(entries)
    while (
        end
        and "id" not in entries[end - 1]
        and not entries[end - 1]["token"]
        and entry_id(entries[end - 1], index) is None
    ):
        end -= 1
    return entries[:end]


def recorded_name(entry: dict) -> str:
    return f"id {entry['id']}" if "id" in entry else repr(entry["token"])


def align(
    input_ids: list[int], loss_mask: list[int], turns: list | None, index: TokenIndex
) -> tuple[TeacherTokens, Alignment]:
    """The teacher's distributions at the positions of the turns that line up with the training ids."""
    teacher = TeacherTokens([[] for _ in input_ids], [[] for _ in input_ids])
    stats = Alignment()
    spans = assistant_spans(loss_mask)
    if not turns or len(turns) > len(spans):
        stats.turns = sum(t is not None for t in turns or [])
        return teacher, stats
    for (start, end), entries in zip(spans[len(spans) - len(turns) :], turns):
        if entries is None:
            continue
        stats.turns += 1
        entries = without_stop_entries(entries, index)
        supports = [support(e, index) for e in entries]
        if any(s is None for s in supports):
            stats.foreign_tokens += 1
            stats.example = stats.example or next(recorded_name(e) for e, s in zip(entries, supports) if s is None)
            continue
        if len(entries) > end - start or [s[0][0] for s in supports] != input_ids[start : start + len(entries)]:
            continue
        stats.aligned += 1
        for offset, (ids, logps) in enumerate(supports):
            teacher.ids[start + offset], teacher.logp[start + offset] = ids, logps
    return teacher, stats
