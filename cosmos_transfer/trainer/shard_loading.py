"""Building a model without holding all of it on any rank: a meta-device build, FSDP2 sharding, then each rank
materializes and reads only its own slice of the weights.

    model = build_on_meta(config.model)            # no memory: every parameter and buffer on the meta device
    parallelize(model, ...)                        # FSDP2 from outside the model (trainer/parallelize.py)
    materialize(model, device, seed)               # each rank allocates its shards, runs the modules' initializers
    load_model_weights(model, load_path)           # checkpoint.py: each rank copies only its rows (copy_into_shards)

Per format, what a rank reads (copy_into_shards):
- `.safetensors`: the file is opened with `safe_open` and each tensor's rows of this rank are read with `get_slice`;
  nothing else of the file enters the process.
- `.pt` (NVIDIA's official files, ours): `torch.load(weights_only=True, mmap=True)` maps the file; slicing a
  tensor's rows touches only those pages, so the file is read from disk once per node (the page cache is shared by
  the node's ranks) and each rank's memory holds its rows. A `.pt` in the legacy (non-zip) format cannot be mapped
  and is read whole (checkpoints/files.py says so).
- a DCP folder (our checkpoints): DCP loads into the sharded state dict, each rank reading its chunks.
Weights are cast once, into the shard (bf16 in the file and a bf16 frozen base: no fp32 copy on the way).

Initial values: `materialize` runs the modules' own initializers (`reset_parameters`, each network's `init_weights`,
peft's `reset_lora_parameters`) on the shards, seeded per rank. They give what the eager build gives in
distribution, not bitwise (the eager build draws whole tensors in construction order): the trainer takes this path
only when `checkpoint.load_path` provides the weights, and builds eagerly, bitwise as before, for a run without one
(see `builds_on_meta`). A tensor that no initializer writes is an error naming it, never left as garbage.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from cosmos_transfer.config.lazy import TARGET_KEY, import_targets, instantiate
from cosmos_transfer.trainer.safe_dcp import CheckpointError


def builds_on_meta(config: Any) -> bool:
    """Whether the trainer builds `config.model` on the meta device: when `checkpoint.load_path` will provide the
    weights (the frozen base of a post-training). Without one, the initial weights are the random initialization and
    the eager build keeps them bitwise what they always were."""
    return bool(getattr(config.checkpoint, "load_path", "") or "")


def build_on_meta(model_config: Any) -> nn.Module:
    """`instantiate(model_config)` with every parameter and buffer on the meta device (nothing allocated), except the
    tokenizer: it is not sharded and may read its own files, so it is built for real and passed in."""
    kwargs = {}
    tokenizer = model_config.get("tokenizer") if hasattr(model_config, "get") else None
    if hasattr(tokenizer, "keys") and TARGET_KEY in tokenizer:
        kwargs["tokenizer"] = instantiate(tokenizer)
    import_targets(model_config)
    with torch.device("meta"):
        return instantiate(model_config, **kwargs)


def _real_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t for name, t in (*model.named_parameters(), *model.named_buffers()) if not t.is_meta}


def _initialize(model: nn.Module) -> None:
    """The modules' own initializers, children before parents, then each network's `init_weights` (which redoes the
    network-specific choices: xavier Linears, zero AdaLN outputs, position tables), then LoRA adapters (peft)."""
    modules = list(model.modules())
    for module in reversed(modules):
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for module in reversed(modules):
        if hasattr(module, "init_weights"):
            module.init_weights()
    for module in modules:
        if hasattr(module, "reset_lora_parameters") and hasattr(module, "lora_A"):
            for adapter in list(module.lora_A.keys()):
                module.reset_lora_parameters(adapter, True)


@torch.no_grad()
def materialize(model: nn.Module, device: torch.device, seed: int) -> nn.Module:
    """Allocate a meta-built (and FSDP2-sharded) model on `device`, each rank its own shards, and initialize it.

    Tensors that were already real (a tokenizer registered as a submodule) are kept as they were. Every floating
    point tensor the initializers leave unwritten is reported by name (they start as NaN to find them)."""
    real = {name: t.detach().clone() for name, t in _real_tensors(model).items()}
    # A module the model holds outside its tree (the tokenizer: hide_from_state_dict) is moved along by the model's
    # _apply, so to_empty empties it too; nothing would compute its buffers and weights again.
    held = [(module, {name: t.detach().clone() for name, t in _real_tensors(module).items()})
            for module in vars(model).values() if isinstance(module, nn.Module)]
    model.to_empty(device=device)
    for module, tensors in held:
        current_held = dict((*module.named_parameters(), *module.named_buffers()))
        for name, tensor in tensors.items():
            current_held[name].copy_(tensor)
    fresh = [(name, t) for name, t in (*model.named_parameters(), *model.named_buffers()) if name not in real]
    for _, tensor in fresh:
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        if local.is_floating_point():
            local.fill_(float("nan"))
    rank = dist.get_rank() if dist.is_initialized() else 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 104_729 * (rank + 1))  # each rank's shard its own draws
        _initialize(model)
    current = dict((*model.named_parameters(), *model.named_buffers()))
    for name, tensor in real.items():
        current[name].copy_(tensor)
    unwritten = [name for name, tensor in fresh
                 if (local := tensor.to_local() if isinstance(tensor, DTensor) else tensor).is_floating_point()
                 and local.numel() and torch.isnan(local).any()]
    if unwritten:
        raise RuntimeError(
            f"materialize: no initializer wrote {len(unwritten)} tensor(s) of the meta-built "
            f"{type(model).__name__}: {unwritten[:6]}. Give their module a reset_parameters() (or its network an "
            "init_weights()) that computes them, as after `to_empty`"
        )
    return model


# ----------------------------------------------------------------------------------------------------------------------
# Reading only this rank's rows


def local_rows(tensor: torch.Tensor) -> tuple[int, int] | None:
    """[start, stop) of dim 0 that this rank holds of `tensor` (a DTensor sharded on dim 0, as FSDP2 shards: the
    rows torch.chunk gives each rank), or None when the rank holds all of it."""
    if not isinstance(tensor, DTensor):
        return None
    start, stop = 0, tensor.shape[0]
    for mesh_dim, placement in enumerate(tensor.placements):
        if placement.is_replicate():
            continue
        if not placement.is_shard() or placement.dim != 0:
            raise ValueError(f"local_rows: only Shard(0) / Replicate placements are read by rows, got {placement}")
        parts, index = tensor.device_mesh.size(mesh_dim), tensor.device_mesh.get_local_rank(mesh_dim)
        chunk = -(-(stop - start) // parts)
        start, stop = min(start + index * chunk, stop), min(start + (index + 1) * chunk, stop)
    return start, stop


def read_rows(source: torch.Tensor, rows: tuple[int, int] | None) -> torch.Tensor:
    """Rows [start, stop) of a weight (all of it for None): a slice of a mapped tensor (only its pages are read),
    or of a SafetensorsFile placeholder (only its bytes are read)."""
    if source.is_meta and hasattr(source, "_safetensors_key"):
        piece = source._safetensors_file.handle.get_slice(source._safetensors_key)
        if rows is None or source.ndim == 0:
            return piece[...] if source.ndim else source._safetensors_file.handle.get_tensor(source._safetensors_key)
        return piece[rows[0]:rows[1]]
    return source if rows is None else source[rows[0]:rows[1]]


@torch.no_grad()
def copy_into_shards(targets: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
                     keys: Iterable[str], where: str) -> None:
    """For each key, copy this rank's rows of `weights[key]` into `targets[key]` (a model state dict: DTensor shards
    or plain tensors, written in place), cast to the target's dtype on the way. `where` names the file in errors."""
    for key in keys:
        target, source = targets[key], weights[key]
        if tuple(source.shape) != tuple(target.shape):
            raise CheckpointError(f"checkpoint.load_path={where}: {key} has shape {tuple(source.shape)}, the model "
                                  f"expects {tuple(target.shape)}")
        local = target.to_local() if isinstance(target, DTensor) else target
        local.copy_(read_rows(source, local_rows(target)).reshape(local.shape))
