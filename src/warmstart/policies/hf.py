"""A local transformers model as a policy: batched, KV-cached generation with left padding."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from ..chat import parse_completion, render_prompt, stop_token_ids
from ..models import load_model_and_tokenizer
from ..types import Provenance, Trajectory, Usage
from .base import Request, Sampling


def batch_seed(seed: int, requests: list[Request]) -> int:
    first = f"{seed}/{requests[0].task.id}/{requests[0].sample_index}/{len(requests)}"
    return int.from_bytes(hashlib.sha256(first.encode()).digest()[:4], "little")


class HFPolicy:
    def __init__(self, path: Path, key: str):
        self.spec = f"hf:{path}"
        self.model, self.tokenizer = load_model_and_tokenizer(path, key)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)

    @torch.inference_mode()
    def rollout(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Trajectory]:
        prompts = [render_prompt(self.tokenizer, r.task.prompt) for r in requests]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(batch_seed(seed, requests))
        sample = sampling.temperature > 0
        output = self.model.generate(
            **batch,
            do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
            top_k=None,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1]:].tolist()
        prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
        return [self._trajectory(r, tokens, n_in, sampling, seed) for r, tokens, n_in in zip(requests, new_tokens, prompt_lengths)]

    def _trajectory(self, request: Request, tokens: list[int], n_in: int, sampling: Sampling, seed: int) -> Trajectory:
        stop_at = next((i for i, t in enumerate(tokens) if t in self.stop_ids), None)
        produced = tokens if stop_at is None else tokens[:stop_at]
        text = self.tokenizer.decode(produced, skip_special_tokens=True)
        return Trajectory(
            task_id=request.task.id,
            sample_index=request.sample_index,
            policy=self.spec,
            messages=[*request.task.prompt, parse_completion(text)],
            usage=[Usage(tokens_in=n_in, tokens_out=len(produced) + (stop_at is not None))],
            finish_reason="length" if stop_at is None else "stop",
            provenance=Provenance(
                provider="hf",
                model=self.spec[3:],
                sampling={"temperature": sampling.temperature, "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens},
                seed=seed,
                created=time.time(),
            ),
        )
