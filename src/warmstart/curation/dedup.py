"""Duplicates among trajectories: exact copies, near-duplicate prompts (task by task) and near-duplicate
trajectories, each cluster's best-verified member kept (`near_dup.py` says how texts are compared).

A task whose prompt nearly repeats a better task's loses all its samples: it is one problem asked twice.
Trajectories are compared next, among what is left: a second sample that repeats the first (its steps
in another order, a few words changed) teaches nothing new. Only texts whose prompts have the same
content signature are compared, so two tasks that differ in a number are never merged.
"""

from __future__ import annotations

from ..config import CurateConfig
from ..types import Message, Trajectory
from .near_dup import Item, near_duplicates
from .text import content_signature, normalize, prompt_text, segments, trajectory_text

EXAMPLES = 5  # pairs shown per kind in the report


def exact_duplicates(trajectories: list[Trajectory], candidates: list[int]) -> dict[int, str]:
    """Each of `candidates` whose messages say what an earlier one's say -> "exact duplicate"; the first
    seen stays."""
    seen, reasons = set(), {}
    for i in candidates:
        identity = messages_identity(trajectories[i].messages)
        if identity in seen:
            reasons[i] = "exact duplicate"
        seen.add(identity)
    return reasons


def messages_identity(messages: list[Message]) -> tuple:
    """What each message says, normalized as decontamination normalizes it (`text.normalize`: Unicode forms,
    case, a digit's script, invisible characters and a letter's marks folded): a copy in Arabic-Indic digits
    or fullwidth forms is the same data. Punctuation and layout stay, unlike in `text.words`: `s[::-1]` is
    not `s[:-1]`, nor an indented line an unindented one; near-dedup (best-verified kept) compares those.
    Each text keeps its role and field (a chain is not an answer); a tool call's id, made up by whoever
    called, is left out."""
    return tuple(
        (
            m.role,
            normalize(m.content or ""),
            normalize(m.reasoning or ""),
            tuple((call.function.name, normalize(call.function.arguments)) for call in m.tool_calls or []),
        )
        for m in messages
    )


def rank(trajectories: list[Trajectory], i: int) -> tuple:
    """Sorts the best-verified first: passed over failed, higher reward, then first seen."""
    verdict = trajectories[i].verdict
    return (not (verdict and verdict.passed), -(verdict.reward if verdict else 0.0), i)


def near_duplicate_reasons(
    trajectories: list[Trajectory], candidates: list[int], cfg: CurateConfig
) -> tuple[dict[int, str], dict]:
    """Each of `candidates` dropped as a near-duplicate prompt or trajectory -> that reason; and, per kind,
    how many and a few examples of what was dropped as a near-duplicate of what (`dropped ~ kept`)."""
    prompts = {trajectories[i].task_id: prompt_text(trajectories[i].messages) for i in candidates}
    signatures = {task: content_signature(segments(text)) for task, text in prompts.items()}
    by_task: dict[str, list[int]] = {}
    for i in candidates:
        by_task.setdefault(trajectories[i].task_id, []).append(i)
    tasks = near_duplicate_tasks(trajectories, by_task, prompts, signatures, cfg)
    reasons = {i: "near-duplicate prompt" for task in tasks for i in by_task[task]}
    rest = [i for i in candidates if i not in reasons]
    pairs = near_duplicate_trajectories(trajectories, rest, signatures, cfg)
    reasons |= {i: "near-duplicate trajectory" for i in pairs}
    return reasons, near_duplicate_report(trajectories, tasks, pairs)


def near_duplicate_report(trajectories: list[Trajectory], tasks: dict[str, str], pairs: dict[int, int]) -> dict:
    def names(i: int) -> str:
        return f"{trajectories[i].task_id}#{trajectories[i].sample_index}"

    return {
        "prompt": {"tasks": len(tasks), "examples": [f"{a} ~ {b}" for a, b in list(tasks.items())[:EXAMPLES]]},
        "trajectory": {
            "trajectories": len(pairs),
            "examples": [f"{names(a)} ~ {names(b)}" for a, b in list(pairs.items())[:EXAMPLES]],
        },
    }


def near_duplicate_tasks(
    trajectories: list[Trajectory], by_task: dict[str, list[int]], prompts: dict, signatures: dict, cfg: CurateConfig
) -> dict[str, str]:
    """Each task whose prompt nearly repeats another's -> that task, ranked by its best-verified sample."""
    tasks = list(by_task)
    items = [Item(prompts[task], signatures[task], min(rank(trajectories, i) for i in by_task[task])) for task in tasks]
    found = near_duplicates(items, cfg.shingle_size, cfg.near_dup_threshold)
    return {tasks[dropped]: tasks[kept] for dropped, kept in found.items()}


def near_duplicate_trajectories(
    trajectories: list[Trajectory], candidates: list[int], signatures: dict, cfg: CurateConfig
) -> dict[int, int]:
    """Each trajectory that nearly repeats a better one (of a prompt with the same content) -> that one."""
    items = [
        Item(trajectory_text(trajectories[i].messages), signatures[trajectories[i].task_id], rank(trajectories, i))
        for i in candidates
    ]
    found = near_duplicates(items, cfg.shingle_size, cfg.near_dup_threshold)
    return {candidates[dropped]: candidates[kept] for dropped, kept in found.items()}
