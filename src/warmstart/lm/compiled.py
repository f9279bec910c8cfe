"""`sft.compile` / `grpo.compile`: the student's decoder run through `torch.compile`, or eager if that fails.

What is compiled is the decoder's forward (`model.get_decoder()`), in place: every path a stage takes
goes through it (SFT's loss calls the decoder and the output head separately, GRPO's sampler and update
call the whole model, which calls the decoder), and the model stays the same object with the same
state dict, so checkpoints, `save_pretrained` and the optimizer see nothing new (`torch.compile(model)`
would wrap it and prefix every key with `_orig_mod.`). The output head is one matmul: nothing to fuse.

Shapes: SFT's micro-batches are as wide as their longest row and GRPO's decoding batch shrinks as rows
stop while its KV cache grows, so dimensions change from call to call. `dynamic=True` compiles them
symbolic from the start: torch.compile's default (`dynamic=None`) compiles the first shape static, throws
that away at the first change and compiles again (a few SFT steps of the tiny model: 2 graphs against 1).
bench/compile.py measures whether it pays (bench/results/compile.md). Under CPU bf16 autocast warmstart's
own route for linear layers and attention stands aside inside the compiled graph (lm/precision.py).

A backend that cannot compile (no C++ compiler, an unsupported op, a bad backend name) fails at
`torch.compile`, at the first call, or at a later call that compiles another graph (GRPO's first call
samples without gradients, its update's first call compiles the graph with them); in each case the
decoder runs eager from then on, said in one WARNING line naming the reason, and the failed call runs
again eagerly. After the first call, only torch.compile's own errors (Dynamo's exception classes, the
backend's failures among them) fall back: any other is the model's own and raises, as it would eager.
What this cannot catch: AOTAutograd compiles a graph's backward at its first backward pass, inside
autograd's engine; a backend failing only there raises from `backward()`.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from ..errors import first_line

log = logging.getLogger(__name__)


def compile_decoder(model: torch.nn.Module, enabled: bool, key: str, **options) -> torch.nn.Module:
    """`model` with its decoder's forward compiled when `enabled` (`options` go to `torch.compile`,
    `dynamic=True` unless given); the same object either way. `key` names the knob in the warning of a
    fallback."""
    if not enabled:
        return model
    decoder = model.get_decoder()
    eager = decoder.forward
    try:
        compiled = torch.compile(eager, **{"dynamic": True, **options})
    except Exception as error:  # anything torch.compile refuses up front: the run goes on eager
        warn_eager(key, error)
        return model
    # An instance attribute shadows the class's forward; deleting it restores eager.
    decoder.forward = CompileGuard(decoder, compiled, key)
    return model


def is_compiled(model: torch.nn.Module) -> bool:
    """Whether the decoder's forward is the compiled one (False after a fallback)."""
    return isinstance(model.get_decoder().__dict__.get("forward"), CompileGuard)


class CompileGuard:
    """The compiled forward. Its first call (where tracing and code generation first happen) falls back on
    any exception; a later one on torch.compile's own (module docstring). A fallback puts the eager
    forward back and runs the call with it."""

    def __init__(self, decoder: torch.nn.Module, compiled: Callable, key: str):
        self.decoder, self.compiled, self.key, self.proven = decoder, compiled, key, False

    def __call__(self, *args, **kwargs):
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as error:
            if self.proven and not isinstance(error, torch._dynamo.exc.TorchDynamoException):
                raise
            del self.decoder.forward  # the class's eager forward again
            warn_eager(self.key, error)
            return self.decoder.forward(*args, **kwargs)
        self.proven = True
        return out


def warn_eager(key: str, error: BaseException) -> None:
    # Dynamo wraps the backend's error (BackendCompilerFailed, "backend=... raised:"): the innermost says why.
    while getattr(error, "inner_exception", None) is not None or error.__cause__ is not None:
        error = getattr(error, "inner_exception", None) or error.__cause__
    reason = first_line(error, 300)  # however long the compiler's report
    log.warning("%s: torch.compile failed (%s: %s); running eager", key, type(error).__name__, reason)
