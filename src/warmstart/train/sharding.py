"""Sharded data-parallel SFT (`sft.sharding = "fsdp"`): PyTorch's FSDP2 (`fully_shard`) over the processes
`torchrun` starts, for a student whose weights, gradients and AdamW state do not fit one device.

Each decoder layer is a unit of its own and the model is the root unit (the embedding, final norm and
head: tied embeddings stay in one unit). A process holds 1/N of every parameter, its gradient and its
optimizer state; a unit's full weights exist only while it computes. The step is the one of
train/distributed.py: each process trains its share of a step's rows with the step's global normalizer,
so FSDP's reduce-scatter must sum the gradients, not average them (divide factor 1).

The SFT loss calls the decoder and the head separately (train/sft.py: logits only at scored positions),
not the model's forward, where FSDP would unshard the root's parameters; the loss is registered as a
forward method of the root (`register_fsdp_forward_method`) so it gets the same hooks.

Mixed precision, explicit: parameters are kept and updated in fp32, gradients are reduced in fp32, and
the compute precision is `sft.precision`'s autocast, as without sharding.

Checkpoints: gathered to the main process (full state dicts, on the CPU) and saved in the ordinary
format (save_pretrained safetensors + the optimizer's state keyed by parameter name), so a run resumes
with any number of processes and the published model is a plain save_pretrained directory. The price:
the main process's CPU memory holds the whole model and its AdamW state while it writes (12 bytes per
parameter); torch.distributed.checkpoint's per-process files would avoid that, at the cost of a second
checkpoint format.

Not with LoRA (an adapter is small: plain data parallelism is the right tool) or logit distillation
(its chunked two-pass backward runs outside the model's forward): both are one error at start.
"""

from __future__ import annotations

import types

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from transformers import AutoModelForCausalLM

from ..config import SftConfig
from ..errors import WarmstartError
from .distributed import World

FULL_ON_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)


def check_shardable(cfg: SftConfig, world: World, uses_kd: bool) -> None:
    """What FSDP here cannot do, as one error before anything is trained."""
    if cfg.sharding != "fsdp":
        return
    if cfg.lora.r > 0:
        raise WarmstartError("sft.sharding = 'fsdp' with sft.lora: shard the whole model or train an adapter, not both")
    if uses_kd:
        raise WarmstartError(
            "sft.sharding = 'fsdp' trains on the teacher's tokens only: set sft.kd_weight = 0 or sft.distill = 'tokens'"
        )
    rows = cfg.rows_per_micro_batch * cfg.grad_accum
    if rows % world.size:  # every process must run as many forward/backward passes as the others
        raise WarmstartError(
            f"sft.sharding = 'fsdp': {rows} rows per step (rows_per_micro_batch x grad_accum) do not split "
            f"evenly over {world.size} processes"
        )


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder's list of layers, each an FSDP unit; a model laid out otherwise is one error."""
    get_decoder = getattr(model, "get_decoder", None)
    layers = getattr(get_decoder(), "layers", None) if callable(get_decoder) else None
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise WarmstartError(
            f"sft.sharding = 'fsdp': cannot wrap {type(model).__name__} (its decoder has no `layers` list, "
            "the units this sharding splits); train it with sharding = 'none' or LoRA"
        )
    return layers


def check_wrappable(config) -> None:
    """Before anything is built or written: a model of this config (on the meta device, which allocates
    nothing) has the layer list sharding splits."""
    with torch.device("meta"):
        decoder_layers(AutoModelForCausalLM.from_config(config))


def shard(model: torch.nn.Module, ce_sum) -> torch.nn.Module:
    """`model` split over the processes in place (layers, then the root); `model.scored_ce_sum(batch)` is
    `ce_sum(model, batch)` run as a forward of the root."""
    layers = decoder_layers(model)  # before anything is wrapped
    policy = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # gloo has no pre-scaled sum (PREMUL_SUM)
    model.scored_ce_sum = types.MethodType(ce_sum, model)
    register_fsdp_forward_method(model, "scored_ce_sum")
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def full_states(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The whole model's and optimizer's state, on the CPU (a collective: every process calls it; the
    main process writes them)."""
    weights = get_model_state_dict(model, options=FULL_ON_CPU)
    return without_tied_copies(model, weights), get_optimizer_state_dict(model, optimizer, options=FULL_ON_CPU)


def without_tied_copies(model: torch.nn.Module, weights: dict) -> dict:
    """The state dict with one name per parameter: a tied head is saved as the embedding it shares, as
    save_pretrained saves it (the gathered dict holds a copy under each name)."""
    first_names: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        first_names.setdefault(id(param), name)
    tied_copies = {name for name, _ in model.named_parameters(remove_duplicate=False)} - set(first_names.values())
    return {name: tensor for name, tensor in weights.items() if name not in tied_copies}


def load_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, saved_sharded: bool) -> None:
    """A checkpoint's optimizer state into `optimizer`, whichever layout it was saved in: by parameter
    name (sharded training's full state) or by index (torch's own); a sharded model keeps its shard."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if is_sharded(model):
        named = state if saved_sharded else renamed(state, dict(enumerate(names)))
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer, optim_state_dict=named, options=options)
    else:
        optimizer.load_state_dict(renamed(state, {n: i for i, n in enumerate(names)}) if saved_sharded else state)


def renamed(state: dict, keys: dict) -> dict:
    """An optimizer state with its parameter keys mapped through `keys` (index <-> name)."""
    groups = [{**group, "params": [keys[k] for k in group["params"]]} for group in state["param_groups"]]
    return {"state": {keys[k]: v for k, v in state["state"].items()}, "param_groups": groups}
