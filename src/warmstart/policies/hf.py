"""A local transformers model as a policy: batched, KV-cached generation with left padding."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..chat import parse_completion, render_prompt, stop_token_ids
from ..models import load_model_and_tokenizer
from ..types import Message, Provenance, Trajectory, Usage
from .base import Request, Sampling


@dataclass
class Sampled:
    prompt_ids: list[int]
    completion_ids: list[int]  # up to and including the stop token, if one came
    stopped: bool  # False: cut by max_new_tokens


def batch_seed(seed: int, requests: list[Request]) -> int:
    first = f"{seed}/{requests[0].task.id}/{requests[0].sample_index}/{len(requests)}"
    return int.from_bytes(hashlib.sha256(first.encode()).digest()[:4], "little")


@torch.inference_mode()
def sample(model, tokenizer, prompts: list[list[Message]], sampling: Sampling, stop_ids: list[int], seed: int) -> list[Sampled]:
    """Sample one completion per prompt; the exact token ids are kept (RL needs them, not re-tokenized text)."""
    texts = [render_prompt(tokenizer, p) for p in prompts]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    do_sample = sampling.temperature > 0
    output = model.generate(
        **batch,
        do_sample=do_sample,
        temperature=sampling.temperature if do_sample else None,
        top_p=sampling.top_p if do_sample else None,
        top_k=None,
        max_new_tokens=sampling.max_new_tokens,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    width = batch["input_ids"].shape[1]
    out = []
    for row, attention, generated in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), output[:, width:].tolist()):
        prompt_ids = [t for t, keep in zip(row, attention) if keep]
        stop_at = next((i for i, t in enumerate(generated) if t in stop_ids), None)
        completion = generated if stop_at is None else generated[: stop_at + 1]
        out.append(Sampled(prompt_ids, completion, stop_at is not None))
    return out


def completion_message(tokenizer, sampled: Sampled) -> Message:
    produced = sampled.completion_ids[:-1] if sampled.stopped else sampled.completion_ids
    return parse_completion(tokenizer.decode(produced, skip_special_tokens=True))


class HFPolicy:
    def __init__(self, path: Path, key: str):
        self.spec = f"hf:{path}"
        self.model, self.tokenizer = load_model_and_tokenizer(path, key)
        self.model.eval()
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)

    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        samples = sample(self.model, self.tokenizer, [r.task.prompt for r in requests], sampling, self.stop_ids, batch_seed(seed, requests))
        return [self._trajectory(r, s, sampling, seed) for r, s in zip(requests, samples)]

    def _trajectory(self, request: Request, sampled: Sampled, sampling: Sampling, seed: int) -> Trajectory:
        return Trajectory(
            task_id=request.task.id,
            sample_index=request.sample_index,
            policy=self.spec,
            messages=[*request.task.prompt, completion_message(self.tokenizer, sampled)],
            usage=[Usage(tokens_in=len(sampled.prompt_ids), tokens_out=len(sampled.completion_ids))],
            finish_reason="stop" if sampled.stopped else "length",
            provenance=Provenance(
                provider="hf",
                model=self.spec[3:],
                sampling={"temperature": sampling.temperature, "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens},
                seed=seed,
                created=time.time(),
            ),
        )
