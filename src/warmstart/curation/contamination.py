"""Decontamination: does a trajectory's text repeat an item of the eval split or of a benchmark?

Texts are compared as normalized words (`text.words`). A trajectory is contaminated by a source when
one of its texts (a user turn, an assistant turn) either

- **contains a whole item** of the source, as a contiguous run of words: how an item shorter than n
  words is matched at all (the demo's eval prompts have 11 words, fewer than 13: containing one whole
  is the only evidence there is, and it is exact: `what is 2 + 3 ...` is not inside `what is 12 + 3 ...`,
  whose words differ); items of fewer than MIN_ITEM_WORDS words are skipped and counted, as they
  would be found everywhere; or
- **shares an n-gram** (n = `curate.ngram`, 13 by default as in GPT-3's decontamination) with an item of
  n words or more, among the item's own n-grams: those that share no word with a **template** n-gram,
  one whose shape (numbers, symbols and identifiers masked) recurs in more than TEMPLATE_SHARE of the
  texts that meet, the source's items and the tasks checked together (and in MIN_TEMPLATE_TEXTS at least).
  A template is an instruction the prompts repeat (`Complete this Python function. Reply with the whole
  function in one ```python block.`; `... A calculator tool is available. End with 'Answer:
  <integer>'.` with any number in front): an environment's train and eval prompts share it by
  construction, so it says nothing about one item leaking, and neither does an n-gram that runs from it
  into the next few words (`... in one python block from typing import`). Both sides are counted
  because either may be too small to tell alone (one eval task of a repository, four of a function
  set). A task counts once however many samples it has: counted per sample, one leaked task's samples
  would make its copy of an item common enough to look like a template (8 samples of one task among 10
  tasks is 80 %), and so it hid itself. An item repeated whole is still caught, and so is a verbatim run
  of at least 2n of an item's words that holds a number or an identifier (`long_runs`): a template varies
  those, a copy keeps them.

The first match stands; its source is reported (the eval split first, then the files as listed).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from .text import DIGIT_OR_UNDERSCORE, is_content, words

MIN_ITEM_WORDS = 3
TEMPLATE_SHARE = 0.1
# A shape is a template only where at least this many distinct texts hold it (items and tasks together): in
# a small run an item and one or two tasks that copy it would otherwise be "a tenth of the texts".
MIN_TEMPLATE_TEXTS = 3
EXAMPLES = 5  # task ids shown per source in the report

Words = tuple[str, ...]


@dataclass(frozen=True)
class Source:
    name: str  # "eval split", or the file as listed in curate.decontaminate_against
    texts: list[str]


def find_contamination(
    sources: list[Source], checked: list[list[str]], n: int, tasks: list[str] | None = None
) -> tuple[list[str | None], ContaminationIndex]:
    """For each trajectory's texts (`checked`), the name of the source it repeats or None; and the index,
    whose `report` says what each source held and matched. `tasks`: each trajectory's task id (its samples
    count once toward a template); without them each trajectory is a task of its own."""
    tokenized = [[tuple(words(text)) for text in texts] for texts in checked]
    by_task: dict[object, list[Words]] = {}
    for key, texts in zip(tasks if tasks is not None else range(len(tokenized)), tokenized, strict=True):
        by_task.setdefault(key, []).extend(texts)
    index = ContaminationIndex(sources, n, list(by_task.values()))
    return [index.match(texts) for texts in tokenized], index


class ContaminationIndex:
    """The items of every source, ready to be found in the tokenized texts of the trajectories
    (`corpus`, one list of texts per task: all its samples'), whose shared n-grams are templates."""

    def __init__(self, sources: list[Source], n: int, corpus: list[list[Words]]):
        self.n = n
        self.names = [source.name for source in sources]
        self.ngrams: dict[int, int] = {}  # hash of an n-gram -> the first source that has it
        self.long_runs: dict[int, int] = {}  # hash of a 2n-gram never taken for a template -> its first source
        # The items by their first n words (all of a shorter one), then by their length: item -> its first source.
        # Many long items may open with one instruction; a text that repeats it looks up one item per length,
        # not every item of that head (with thousands of them, in every trajectory, that was quadratic).
        self.heads: dict[int, dict[Words, dict[int, dict[Words, int]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(dict))
        )
        self.sizes: dict[str, dict[str, int]] = {}  # per source: items indexed, items too short to match
        self.first_words: set[str] = set()  # a position starting with another word matches nothing
        items = [self._items(source) for source in sources]
        long_items = any(len(item) >= n for source_items in items for item in source_items)
        corpus_shapes = shape_counts(corpus, n) if long_items else Counter()  # only long items have n-grams
        for index, source_items in enumerate(items):
            self._add(index, source_items, corpus_shapes, corpus)

    def _items(self, source: Source) -> list[Words]:
        """The source's distinct items, as words; those too short to mean anything counted and left out."""
        all_items = {tuple(words(text)) for text in source.texts}
        items = sorted(item for item in all_items if len(item) >= MIN_ITEM_WORDS)
        self.sizes[source.name] = {"items": len(items), "too_short": len(all_items) - len(items)}
        return items

    def _add(self, index: int, items: list[Words], corpus_shapes: Counter, corpus: list[list[Words]]) -> None:
        for item in items:
            head = item[: self.n]  # whole items are found by their first n words, then compared in full
            self.heads[len(head)][head][len(item)].setdefault(item, index)
            self.first_words.add(item[0])
        shapes = {item: shape_hashes(item, self.n) for item in items}
        template = template_shapes(list(shapes.values()), corpus_shapes, len(corpus))
        for item, item_shapes in shapes.items():
            for gram in own_ngrams(item, [shape in template for shape in item_shapes], self.n):
                self.ngrams.setdefault(hash(gram), index)
                self.first_words.add(gram[0])
        for gram in long_runs(items, 2 * self.n, corpus):
            self.long_runs.setdefault(hash(gram), index)
            self.first_words.add(gram[0])

    def match(self, texts: list[Words]) -> str | None:
        """The name of the source an item of which is in one of `texts`, or None."""
        for tokens in texts:
            for position, token in enumerate(tokens):
                found = self._match_at(tokens, position) if token in self.first_words else None
                if found is not None:
                    return self.names[found]
        return None

    def report(self, matches: list[tuple[str, str]]) -> dict:
        """Per source: its items (indexed, and too short to match), how many trajectories it matched, and
        the first few of their tasks; `matches` holds (source, task id) per trajectory dropped."""
        sources = {}
        for name, sizes in self.sizes.items():
            tasks = [task for source, task in matches if source == name]
            examples = list(dict.fromkeys(tasks))[:EXAMPLES]
            sources[name] = {**sizes, "dropped": len(tasks), "examples": examples}
        return {"ngram": self.n, "sources": sources}

    def _match_at(self, tokens: Words, position: int) -> int | None:
        gram = tokens[position : position + self.n]
        if len(gram) == self.n and (found := self.ngrams.get(hash(gram))) is not None:
            return found
        if self.long_runs:
            run = tokens[position : position + 2 * self.n]
            if len(run) == 2 * self.n and (found := self.long_runs.get(hash(run))) is not None:
                return found
        for length, heads in self.heads.items():
            found = whole_items_at(tokens, position, heads.get(tokens[position : position + length], {}))
            if found:
                return min(found)  # the first source that has an item here, as the sources are listed
        return None


def whole_items_at(tokens: Words, position: int, by_length: dict[int, dict[Words, int]]) -> list[int]:
    """The sources of the items (of one head, by their length) that `tokens` holds whole at `position`."""
    found = (items.get(tokens[position : position + length]) for length, items in by_length.items())
    return [index for index in found if index is not None]


def ngrams(item: Words, n: int) -> list[Words]:
    return [item[i : i + n] for i in range(len(item) - n + 1)]


def own_ngrams(item: Words, is_template: list[bool], n: int) -> list[Words]:
    """The n-grams of `item` that share no word with a template n-gram: one that runs from the template
    into the words after it (`... in one python block from typing import`) is as common as the template."""
    covered = [0] * (len(item) + 1)  # covered[i]: how many of the first i words lie in a template n-gram
    in_template = [False] * len(item)
    for start, flag in enumerate(is_template):
        if flag:
            in_template[start : start + n] = [True] * n
    for i, flag in enumerate(in_template):
        covered[i + 1] = covered[i] + flag
    return [item[i : i + n] for i in range(len(item) - n + 1) if covered[i + n] == covered[i]]


def long_runs(items: list[Words], size: int, corpus: list[list[Words]]) -> set[Words]:
    """The runs of `size` (2n) words of the items that are never a template, whatever the counts of shapes
    say: each holds a number or an identifier (what a template varies from prompt to prompt and a copy keeps),
    is in fewer than MIN_TEMPLATE_TEXTS of the source's items, and in at most half of the tasks (`corpus`). A
    fixed instruction is neither: one with an identifier in it (an environment's tool names) is in every
    prompt, and an eval split of one or two tasks would otherwise have had it flag all the training data."""
    counts = Counter(gram for item in items if len(item) >= size for gram in set(ngrams(item, size)))
    candidates = {
        gram
        for gram, count in counts.items()
        if count < MIN_TEMPLATE_TEXTS and any(DIGIT_OR_UNDERSCORE.search(token) for token in gram)
    }
    in_tasks = tasks_holding(candidates, corpus, size)
    return {gram for gram in candidates if 2 * in_tasks[gram] <= len(corpus)}


def tasks_holding(grams: set[Words], corpus: list[list[Words]], size: int) -> Counter:
    """In how many tasks (each a list of texts) each of `grams` (all of `size` words) occurs."""
    first_words = {gram[0] for gram in grams}
    counts: Counter = Counter()
    for texts in corpus if grams else []:
        counts.update(
            {
                text[i : i + size]
                for text in texts
                for i in range(len(text) - size + 1)
                if text[i] in first_words and text[i : i + size] in grams
            }
        )
    return counts


def shape_hashes(item: Words, n: int) -> list[int]:
    """The hash of each n-gram's shape: its numbers, symbols and identifiers masked."""
    masked = tuple("#" if is_content(token) else token for token in item)
    return [hash(gram) for gram in ngrams(masked, n)]


def shape_counts(corpus: list[list[Words]], n: int) -> Counter:
    """In how many of the tasks (each a list of texts: its samples') each n-gram shape occurs."""
    return Counter(h for texts in corpus for h in {h for text in texts for h in shape_hashes(text, n)})


def template_shapes(item_shapes: list[list[int]], corpus_shapes: Counter, corpus_size: int) -> set[int]:
    """The n-gram shapes of a source's items found in more than TEMPLATE_SHARE of its items and the
    corpus's tasks together (and in MIN_TEMPLATE_TEXTS at least)."""
    counts = Counter(h for shapes in item_shapes for h in set(shapes))
    most = max(MIN_TEMPLATE_TEXTS - 1.0, TEMPLATE_SHARE * (len(item_shapes) + corpus_size))
    return {h for h, count in counts.items() if count + corpus_shapes[h] > most}
