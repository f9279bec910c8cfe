"""GRPO's policy without dropout.

Every GRPO pass of the policy is in training mode (gradient checkpointing applies only there): the no-grad
pass that takes the "old" log-probs, the update's, and the checks'. With dropout on, each pass draws its own
masks, so the update's ratio to the old log-probs is not 1 at the first update, and the truncated
importance weights, the trainer-sampler mismatch statistics and the KL to the reference (which runs in
eval mode, as the sampler does) measure that noise: a 2-layer GPT-2 student (dropout 0.1, its default) had
13 % of its tokens outside the clip range at an update that had not moved the weights, a k3 KL of 29 nats
a token where it is 0, and `mismatch_abs_logp` 0.12-0.14 where a tiny Llama's is 2.6e-7. So the policy's
dropout is turned off where GRPO loads it (as other RL trainers do), and a forward still random after that
(a router's jitter noise, a rate a module keeps under another name) is said.
"""

from __future__ import annotations

import torch


def disable_dropout(model: torch.nn.Module) -> list[str]:
    """Turn off every dropout of `model`: its dropout modules (a LoRA adapter's included) and the float rates
    attention modules keep for their kernels (Llama's `attention_dropout`). What was on, for the log."""
    found = set()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            found.add(f"{type(module).__name__}(p={module.p:g})")
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float) and value > 0:
                found.add(f"{name}={value:g}")
                setattr(module, name, 0.0)
    return sorted(found)


@torch.no_grad()
def forward_is_repeatable(model: torch.nn.Module, vocab_size: int) -> bool:
    """Whether two training-mode forwards of the same 8 tokens give the same logits (no randomness left)."""
    device = next(model.parameters()).device
    ids = (torch.arange(8, device=device) * 7 + 3).remainder(vocab_size).unsqueeze(0)
    was_training = model.training
    model.train()
    try:
        first, second = (model(input_ids=ids).logits for _ in range(2))
    finally:
        model.train(was_training)
    return torch.equal(first, second)
