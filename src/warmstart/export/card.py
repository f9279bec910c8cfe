"""The dataset card, `README.md` in the output directory: a YAML header as the Hub's cards have (license,
`configs` so that `load_dataset(DIR)` finds the data, the column types), then what a reader of the
data needs to know: how many rows and tasks, what curation dropped and why, the decontamination report,
who the teacher was and under which terms of use, and what the data cost.

Everything comes from the exported rows and the run's files (`curated/<name>.dropped.json`,
`costs.json`); what a run did not record is said to be not recorded, never guessed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from huggingface_hub import DatasetCardData

from ..runs.costs import describe
from .schema import card_features
from .writers import Format

NOT_RECORDED = "not recorded"
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]


@dataclass
class RowTally:
    """What the card counts of the exported rows, added up one row at a time as they are written (the rows
    are never all in memory: a curated file of gigabytes would take several times its size as objects)."""

    think_in_content: bool
    rows: int = 0
    passed: int = 0
    rewards: int = 0
    reward_sum: float = 0.0
    with_tools: int = 0
    with_reasoning: int = 0
    task_ids: set[str] = field(default_factory=set)
    teachers: Counter = field(default_factory=Counter)
    terms: dict[tuple, set] = field(default_factory=dict)

    def add(self, row: dict) -> None:
        self.rows += 1
        self.passed += bool(row["passed"])
        if row["reward"] is not None:
            self.rewards += 1
            self.reward_sum += row["reward"]
        self.with_tools += any(m["tool_calls"] for m in row["messages"])
        self.with_reasoning += any(has_reasoning(m, self.think_in_content) for m in row["messages"])
        self.task_ids.add(row["task_id"])
        teacher = (row["provider"], row["model"])
        self.teachers[teacher] += 1
        self.terms.setdefault(teacher, set()).add(row["terms"] or NOT_RECORDED)


@dataclass(frozen=True)
class CardFacts:
    """What a card says, gathered by the exporter."""

    title: str
    source: str  # the run file exported, relative to the run directory
    fmt: Format
    tally: RowTally
    dropped: dict | None  # curated/<name>.dropped.json
    costs: dict | None  # costs.json
    think_in_content: bool
    data_digest: str | None  # of the data file `fmt.data_file`; None for load_from_disk's layout


def dataset_card(facts: CardFacts) -> str:
    sections = [
        f"# {facts.title}",
        intro(facts),
        counts(facts.tally, facts.dropped),
        drop_reasons(facts.dropped),
        decontamination(facts.dropped),
        teachers(facts.tally),
        cost(facts.dropped, facts.costs),
        COLUMNS_SECTION,
        LICENSE_SECTION,
    ]
    return frontmatter(header(facts)) + "\n" + "\n\n".join(s for s in sections if s) + "\n"


def frontmatter(header: dict) -> str:
    """The card's YAML header as the Hub writes it (huggingface_hub's own card data: the format's owner)."""
    return f"---\n{DatasetCardData(**header).to_yaml()}\n---\n"


def header(facts: CardFacts) -> dict:
    # No license is known: the data is a teacher's output, under its provider's terms (the Teacher section).
    head = {
        "license": "unknown",
        "pretty_name": facts.title,
        "task_categories": ["text-generation"],
        "tags": ["warmstart", "synthetic", "distillation", "conversational"],
        "size_categories": [size_category(facts.tally.rows)],
    }
    if facts.fmt.data_file:  # load_from_disk's layout has its own dataset_info.json, and load_dataset refuses it
        head["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": facts.fmt.data_file}],
                # `datasets` caches a local directory's data under the directory's name and its card, not
                # the data's files: without the digest here, a second export to a directory of the same
                # name (another run's export/jsonl, or this one re-exported) would load the first's rows.
                "description": f"{facts.fmt.data_file}, sha256 prefix {facts.data_digest}",
            }
        ]
    head["dataset_info"] = {"features": card_features()}
    return head


def size_category(n: int) -> str:
    return next((name for bound, name in SIZES if n < bound), "1M<n<10M")


def intro(facts: CardFacts) -> str:
    if facts.fmt.data_file:
        load = 'from datasets import load_dataset\n\nds = load_dataset("path/to/this/directory", split="train")'
    else:
        load = 'from datasets import load_from_disk\n\nds = load_from_disk("path/to/this/directory")'
    reasoning = (
        "in each assistant turn's content, as `<think>...</think>` before the answer"
        if facts.think_in_content
        else "in `reasoning_content`"
    )
    return (
        f"Teacher trajectories, verified and curated by warmstart, exported from the run file `{facts.source}` "
        f"as `--format {facts.fmt.name}`: one row per trajectory, the conversation in `messages` in the OpenAI "
        f"chat shape (the teacher's reasoning {reasoning}; tool-call arguments, JSON text in the files, are "
        "decoded to objects by `datasets` 4.7 or later), which TRL's SFTTrainer, axolotl's `chat_template` "
        f"datasets and `datasets` read as it is.\n\n```python\n{load}\n```"
    )


def counts(tally: RowTally, dropped: dict | None) -> str:
    mean_reward = f"{tally.reward_sum / tally.rewards:.3f}" if tally.rewards else "not verified"
    lines = [
        f"- rows: {tally.rows}, from {len(tally.task_ids)} tasks",
        f"- passed verification: {tally.passed} of {tally.rows}",
        f"- mean reward: {mean_reward}",
        f"- rows with tool calls: {tally.with_tools}; rows with reasoning: {tally.with_reasoning}",
    ]
    if dropped and "input" in dropped:
        lines.append(f"- curation kept {dropped.get('kept', tally.rows)} of {dropped['input']} trajectories")
    return "## Counts\n\n" + "\n".join(lines)


def has_reasoning(message: dict, think_in_content: bool) -> bool:
    if think_in_content:
        return message["role"] == "assistant" and message["content"].startswith("<think>\n")
    return bool(message["reasoning_content"])


def drop_reasons(dropped: dict | None) -> str:
    if dropped is None:
        return f"## Dropped by curation\n\n{NOT_RECORDED} (no dropped.json beside the data)"
    reasons = dropped.get("dropped", {})
    if not reasons:
        return "## Dropped by curation\n\nnothing"
    table = [(reason, str(n)) for reason, n in sorted(reasons.items(), key=lambda item: -item[1])]
    return "## Dropped by curation\n\n" + markdown_table(["reason", "trajectories"], table)


def decontamination(dropped: dict | None) -> str:
    """curate's contamination report: per source (the eval split, the files of `curate.decontaminate_against`)
    the items checked, the trajectories dropped for matching one, and some of their tasks. Parts of another
    shape are listed as they are."""
    report = (dropped or {}).get("contamination")
    if report is None:
        return ""
    if not isinstance(report, dict):
        return f"## Decontamination\n\n{inline(report)}"
    parts, shown = ["## Decontamination"], {"ngram"}
    if "ngram" in report:
        parts.append(f"Trajectories sharing a run of {report['ngram']} normalized words with a source were dropped.")
    sources = report.get("sources")
    if isinstance(sources, dict) and all(isinstance(v, dict) for v in sources.values()):
        parts.append(sources_table(sources))
        shown.add("sources")
    rest = [f"- {key}: {inline(value)}" for key, value in report.items() if key not in shown]
    return "\n\n".join(parts + (["\n".join(rest)] if rest else []))


def sources_table(sources: dict) -> str:
    head = ["source", "items checked", "too short to check", "trajectories dropped", "their tasks (first few)"]
    rows = [
        (name, s.get("items", ""), s.get("too_short", ""), s.get("dropped", ""), ", ".join(s.get("examples", [])))
        for name, s in sources.items()
    ]
    return markdown_table(head, rows)


def teachers(tally: RowTally) -> str:
    table = [(p, m, str(n), "; ".join(sorted(tally.terms[(p, m)]))) for (p, m), n in tally.teachers.most_common()]
    note = (
        "The data is these models' output: each provider's terms of use apply to it "
        "(as recorded with each trajectory; check them before training on it or publishing it)."
    )
    return "## Teacher\n\n" + markdown_table(["provider", "model", "rows", "terms of use"], table) + "\n\n" + note


def cost(dropped: dict | None, costs: dict | None) -> str:
    if costs is None:
        return f"## Cost\n\n{NOT_RECORDED} (no costs.json in the run)"
    lines = []
    stage = f"generate:{dropped['source']}" if dropped and "source" in dropped else None
    entry = costs.get("stages", {}).get(stage) if stage else None
    if entry and entry.get("api"):
        lines.append(f"- {describe(stage, entry['api'])}")
    total = costs.get("total", {})
    usd = total.get("usd")
    money = f"${usd:.4f}" if usd is not None else f"unknown (no price for {', '.join(total['unknown_price_models'])})"
    lines.append(f"- the whole run: API {money}, {total.get('seconds', 0):,.1f} s of stage time")
    return "## Cost\n\n" + "\n".join(lines)


def inline(value) -> str:
    return f"`{json.dumps(value, ensure_ascii=False)}`" if isinstance(value, (dict, list)) else str(value)


def markdown_table(head: list[str], rows: list[tuple]) -> str:
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(head), line(["---"] * len(head)), *(line(r) for r in rows)])


COLUMNS_SECTION = """## Columns

| column | meaning |
| --- | --- |
| messages | the conversation, prompt included: `role`, `content` (always a string), `reasoning_content` (the teacher's reasoning, or null), `tool_calls` (always a list: `id`, `type` "function", `function.name`, `function.arguments`: JSON text in the files, an object once loaded), `tool_call_id` (on tool turns) |
| task_id, sample_index | the task, and which of the teacher's samples of it this is |
| reward, passed | the verifier's verdict |
| provider, model | the teacher |
| created | when the trajectory was made (a UTC timestamp; ISO 8601 text in data.jsonl) |
| sampling | the teacher's sampling settings, a JSON object as text |
| seed | the run's seed |
| terms | the provider's terms of use, as recorded (null: not recorded) |"""

LICENSE_SECTION = """## License

warmstart sets no license (`license: unknown`): choose one that the teacher's terms of use allow before
publishing this dataset."""
