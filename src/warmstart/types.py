"""The shared vocabulary: Message, Task, Trajectory, Verdict, and what a policy is asked (Request, Sampling).

Records are pydantic models serialised one per JSONL line with a schema version (`runs/jsonl.py`).
Messages follow the OpenAI chat schema plus `reasoning`, the teacher's visible thinking, kept apart
from `content` so that the chain can be removed (answer-only ablation) or rendered as the student's
template needs (`lm/chat.py`). See ARCHITECTURE.md, "Core types".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1

Role = Literal["system", "user", "assistant", "tool"]


class Record(BaseModel):
    """Base of every record: unknown fields are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class ToolFunction(Record):
    name: str
    arguments: str  # JSON text, as in the OpenAI schema


class ToolCall(Record):
    id: str
    type: Literal["function"] = "function"
    function: ToolFunction


class Message(Record):
    role: Role
    content: str | None = None
    reasoning: str | None = None
    # Opaque token some providers attach to reasoning (Anthropic's thinking signature): it must be sent
    # back unchanged with that reasoning on later turns of the same conversation.
    reasoning_signature: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_of_parts(cls, content: Any) -> Any:
        return text_of_parts(content) if isinstance(content, list) else content


def text_of_parts(parts: list) -> str:
    """OpenAI's content parts (`[{"type": "text", "text": ...}, ...]`, as chat datasets and clients write a
    message's content) as the text they hold, one part per line, as vLLM joins them. Anything but text (an
    image, audio) is an error: a text model's data would silently lose it."""
    texts = []
    for part in parts:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = repr(part.get("type")) if isinstance(part, dict) else type(part).__name__
            raise ValueError(
                f"a content part of type {kind}: only text parts ({{'type': 'text', 'text': ...}}) are data here"
            )
        texts.append(part["text"])
    return "\n".join(texts)


class Task(Record):
    """One problem. `hidden` holds what verification needs (answer, tests); it never enters a prompt."""

    id: str = Field(min_length=1, pattern=r"\S")  # names the task's records: never empty or blank
    env: str
    prompt: list[Message]
    hidden: dict[str, Any] = Field(default_factory=dict)
    split: Literal["train", "eval"]
    meta: dict[str, Any] = Field(default_factory=dict)  # e.g. difficulty, op

    @field_validator("prompt")
    @classmethod
    def _asks_something(cls, prompt: list[Message]) -> list[Message]:
        # A prompt without a user turn that says something asks a policy nothing: no teacher answers it.
        if not any(m.role == "user" and (m.content or "").strip() for m in prompt):
            raise ValueError("a task's prompt needs a user message with text")
        return prompt


class Usage(Record):
    """Tokens of one reply. `tokens_cached` counts prompt tokens served from a provider's prompt cache."""

    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    model: str | None = None  # the model the provider says answered (it may differ from the one asked for)
    from_cache: bool = False  # answered from warmstart's response cache: no request was sent, nothing paid
    # Names one billed reply (its cached copies carry it too): generate's ledger bills each reply once,
    # the ones a stopped run paid for and never wrote included (stages/paid_replies.py).
    reply_id: str | None = None


class Verdict(Record):
    """Outcome of verification.

    `infra_error` is set when the verifier itself could not judge (sandbox crashed, judge unparseable,
    API error): such a trajectory is masked and counted, never scored 0. A bad answer is not an infra
    error: it is `passed=False` with the reason in `details`.
    """

    reward: float
    passed: bool
    details: dict[str, Any] = Field(default_factory=dict)
    infra_error: str | None = None


class Provenance(Record):
    provider: str  # "reference", "hf", "openai", ...
    model: str
    sampling: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    created: float  # unix time
    terms: str | None = None  # note on the provider's terms of use for outputs, where relevant
    endpoint: str | None = None  # the API's base URL (not part of a stage's fingerprint: a port may change)


class Trajectory(Record):
    schema_version: int = SCHEMA_VERSION
    task_id: str
    sample_index: int = 0
    policy: str
    messages: list[Message]  # the whole conversation, prompt included
    usage: list[Usage] = Field(default_factory=list)  # one per policy turn
    # Replies the provider billed that were rejected (invalid text or usage, empty, no choices) and asked again.
    rejected_usage: list[Usage] = Field(default_factory=list)
    logprobs: list[Any] | None = None  # per-token (top-k) logprobs where the backend gives them
    verdict: Verdict | None = None
    provenance: Provenance
    finish_reason: str | None = None  # "stop"; "length": a turn hit its token limit; "turns": the turn limit came first
    error: str | None = None  # a policy failure: the record exists so nothing is silently missing

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.sample_index)


@dataclass(frozen=True)
class Sampling:
    """How a policy samples a turn. Hashable: `warmstart serve` batches requests that share one."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Request:
    """One rollout asked of a policy: a task, and which of its samples this is."""

    task: Task
    sample_index: int
