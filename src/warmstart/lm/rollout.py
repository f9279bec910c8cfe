"""The multi-turn rollout loop of a local model, at the token level.

    policy turn -> parse tool calls -> environment step for each call -> append the tool results -> ...

until the policy answers without calling a tool ("stop"), a turn is cut by the token limit ("length"),
or the turn limit is reached with a call still pending ("turns"); the caller then verifies. A batch
of episodes advances together: one batched, KV-cached generation per turn.

Each episode keeps the exact token ids the policy conditioned on and sampled, and a mask that is 1
only on the tokens the policy produced (each turn up to and including its end-of-turn token), never on
the prompt, tool results or the template text between turns. GRPO trains on exactly these ids with
this mask, and they equal what SFT renders for the same conversation (tested).

A tool call that cannot be parsed, names an unknown tool or has non-object arguments is answered
with an error message the policy reads on its next turn, not an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..types import Message, Sampling, Task, Usage
from .chat import continuation_ids, render_prompt
from .generation import completion_message, sample_ids
from .toolcalls import tool_results


@dataclass
class Episode:
    task: Task
    sample_index: int
    messages: list[Message]
    ids: list[int]
    policy_mask: list[int]  # 1 on tokens the policy produced
    # Per id: the sampler's log-prob of a token the policy produced (lm.generation.Sampled.logprobs), None
    # elsewhere and where the sampler gave none. GRPO's importance weights compare them with the trainer's.
    sampler_logprobs: list[float | None] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)  # one per policy turn
    finish_reason: str | None = None  # stop | length | turns; None while running


def start_episodes(tokenizer, starts: list[tuple[Task, int]], tools) -> list[Episode]:
    """One episode per (task, sample index). A task given several times (a GRPO group's samples) is
    rendered and tokenized once: 128 starts of 16 tasks took ~9 ms rendered one by one on the tiny GRPO
    benchmark's tokenizer (2-core EPYC, CPU flags avx2 avx512_bf16), ~1.5 % of its step."""
    prompt_ids: dict[int, list[int]] = {}  # id(task) -> its prompt's ids, for this call's tasks (all alive)
    episodes = []
    for task, index in starts:
        if id(task) not in prompt_ids:
            text = render_prompt(tokenizer, task.prompt, tools)
            prompt_ids[id(task)] = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = list(prompt_ids[id(task)])  # each episode's own: its turns are appended to it
        episodes.append(Episode(task, index, list(task.prompt), ids, [0] * len(ids), [None] * len(ids)))
    return episodes


def run_episodes(
    model,
    tokenizer,
    env,
    starts: list[tuple[Task, int]],
    sampling: Sampling,
    stop_ids: list[int],
    seed: int,
    max_turns: int,
    sampler=sample_ids,
) -> list[Episode]:
    """Roll out one episode per (task, sample index), all advancing turn by turn together. `sampler`:
    `generation.sample_ids` (transformers' generate) or `generation.sample_ids_pruned` (GRPO's)."""
    tools = list(env.tools) or None
    episodes = start_episodes(tokenizer, starts, tools)
    for turn in range(max_turns):
        active = [e for e in episodes if e.finish_reason is None]
        if not active:
            break
        sampled = sampler(
            model,
            tokenizer.pad_token_id,
            [e.ids for e in active],
            sampling,
            stop_ids,
            seed + 100_003 * turn,
            [f"{e.task.id}/{e.sample_index}" for e in active],
        )
        for episode, s in zip(active, sampled):
            episode.usage.append(Usage(tokens_in=len(episode.ids), tokens_out=len(s.completion_ids)))
            episode.ids += s.completion_ids
            episode.policy_mask += [1] * len(s.completion_ids)
            episode.sampler_logprobs += s.logprobs if s.logprobs is not None else [None] * len(s.completion_ids)
            message = completion_message(tokenizer, s, f"call-{turn}" if tools else None)
            episode.messages.append(message)
            if not s.stopped:
                episode.finish_reason = "length"
            elif not message.tool_calls:
                episode.finish_reason = "stop"
            elif turn == max_turns - 1:
                episode.finish_reason = "turns"
            else:
                continue_after_tools(tokenizer, env, episode, tokenizer.decode(s.completion_ids[-1:]), tools)
    return episodes


def continue_after_tools(tokenizer, env, episode: Episode, end_of_turn: str, tools) -> None:
    episode.messages += tool_results(env, episode.task, episode.messages)
    ids = continuation_ids(tokenizer, episode.messages, end_of_turn, tools)
    episode.ids += ids
    episode.policy_mask += [0] * len(ids)
    episode.sampler_logprobs += [None] * len(ids)
