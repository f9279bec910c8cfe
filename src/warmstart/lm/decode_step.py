"""The decoding loop's per-token step: a lean one for Llama and Qwen2 models, transformers' forward otherwise.

After the prefill (the model's own forward over the prompts), each decoding step runs one token per row.
Through transformers' forward that step is many small calls per layer (mask building, cache update by
concatenation, SDPA's flash kernel over a one-token query, module dispatch), and pruning finished rows
copies the whole cache. `LeanDecoder` runs the same arithmetic with the model's own weights, norms and
rotary embedding: K/V written into buffers allocated with room to grow (no concatenation), attention as
two batched matmuls over them (a GQA group's query heads are one matmul's rows), and a finished row's
slot filled by a live row from the batch's end (only the moved rows are copied, not the whole cache).

Measured on the tiny model (4 layers x 128, 128 rows of 16 prompts, GRPO's recorded batches replayed,
2 threads, AVX-512 EPYC; interleaved, medians of 24): 0.43-0.54 s per sampling through transformers'
forward, 0.31-0.39 s through this, as the machine's load varied between runs.
The floats differ from the forward's at rounding level (batched matmul attention instead of the flash
kernel: sampled log-probs within ~1e-5); greedy decoding equals `generate`'s (tested).

Attention reads each layer's whole buffer, room not yet written included (zeros, weighed 0 by a -inf
bias), not the written prefix of each row's slab: one contiguous block streams from memory, where the
prefixes' gaps broke the hardware's prefetching. Timed alone (2-core EPYC, CPU flags avx2 avx512_bf16,
2 threads; 128 rows x 4 heads x 32, the 4 layers'
buffers cold), a layer's attention over 60 positions took 0.20-0.23 ms packed, 0.56-0.64 ms as the
prefix of 64-152-position slabs; a gap of 4 positions per slab was already as slow. So the room grows by
ROOM_STEP positions at a time (a copy of the buffers each ROOM_STEP steps) instead of doubling. GRPO's
recorded batches replayed (as above): 0.219 vs 0.261 s and 0.260 vs 0.319 s per sampling (6 and 8
interleaved repetitions, medians); the floats move at rounding level (sums over more terms, all but
the written ones 0): 1 row of 768 sampled another token at some step, log-probs before it within 1e-5.

Used only where it computes exactly what the model does: a plain `LlamaForCausalLM` or `Qwen2ForCausalLM`
(plain `nn.Linear` projections: a LoRA-wrapped model is not; no sliding window; no module whose forward
is hooked or replaced, as `serve`'s LoRA adapters and accelerate's offloading do) whose decoder is not
compiled (`grpo.compile` then compiles the step that runs). Any other model decodes through its forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LEAN_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
ROOM_STEP = 32  # positions of room the K/V buffers start with past the prompt, and add when full


class ForwardDecoder:
    """Decoding through the model's forward and a DynamicCache (any architecture)."""

    def __init__(self, model, cache, cache_arg: dict, attention: torch.Tensor):
        self.model, self.cache, self.cache_arg, self.attention = model, cache, cache_arg, attention

    def step(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Logits [n, V] after one more token per row (token, position: [n], [n, 1])."""
        self.attention = torch.cat([self.attention, self.attention.new_ones((len(token), 1))], dim=1)
        return self.model(
            input_ids=token[:, None],
            attention_mask=self.attention,
            position_ids=position,
            use_cache=True,
            **self.cache_arg,
        ).logits[:, -1]

    def drop(self, done: torch.Tensor) -> torch.Tensor:
        """Drops the rows where `done`; returns the old index of each row kept, in its new order."""
        keep = (~done).nonzero()[:, 0]
        self.cache.batch_select_indices(keep)
        self.attention = self.attention[keep]
        return keep


def lean_decoding_blocker(model) -> str | None:
    """Why `LeanDecoder` cannot stand in for this model's forward, or None if it can."""
    from .compiled import is_compiled

    if type(model) not in lean_architectures():  # the classes themselves: a remote-code namesake is not them
        return f"{type(model).__name__} is not one of transformers' {', '.join(LEAN_ARCHITECTURES)}"
    if is_compiled(model):
        return "its decoder is compiled"
    if any(m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__ for m in model.modules()):
        return "a module's forward is hooked or replaced (served LoRA adapters, offloading)"
    if model.config.hidden_act != "silu" or getattr(model.config, "pretraining_tp", 1) != 1:
        return "its MLP is not the plain SiLU one"
    if model.training and model.config.attention_dropout:
        return "attention dropout is on"
    if type(model.lm_head) is not torch.nn.Linear or model.lm_head.bias is not None:
        return "its output head is not a plain linear layer"
    for layer in model.model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        if getattr(attention, "sliding_window", None):
            return "it has sliding-window attention"
        projections = [getattr(attention, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
        projections += [getattr(mlp, p) for p in ("gate_proj", "up_proj", "down_proj")]
        if any(type(p) is not torch.nn.Linear for p in projections):
            return "a projection is not a plain linear layer (LoRA, quantized)"
        if any(p.bias is not None for p in projections[3:]):
            return "its output or MLP projections have biases"
    return None


def lean_architectures() -> tuple[type, ...]:
    import transformers

    return tuple(getattr(transformers, name) for name in LEAN_ARCHITECTURES)


class LeanDecoder:
    """Llama-architecture decoding over K/V buffers (see the module's text). Rows may be reordered by
    `drop`: the caller keeps the map from batch position to its own row."""

    def __init__(self, model, cache, which: torch.Tensor, attention: torch.Tensor, max_new_tokens: int):
        """Takes the prefill's `cache` (one entry per distinct prompt); `which`: each row's prompt in it;
        `attention`: the rows' prompt masks [n, P] (0 on left padding)."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.rotate = apply_rotary_pos_emb  # the same rotation for Qwen2 (its module re-exports it)
        self.model, self.decoder = model, model.model
        first = model.model.layers[0].self_attn
        self.head_dim, self.scaling = first.head_dim, first.scaling
        self.heads = model.config.num_attention_heads
        self.kv_heads = model.config.num_key_value_heads
        n, self.length = attention.shape
        self.rows, self.limit = n, self.length + max_new_tokens
        room = min(self.limit, self.length + ROOM_STEP)
        self.keys = [self.buffer(layer.keys[which], room) for layer in cache.layers]
        self.values = [self.buffer(layer.values[which], room) for layer in cache.layers]
        # Additive attention bias per key position: -inf on the prompts' left padding and on the positions
        # not written yet (each opened as its token's K/V is written).
        self.bias = self.keys[0].new_full((n, room), float("-inf"))
        self.bias[:, : self.length].masked_fill_(attention == 1, 0.0)

    def buffer(self, filled: torch.Tensor, room: int) -> torch.Tensor:
        """[n, kv_heads, room, head_dim] zeros with `filled` at the first positions: attention reads the
        whole room, and a position not written yet must be finite (its bias, -inf, then weighs it 0)."""
        n, kv_heads, length, head_dim = filled.shape
        out = filled.new_zeros((n, kv_heads, room, head_dim))
        out[:, :, :length] = filled
        return out

    def grow(self) -> None:
        """Adds ROOM_STEP positions of room (up to the prompt plus max_new_tokens) when the next is past it."""
        room = min(self.limit, self.bias.shape[1] + ROOM_STEP)
        n, length = self.rows, self.length
        self.keys = [self.buffer(k[:n, :, :length], room) for k in self.keys]
        self.values = [self.buffer(v[:n, :, :length], room) for v in self.values]
        bias = self.bias.new_full((n, room), float("-inf"))
        bias[:, :length] = self.bias[:n, :length]
        self.bias = bias

    def step(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Logits [n, V] after one more token per row (token, position: [n], [n, 1])."""
        if self.length == self.bias.shape[1]:
            self.grow()
        self.bias[: self.rows, self.length] = 0.0  # the new token attends to itself
        x = self.decoder.embed_tokens(token)  # [n, C]
        cos, sin = self.decoder.rotary_emb(x, position)  # [n, 1, head_dim]
        for index, layer in enumerate(self.decoder.layers):
            x = x + self.attend(index, layer.self_attn, layer.input_layernorm(x), cos, sin)
            mlp = layer.mlp
            y = layer.post_attention_layernorm(x)
            gate, up = F.linear(y, mlp.gate_proj.weight), F.linear(y, mlp.up_proj.weight)
            x = x + F.linear(F.silu(gate) * up, mlp.down_proj.weight)
        self.length += 1
        # The output head as weight @ x^T: for a few rows against a large vocabulary, x @ weight^T makes
        # the BLAS pack the whole weight each call; measured on SmolLM2's head (49,152 x 576, 2 threads),
        # 7 rows: 34 vs 8 ms, 16 rows: 18 vs 14 ms, 128 rows: 62 vs 48 ms.
        return torch.mm(self.model.lm_head.weight, self.decoder.norm(x).t()).t()

    def attend(self, index: int, attention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """One layer's self-attention for the new token of each row, its K/V written at `self.length`."""
        n, d, group = self.rows, self.head_dim, self.heads // self.kv_heads
        q = linear(attention.q_proj, x).view(n, self.heads, 1, d)
        k = linear(attention.k_proj, x).view(n, self.kv_heads, 1, d)
        q, k = self.rotate(q, k, cos, sin)  # cos [n, 1, d] -> [n, 1, 1, d]: every head alike
        keys, values = self.keys[index], self.values[index]
        keys[:n, :, self.length] = k[:, :, 0]
        values[:n, :, self.length] = linear(attention.v_proj, x).view(n, self.kv_heads, d)
        # The whole room, one contiguous block (module docstring): [n * kv, room, d] views, no copy.
        room = keys.shape[2]
        keys = keys[:n].view(n * self.kv_heads, room, d)
        values = values[:n].view(n * self.kv_heads, room, d)
        scores = torch.bmm(q.view(n * self.kv_heads, group, d), keys.transpose(1, 2)).view(n, self.heads, room)
        scores = scores * self.scaling + self.bias[:n, None]
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
        out = torch.bmm(weights.view(n * self.kv_heads, group, room), values)
        return F.linear(out.view(n, self.heads * d), attention.o_proj.weight)

    def drop(self, done: torch.Tensor) -> torch.Tensor:
        """Drops the rows where `done`: each finished row below the new batch size takes a live row from
        above it. Returns the old index of each row kept, in its new order."""
        kept = self.rows - int(done.sum())
        holes = done[:kept].nonzero()[:, 0]
        movers = (~done[kept:]).nonzero()[:, 0] + kept
        if len(holes):
            for buffer in self.keys + self.values:
                buffer[holes, :, : self.length] = buffer[movers, :, : self.length]
            self.bias[holes, : self.length] = self.bias[movers, : self.length]
        self.rows = kept
        order = torch.arange(kept, device=done.device)
        order[holes] = movers
        return order


def linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The layer's function (with its bias: Qwen2's q/k/v have one) without nn.Module's call machinery."""
    return F.linear(x, layer.weight, layer.bias)
