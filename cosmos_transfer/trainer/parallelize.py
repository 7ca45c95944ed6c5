"""Parallelism applied to a model from outside: FSDP2, activation checkpointing, torch.compile.

The model knows nothing of this file. What it relies on is the contract of docs/ARCHITECTURE.md: every network in
the model (`model.net`, and `model.net_ctrl` for the control model) keeps its transformer blocks in an
`nn.ModuleDict` named `blocks` (and a Cosmos25ControlDiT its control blocks in `control_blocks[_<b>]` lists).
`find_networks` finds those networks; each block becomes one FSDP2 unit (and one activation-checkpointing and compile
unit), then each network itself becomes a unit for its remaining parameters (embeddings, final layer).

The model's own entry point is `training_step`, not `forward`, so the networks (whose `forward` the model calls)
are the outermost FSDP units. Trainable parameters outside every network, if a model has any, stay replicated:
`replicated_trainable_parameters` lists them and the trainer averages their gradients across ranks.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

ActivationCheckpointing = Literal["none", "full", "selective"]


def find_networks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every submodule holding its transformer blocks in an `nn.ModuleDict` called `blocks`.

    Outermost first; a network nested inside another network's blocks is not listed separately.
    """
    networks: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(getattr(module, "blocks", None), nn.ModuleDict):
            if not any(name.startswith(outer + ".") for outer, _ in networks if outer):
                networks.append((name, module))
    return networks


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, block) of every transformer block of every network in `model`: its `blocks`, then the
    blocks of its control branches when it keeps them in `nn.ModuleList`s named `control_blocks` or
    `control_blocks_<b>` (Cosmos25ControlDiT: base and branches in one network)."""
    blocks = []
    for net_name, net in find_networks(model):
        for block_name, block in net.blocks.items():
            blocks.append((f"{net_name}.blocks.{block_name}".lstrip("."), block))
        for list_name, block_list in net.named_children():
            if isinstance(block_list, nn.ModuleList) and re.fullmatch(r"control_blocks(_\d+)?", list_name):
                for index, block in enumerate(block_list):
                    blocks.append((f"{net_name}.{list_name}.{index}".lstrip("."), block))
    return blocks


# Ops whose outputs selective activation checkpointing keeps: the expensive ones (matmuls and attention).
# Everything else (norms, activations, modulation arithmetic) is recomputed in the backward pass.
_SAVE_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,  # CPU runs then do what GPU runs do
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
}


def _selective_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _checkpointed_forward(original_forward, mode: ActivationCheckpointing, *args, **kwargs):
    if not torch.is_grad_enabled():  # validation / sampling: nothing to save anyway
        return original_forward(*args, **kwargs)
    if mode == "selective":
        context_fn = functools.partial(create_selective_checkpoint_contexts, _selective_policy)
        return checkpoint(original_forward, *args, use_reentrant=False, context_fn=context_fn, **kwargs)
    return checkpoint(original_forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(block: nn.Module, mode: ActivationCheckpointing) -> None:
    """Recompute the block's activations in backward ("full"), or all but matmul/attention outputs ("selective").

    The block's `forward` is replaced on the instance, so parameter names (and checkpoints) are unchanged.
    """
    if mode == "none":
        return
    if mode not in ("full", "selective"):
        raise ValueError(f"trainer.activation_checkpointing must be 'none', 'full' or 'selective', got {mode!r}")
    block.forward = functools.partial(_checkpointed_forward, block.forward, mode)


def _copy_view_outputs(module: nn.Module, args, output):
    """A forward hook that runs just before FSDP2's own: outputs that are views become copies.

    FSDP2 puts its pre-backward hook (the all-gather of the unit's weights for the backward pass) on the tensors a unit
    returns. An in-place op on a returned *view* would replace its autograd node and drop that hook, skipping the
    all-gather and giving wrong gradients, so PyTorch warns ("... returned a view tensor ... will silently drop the
    pre-backward hook ...") on each rank's first step. GeneralDIT returns such a view (the unpatchify rearrange of
    its last layer). Our models do no in-place op on it today; the copy (latent-sized: ~14 MB for a 121-frame 720p
    clip) makes that hold for any model and removes the warning, instead of hiding it.
    """
    def copy(value):
        if isinstance(value, torch.Tensor):
            return value.clone() if value._base is not None and value.requires_grad else value
        if isinstance(value, (tuple, list)):
            return type(value)(copy(v) for v in value)
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        return value

    return copy(output)


def data_parallel_mesh(device: torch.device, shard_size: int = 0) -> DeviceMesh:
    """1-D mesh over all ranks (FSDP), or 2-D (replicate, shard) when shard_size divides the world (HSDP)."""
    world = torch.distributed.get_world_size()
    if shard_size <= 0 or shard_size >= world:
        return init_device_mesh(device.type, (world,), mesh_dim_names=("dp_shard",))
    if world % shard_size:
        raise ValueError(f"trainer.fsdp_shard_size={shard_size} must divide the number of ranks ({world})")
    return init_device_mesh(device.type, (world // shard_size, shard_size), mesh_dim_names=("dp_replicate", "dp_shard"))


def parallelize(
    model: nn.Module,
    *,
    device: torch.device,
    activation_checkpointing: ActivationCheckpointing = "none",
    compile_blocks: bool = False,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = None,
    reshard_after_forward: bool = True,
    shard_size: int = 0,
    mesh: DeviceMesh | None = None,
) -> nn.Module:
    """Shard `model`'s networks with FSDP2 over all ranks (in place) and return the model.

    Order per block, innermost first: activation checkpointing, compile, then `fully_shard`, so that FSDP's
    all-gather hooks sit outside the recomputed and compiled region. `param_dtype`/`reduce_dtype` set mixed precision
    (bf16 parameters with fp32 gradient reduction on GPU); None keeps the parameters' dtype (fp32 on CPU).
    `shard_size` > 0 and below the world size shards within groups of that many ranks and replicates across groups
    (HSDP: all-gathers stay inside a node).
    """
    networks = find_networks(model)
    if not networks:
        raise ValueError(
            f"parallelize: {type(model).__name__} has no network with an nn.ModuleDict named 'blocks' "
            "(the contract in docs/ARCHITECTURE.md); nothing to shard"
        )
    if mesh is None:
        mesh = data_parallel_mesh(device, shard_size)
    mp_policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for _, block in find_blocks(model):  # the blocks first: a network's own unit holds what its blocks leave
        apply_activation_checkpointing(block, activation_checkpointing)
        if compile_blocks:
            block.compile()
        fully_shard(block, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=reshard_after_forward)
        block.register_forward_hook(_copy_view_outputs, prepend=True)  # before FSDP2's post-forward hook
    for _, net in networks:
        fully_shard(net, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=reshard_after_forward)
        net.register_forward_hook(_copy_view_outputs, prepend=True)
    return model


def replicated_trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters that FSDP does not manage (outside every network); their gradients need an all-reduce."""
    return [p for p in model.parameters() if p.requires_grad and not isinstance(p, DTensor)]
