"""Whether a model keeps packed examples apart.

Packing (`train/data.py`) relies on transformers turning restarted position ids into a block-diagonal causal
mask. Llama-like models do; others do not, and let a packed example see the ones before it in its row:
changing only the first example moved the second one's logits by up to 0.07 in OPT and MPT, 1e-3 in BLOOM,
and the state of a convolution or Mamba layer (LFM2, Falcon-H1) carries across too. Such a model is trained
on one example per row (padding costs compute, not correctness), which `warmstart sft` says once.
"""

from __future__ import annotations

import torch

# Far above the float noise of the same logits through two kernel shapes (~1e-6 in fp32), far below what a
# leak moves them by (1e-4 .. 1e-1 measured).
TOLERANCE = 1e-5


@torch.no_grad()
def keeps_examples_apart(model: torch.nn.Module, vocab_size: int) -> bool:
    """Whether the second of two examples packed in one row has the logits it has alone (fp32, eval mode)."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randint(0, vocab_size, (1, n), generator=generator).to(device) for n in (7, 9))
    row = torch.cat([first, second], dim=1)
    positions = torch.cat([torch.arange(7), torch.arange(9)]).unsqueeze(0).to(device)
    was_training = model.training
    model.eval()
    try:
        packed = model(input_ids=row, position_ids=positions, use_cache=False).logits[:, 7:].float()
        alone = model(input_ids=second, use_cache=False).logits.float()
    finally:
        model.train(was_training)
    scale = alone.abs().max().clamp(min=1.0)
    return bool(((packed - alone).abs().max() / scale) <= TOLERANCE)
