"""What a training step's activations take, per the model's config: the memory plan's activation terms
(memory_plan.py), each measured against real runs (docs/memory.md).

`Shape.of(config)` reads what the terms need of a config (layers, widths, heads, the MLP's kind, attention
dropout); `activation_bytes` is one forward's saved activations, with or without gradient checkpointing.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from . import host_memory

FLOAT32 = 4
# Saved activations per token and layer of a Llama decoder layer in floats, counted from what
# autograd keeps (two RMSNorms 3h each, q and its rotary copy 2h, k/v/k-rotary 3 x kv, attention output
# and its contiguous copy 2h, the residual h, gate/up/silu/product 4 x intermediate), times this
# factor measured on CPU: peak RSS runs ~1.55x the saved tensors (backward's transient gradient
# buffers and the allocator's unreturned free blocks). Two configurations agreed to 1 %.
ACTIVATION_SLACK = 1.55


@dataclass(frozen=True)
class Shape:
    """What the activation, logits and KV-cache terms need of a config."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    mlp_floats: int  # what the MLP keeps per token: 4 x intermediate, or an MoE's routed experts' (mlp_floats_of)
    attention_dropout: bool  # attention probabilities then materialised, [rows, heads, seq, seq]
    intermediate: int  # the dense MLP's width
    composite_activation: bool  # the MLP's activation runs as a chain of elementwise operations (COMPOSITE_ACTIVATIONS)

    @classmethod
    def of(cls, config: PretrainedConfig) -> Shape:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return cls(
            layers=text.num_hidden_layers,
            hidden=text.hidden_size,
            heads=heads,
            kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=text.vocab_size,
            mlp_floats=mlp_floats_of(text),
            attention_dropout=any(getattr(text, name, None) for name in ATTENTION_DROPOUT_KEYS),
            intermediate=intermediate_size(text),
            composite_activation=activation_name(text) in COMPOSITE_ACTIVATIONS,
        )

    def saved_floats_per_token(self) -> int:
        """What autograd keeps of a layer per token (ACTIVATION_SLACK's comment), without the slack."""
        kv = self.kv_heads * self.head_dim
        q = self.heads * self.head_dim
        return 9 * self.hidden + 2 * q + 3 * kv + self.mlp_floats + self.heads  # + attention's logsumexp

    def layer_floats_per_token(self) -> float:
        return ACTIVATION_SLACK * self.saved_floats_per_token()

    def kv_cache_bytes(self, sequences: int, seq_len: int) -> int:
        return sequences * seq_len * self.layers * 2 * self.kv_heads * self.head_dim * FLOAT32

    def layer_bytes(self, tokens: int, seq_len: int) -> int:
        """One decoder layer's activations over `tokens` tokens in rows of `seq_len`, fp32."""
        return int(self.layer_floats_per_token() * tokens * FLOAT32) + self.attention_probability_bytes(tokens, seq_len)

    def attention_probability_bytes(self, tokens: int, seq_len: int) -> int:
        """One layer's saved attention probabilities where dropout applies to them: torch's fused attention
        kernels do not take dropout on the CPU, so the math path keeps the softmax, the dropout mask and
        the dropped probabilities of every row, [rows, heads, seq, seq] each. Measured (GPT-2 shape, h256,
        4 layers, 4 rows x 1024, attn_pdrop 0.1): 2.9 such fp32 tensors per layer above the same model
        without it; 3 counted. 0 without attention dropout."""
        return 3 * self.heads * tokens * seq_len * FLOAT32 if self.attention_dropout else 0

    def attention_gradient_bytes(self, tokens: int, seq_len: int) -> int:
        """What a layer's backward adds to its saved attention probabilities where dropout applies to them:
        the gradients of the dropped probabilities and of the softmax's input, [rows, heads, seq, seq] fp32
        each. Counted under gradient checkpointing only: there the peak is the recomputed layer's backward,
        with its probabilities and their gradients live together (measured, GPT-2 shape, h256, 2-8 layers,
        4 rows x 1024: 4.3-5.6 such tensors above the same model without dropout, 3 counted before); without
        it the peak comes while every layer still holds its own, and the 3 per layer measured include them."""
        return 2 * self.heads * tokens * seq_len * FLOAT32 if self.attention_dropout else 0


# Where configs keep the attention dropout (Llama, Qwen, Mistral: attention_dropout; GPT-2: attn_pdrop;
# BERT-style: attention_probs_dropout_prob).
ATTENTION_DROPOUT_KEYS = ("attention_dropout", "attn_pdrop", "attention_probs_dropout_prob")
# Where configs name the MLP's activation (Llama, Qwen, Phi: hidden_act; GPT-2, GPT-J, CodeGen:
# activation_function; Gemma: hidden_activation).
ACTIVATION_KEYS = ("hidden_act", "activation_function", "hidden_activation")
# Activations transformers computes as a chain of elementwise torch operations in Python (its
# activations.py: NewGELUActivation's 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))) and kin),
# not one kernel: each step writes a tensor of the MLP's width, [tokens, intermediate]. GPT-2's default
# (gelu_new) among them; silu, gelu, gelu_pytorch_tanh and relu are one kernel each.
COMPOSITE_ACTIVATIONS = frozenset(
    {"gelu_new", "gelu_fast", "gelu_accurate", "gelu_python", "gelu_python_tanh", "quick_gelu"}
)


def activation_name(config: PretrainedConfig) -> str | None:
    return next((value for key in ACTIVATION_KEYS if isinstance(value := getattr(config, key, None), str)), None)


def intermediate_size(config: PretrainedConfig) -> int:
    """The dense MLP's width (GPT-2: n_inner, None for 4 x hidden)."""
    return getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * config.hidden_size


def mlp_floats_of(config: PretrainedConfig) -> int:
    """Floats a layer's MLP keeps per token for backward. Dense: gate, up, their activation and product,
    4 x intermediate. MoE (num_experts_per_tok): each of the k routed experts keeps, for its copy of the
    token, its input and output (2 x hidden) and its own 4 x expert width (moe_intermediate_size, or
    intermediate_size where that is the expert's, as Mixtral's), plus a shared expert's 4 x width; the
    larger of the two where a model mixes dense and MoE layers. Mixtral shape (h256 i512, 8 experts,
    top 2, 4 layers, 4 x 1024 tokens): planned +11 % over the measured peak, the dense count -12 %."""
    dense = 4 * intermediate_size(config)
    routed = getattr(config, "num_experts_per_tok", None)
    if not routed:
        return dense
    expert = getattr(config, "moe_intermediate_size", None) or intermediate_size(config)
    shared = getattr(config, "shared_expert_intermediate_size", None) or 0
    return max(dense, routed * (2 * config.hidden_size + 4 * expert) + 4 * shared)


# Under gradient checkpointing, what stays per layer and token, in hidden-size floats: measured, not
# derived (the layer's input alone would be 1). Fitted on the tiny Llama at hidden 256 and 512, 4 and 8
# layers, 2,048-8,192 tokens a micro-batch (peak RSS of an SFT run: planned 1 x hidden had been 15-26 % under
# the whole run's peak; with 9, 2-7 % over; 2-core EPYC, torch 2.13, transformers 5.25).
CHECKPOINTED_HIDDEN_PER_LAYER = 9


# Under gradient checkpointing on the CPU, what a composite activation (COMPOSITE_ACTIVATIONS) adds, in
# tensors of [tokens, intermediate] fp32: measured, not derived. Its chain's tensors are written and freed
# again in every layer's forward and in the recomputed layer's forward and backward; where each is smaller
# than glibc's largest mmap threshold (host_memory.py: 32 MiB) it comes from the heap, and the freed ones
# leave gaps there that the next allocations do not fill, so the resident set grows by about
# CHAIN_HEAP_ONCE blocks plus CHAIN_HEAP_PER_LAYER a layer; larger ones are mapped and unmapped whole,
# leaving about CHAIN_MAPPED_ONCE (the recomputed layer's extra saved tensors and its backward's). Fitted
# on GPT-2 shapes (gelu_new against the same model with gelu, which the plan matched): h256 i1024 at 2-16
# layers x 4 rows x 1024 tokens (16 MiB blocks: +275, +295, +390, +630 MB), h512 i2048 4 layers x 2 rows
# (+320 MB); 32 MiB blocks (h256 x 8 rows, h512 x 4 rows): +100-195 MB (2-core EPYC, glibc, torch 2.13).
CHAIN_HEAP_ONCE = 12
CHAIN_HEAP_PER_LAYER = 2
CHAIN_MAPPED_ONCE = 6


def activation_bytes(shape: Shape, tokens: int, checkpointing: bool, seq_len: int, device: str) -> int:
    """Saved activations of one forward over `tokens` tokens in rows of `seq_len`, fp32. With gradient
    checkpointing what each layer keeps (`CHECKPOINTED_HIDDEN_PER_LAYER`), and one layer's full activations
    while it is recomputed, with its backward's attention gradients and, on the CPU, a composite
    activation's heap (`composite_activation_bytes`)."""
    per_layer = shape.layer_bytes(tokens, seq_len)
    if not checkpointing:
        return int(shape.layers * per_layer + shape.hidden * tokens * FLOAT32)  # + the embeddings' output
    kept = CHECKPOINTED_HIDDEN_PER_LAYER * shape.layers * shape.hidden * tokens * FLOAT32
    recomputed = per_layer + shape.attention_gradient_bytes(tokens, seq_len)
    return int(kept + recomputed + composite_activation_bytes(shape, tokens, device))


def composite_activation_bytes(shape: Shape, tokens: int, device: str) -> int:
    """What a composite activation's chain of [tokens, intermediate] tensors leaves resident under gradient
    checkpointing on the CPU (CHAIN_HEAP_ONCE and kin). Not on an accelerator: its caching allocator reuses
    blocks of one size, and no such run was measured."""
    if not shape.composite_activation or device != "cpu":
        return 0
    block = tokens * shape.intermediate * FLOAT32
    if block < host_memory.LARGEST_MMAP_THRESHOLD:
        return (CHAIN_HEAP_ONCE + CHAIN_HEAP_PER_LAYER * shape.layers) * block
    return CHAIN_MAPPED_ONCE * block
