"""Which teacher signal SFT trains on: the richest one the teacher offers.

    logits  the teacher is a local model sharing the student's tokenizer: its whole next-token
            distribution, computed on the fly (dense KD)
    topk    the trajectories carry the teacher's top-k log-probs (an API with logprobs, or a local
            teacher that recorded them): sparse KD on that support plus a tail bucket
    tokens  text only (the reference solver, Anthropic's API, an API asked for no log-probs):
            cross-entropy on the teacher's tokens (plain SFT)

`sft.distill = "auto"` picks in that order and says why; naming one forces it, and a forced logit
signal the teacher cannot give is an error. A student or local teacher whose config soft-caps or scales
its logits has no KD signal the chunked loss reproduces: `auto` trains it on tokens, said. Logit KD needs one tokenizer on both sides: the local
teacher's vocabulary must equal the student's, and recorded token texts must be the student's tokens
and line up with its tokenization. Cross-tokenizer distillation is out of scope; in auto mode a
mismatch falls back to plain SFT, printed and recorded with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from ..config import Recipe
from ..errors import WarmstartError
from ..lm.models import load_config, vocabulary_mismatch
from ..lm.scoring import logit_transforms
from ..policies.spec import local_model_path
from .topk import Alignment


@dataclass
class Signal:
    kind: str  # logits | topk | tokens
    reason: str
    teacher_path: Path | None = None  # the local teacher (logits only)

    def record(self) -> dict:
        return {
            "signal": self.kind,
            "reason": self.reason,
            **({"teacher": str(self.teacher_path)} if self.teacher_path else {}),
        }


def local_teacher_path(recipe: Recipe) -> Path | None:
    """The directory of `sft.teacher` when it is a local model, else None (an API or the reference)."""
    return local_model_path(recipe.sft.teacher, recipe, "sft.teacher")


def transformed_logits_reason(whose: str, transforms: list[str]) -> str:
    return f"the {whose}'s config transforms its logits ({transforms[0]}), which chunked KD does not reproduce"


def choose_logits(recipe: Recipe, student_tokenizer) -> tuple[Signal | None, str]:
    path = local_teacher_path(recipe)
    if path is None:
        return None, f"sft.teacher ({recipe.sft.teacher}) is not a local model, so its logits are not available"
    mismatch = vocabulary_mismatch(path, student_tokenizer)
    if mismatch:
        return None, f"{mismatch}: logit KD needs a shared tokenizer (cross-tokenizer distillation is not supported)"
    # logit_transforms reads the config alone: the teacher's weights are not loaded for this.
    teacher_transforms = logit_transforms(SimpleNamespace(config=load_config(path, "sft.teacher")))
    if teacher_transforms:
        return None, transformed_logits_reason("teacher", teacher_transforms)
    return Signal(
        "logits",
        f"the teacher {path} is a local model with the student's tokenizer: its full next-token distribution is used",
        path,
    ), ""


def topk_verdict(alignment: Alignment) -> tuple[bool, str]:
    if alignment.turns == 0 and alignment.foreign_ids_reason:
        return False, f"{alignment.foreign_ids_reason}: logit KD needs a shared tokenizer"
    if alignment.turns == 0:
        return False, "the trajectories carry no token log-probs (the teacher gave text only)"
    if alignment.aligned == 0:
        if alignment.foreign_tokens:
            why = f"the teacher's token {alignment.example} is not a token of the student"
        else:
            why = "no teacher turn tokenizes as the student tokenizes it"
        return False, f"{why}: logit KD needs a shared tokenizer (cross-tokenizer distillation is not supported)"
    share = alignment.aligned / alignment.turns
    return (
        True,
        f"the trajectories carry the teacher's top-k log-probs ({alignment.aligned}/{alignment.turns} turns, {share:.0%}, line up with the student's tokens)",
    )


def choose(
    recipe: Recipe, student_tokenizer, alignment: Alignment | None, student_transforms: list[str] | None = None
) -> Signal:
    """The signal to train on. `alignment`: how recorded log-probs lined up (None: not looked at).
    `student_transforms`: the student's `lm.scoring.logit_transforms` (a soft cap, a logit scale); under
    `auto` such a student trains on tokens, said, since no KD signal reproduces its logits (a forced one is
    refused as the KD step is set up: `distill.step.check_plain_head`)."""
    wanted, notes = recipe.sft.distill, []
    if recipe.sft.kd_weight == 0 or wanted == "tokens":
        return Signal("tokens", "sft.kd_weight = 0" if recipe.sft.kd_weight == 0 else "sft.distill = tokens")
    if wanted == "auto" and student_transforms:
        return Signal(
            "tokens", transformed_logits_reason("student", student_transforms) + ": training on the teacher's tokens"
        )
    if wanted in ("auto", "logits"):
        signal, why_not = choose_logits(recipe, student_tokenizer)
        if signal:
            return signal
        if wanted == "logits":
            raise WarmstartError(f"sft.distill = logits: {why_not}")
        notes.append(why_not)
    usable, why = topk_verdict(alignment or Alignment())
    if usable:
        return Signal("topk", "; ".join([*notes, why]))
    if wanted == "topk":
        raise WarmstartError(f"sft.distill = topk: {why}")
    return Signal("tokens", "; ".join([*notes, why]) + ": training on the teacher's tokens")
