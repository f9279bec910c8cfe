"""The decoder's hidden states at a batch's scored positions, with each prefix that several rows share run once.

GRPO's rows come in groups: a task's samples all start with the same prompt, and the update scores only
the policy's tokens after it. Run row by row, the prompt is computed once per sample (8 times for a group
of 8); here the rows are cut where their scoring starts, each distinct prefix runs once through the
decoder into a KV cache (with gradients), the cache is expanded to the rows that share it (`SelectRows`, so
its gradient sums the rows'), and the rows' suffixes run on top of it. Same function of the weights as the
plain forward, fewer FLOPs. Measured (2 threads, AVX-512 EPYC): SmolLM2-135M's GRPO update, 16 rows of a
48-token prompt and <= 32 new tokens, 11.5 -> 5.0 s; the tiny model's, 128 rows of ~64 tokens of which 24
prompt, ~10 % (its update chunks split the groups, and short rows are dispatch-bound). The floats differ
from the plain forward's at rounding level (other matmul shapes).

The cut: row r's prefix is its tokens before its first scored position f (position f predicts token f+1
and needs its own hidden state), so rows share a prefix where their first f tokens are equal.
"""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache

from .generation import cache_argument, distinct_prompts, left_padded, left_padded_positions


def prefix_of_rows(ids: torch.Tensor, scored: torch.Tensor) -> tuple[list[int], list[int], list[list[int]]] | None:
    """The rows with a scored position, which distinct prefix each has (an index into the returned
    prefixes: the tokens before its first scored position), and the prefixes; None when no two rows share
    one (nothing to save) or a row is scored from its first position (no prefix to share)."""
    rows = scored.any(dim=1).nonzero()[:, 0].tolist()
    first = scored.to(torch.int8).argmax(dim=1).tolist()
    if any(first[row] == 0 for row in rows):
        return None
    prefixes, which = distinct_prompts([ids[row, : first[row]].tolist() for row in rows])
    if len(prefixes) == len(which):
        return None
    return rows, which, prefixes


def expand_to_rows(cache: DynamicCache, row_prefix: torch.Tensor) -> None:
    """Each layer's K/V from [P, ...] prefixes to [B, ...] rows, by `index_select` (`SelectRows`): its
    backward sums the rows sharing a prefix in index order (`index_add_` on the CPU), so two runs give the
    same gradients there (a GPU adds them atomically, in no fixed order). The cache's own `batch_select_indices`
    indexes (`x[idx]`), whose backward on the CPU accumulates repeated indices in an order of its own:
    GRPO updates then differed at rounding level run to run. A layer type holding more than keys and
    values (an indexer's state) keeps its own selection."""
    for layer in cache.layers:
        if holds_more_than_keys_and_values(layer):
            layer.batch_select_indices(row_prefix)
            continue
        layer.keys = SelectRows.apply(layer.keys, row_prefix)
        layer.values = SelectRows.apply(layer.values, row_prefix)


class SelectRows(torch.autograd.Function):
    """`tensor.index_select(0, index)`, whose backward makes the incoming gradient contiguous before it
    sums the rows into their prefixes (`index_add_`, in index order on the CPU: the same floats as
    `index_select`'s own backward). That gradient arrives as a slice of the gradient of the K/V the
    attention concatenated (prefix and suffix along the positions), and `index_add_` over such strided
    rows is slow: on the tiny GRPO update, 9.5 ms of a ~0.32 s update went to it (torch.profiler, 6
    recorded batches, 2 threads, AVX-512 EPYC); with the copy first, the update 0.369 vs 0.381 s (8
    interleaved repetitions, medians), equal weights."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = tensor.shape[0]
        return tensor.index_select(0, index)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        summed = gradient.new_zeros((ctx.rows, *gradient.shape[1:]))
        return summed.index_add_(0, index, gradient.contiguous()), None


def shared_prefix_hidden(model, ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor | None:
    """The decoder's last hidden states at the `scored` positions ([N, D], row-major order, as
    `hidden[scored]` of the plain forward), computed with shared prefixes run once; None where no two
    rows share a prefix. ids: [B, L] right-padded (padding after every scored position, attended as in
    the plain forward: causal, so it changes nothing); scored: [B, L-1] bool."""
    cut = prefix_of_rows(ids, scored)
    if cut is None or checkpointing_drops_the_cache(model):
        return None
    rows, which, prefixes = cut
    cache, prefix_mask = prefix_cache(model, prefixes, ids.device)
    if cache_dropped(cache):
        return None
    return suffix_hidden(model, cache, prefix_mask, prefixes, which, ids[rows], scored[rows])


def prefix_cache(model, prefixes: list[list[int]], device) -> tuple[DynamicCache, torch.Tensor]:
    """The distinct prefixes through the decoder, left-padded as a prompt batch for generation is: their
    KV cache (with gradients where enabled) and padding mask [P, longest]."""
    prefix_ids, prefix_mask = left_padded(prefixes, 0, device)
    cache = DynamicCache(config=model.config)
    model.get_decoder()(
        input_ids=prefix_ids,
        attention_mask=prefix_mask,
        position_ids=left_padded_positions(prefix_mask),
        use_cache=True,
        **cache_argument(model, cache),
    )
    return cache, prefix_mask


def suffix_hidden(
    model, cache: DynamicCache, prefix_mask: torch.Tensor, prefixes: list[list[int]], which: list[int], ids, scored
) -> torch.Tensor:
    """Rows' hidden states at their scored positions, each row's suffix (from its first scored position)
    run on top of its prefix's K/V (`which`: the row's index into the cache's prefixes). `cache` is
    expanded to the rows in place. ids [n, L], scored [n, L-1]: the rows, each with something scored."""
    device = ids.device
    row_prefix = torch.tensor(which, device=device)
    expand_to_rows(cache, row_prefix)
    # Each row's suffix: from its first scored position to the batch's width, right-padded.
    starts = [len(prefixes[w]) for w in which]
    suffix_width = ids.shape[1] - min(starts)
    suffix_ids = torch.zeros((len(which), suffix_width), dtype=torch.long, device=device)
    suffix_scored = torch.zeros((len(which), suffix_width), dtype=torch.bool, device=device)
    for row, start in enumerate(starts):
        suffix_ids[row, : ids.shape[1] - start] = ids[row, start:]
        suffix_scored[row, : scored.shape[1] - start] = scored[row, start:]
    suffix_positions = torch.tensor(starts, device=device)[:, None] + torch.arange(suffix_width, device=device)
    attention = torch.cat([prefix_mask[row_prefix], torch.ones_like(suffix_ids)], dim=1)
    hidden = model.get_decoder()(
        input_ids=suffix_ids,
        attention_mask=attention,
        position_ids=suffix_positions,
        use_cache=True,
        **cache_argument(model, cache),
    ).last_hidden_state
    return hidden[suffix_scored]


class PrefixPass:
    """A whole batch's distinct prefixes run once for all the chunks an update cuts it into (`hidden`),
    where `shared_prefix_hidden` runs each chunk's own: a chunk's suffixes attend to K/V read from
    detached copies of the pass's, whose gradients add up over the chunks, and `backward` sends their
    sum through the prefixes' pass once. Measured on the tiny GRPO model (128 rows of 16 prompts in 3
    chunks, 2 threads): the prefixes' forward alone took ~16 ms of a ~330 ms update, run once per chunk;
    run once per batch, the update 0.366 vs 0.383 s (6 recorded batches x 8 interleaved repetitions,
    medians; 2-core AVX-512 EPYC).
    `start` returns None where nothing is shared, a layer's cache holds more than keys and values, or
    gradient checkpointing drops the cache."""

    def __init__(self, cache: DynamicCache, prefix_mask, prefixes, prefix_of_row: dict[int, int]):
        self.cache, self.prefix_mask, self.prefixes, self.prefix_of_row = cache, prefix_mask, prefixes, prefix_of_row
        self.leaves = [(detached(layer.keys), detached(layer.values)) for layer in cache.layers]

    @classmethod
    def start(
        cls, model, ids: torch.Tensor, scored: torch.Tensor, batch_rows: list[int], max_tokens: int | None = None
    ) -> PrefixPass | None:
        """ids [B, L], scored [B, L-1]: the rows an update computes, `batch_rows` their indices in the batch.
        None also where the distinct prefixes, left-padded, are more than `max_tokens` tokens: the pass's
        activations live through every chunk's, so the caller bounds them by what its memory allows."""
        cut = prefix_of_rows(ids, scored)
        if cut is None or checkpointing_drops_the_cache(model):
            return None
        rows, which, prefixes = cut
        if max_tokens is not None and len(prefixes) * max(len(p) for p in prefixes) > max_tokens:
            return None
        cache, prefix_mask = prefix_cache(model, prefixes, ids.device)
        if cache_dropped(cache) or any(holds_more_than_keys_and_values(layer) for layer in cache.layers):
            return None
        return cls(cache, prefix_mask, prefixes, {batch_rows[r]: w for r, w in zip(rows, which)})

    def hidden(self, model, ids: torch.Tensor, scored: torch.Tensor, batch_rows: list[int]) -> torch.Tensor | None:
        """As `shared_prefix_hidden` for a chunk of the batch (`batch_rows`: its rows' indices in it); None
        where a row's prefix is not the pass's (not one of the rows it was started on)."""
        rows = scored.any(dim=1).nonzero()[:, 0].tolist()
        if not rows or any(batch_rows[r] not in self.prefix_of_row for r in rows):
            return None
        cache = copy.copy(self.cache)
        cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        for layer, (keys, values) in zip(cache.layers, self.leaves):
            layer.keys, layer.values = keys, values
        which = [self.prefix_of_row[batch_rows[r]] for r in rows]
        return suffix_hidden(model, cache, self.prefix_mask, self.prefixes, which, ids[rows], scored[rows])

    def backward(self) -> None:
        """The chunks' gradients with respect to the prefixes' K/V, through the prefixes' pass."""
        outputs, gradients = [], []
        for layer, leaves in zip(self.cache.layers, self.leaves):
            for tensor, leaf in zip((layer.keys, layer.values), leaves):
                if leaf.grad is not None:
                    outputs.append(tensor)
                    gradients.append(leaf.grad)
        if outputs:
            torch.autograd.backward(outputs, gradients)


def detached(tensor: torch.Tensor) -> torch.Tensor:
    """A leaf with the tensor's values, gathering a gradient where the tensor has one."""
    return tensor.detach().requires_grad_(tensor.requires_grad)


def holds_more_than_keys_and_values(layer) -> bool:
    """A cache layer with per-row state of its own besides K/V (an indexer's), which its own selection
    expands; by name, the two kinds known to hold only K/V (and constants), in any transformers version."""
    return type(layer).__name__ not in ("DynamicLayer", "DynamicSlidingWindowLayer")


def cache_dropped(cache: DynamicCache) -> bool:
    """Whether the decoder left the cache empty: GPT-2 under gradient checkpointing drops it in training mode
    even without gradients (the old log-probs' pass), which `checkpointing_drops_the_cache` cannot tell
    from the model (Llama's layers keep it there); the plain forward runs instead."""
    return not cache.layers or any(getattr(layer, "keys", None) is None for layer in cache.layers)


def checkpointing_drops_the_cache(model) -> bool:
    """Whether the decoder's layers run with gradient checkpointing now (training, gradients on): they
    then drop the KV cache (transformers replays a layer in the backward and would write it twice), so a
    prefix's K/V cannot be kept for the suffixes; the plain forward runs instead."""
    if not (model.training and torch.is_grad_enabled()):
        return False
    return any(getattr(module, "gradient_checkpointing", False) is True for module in model.modules())
