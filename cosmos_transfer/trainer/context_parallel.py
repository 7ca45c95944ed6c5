"""Context parallelism (CP): one sample's tokens split across the ranks of a CP group, applied from outside the model.

A long, high-resolution video has more tokens than one GPU holds the activations of (Cosmos-Transfer1-7B at 121
frames of 704x1280: 16 x 44 x 80 = 56,320 tokens per sample). With a CP group of n ranks, each rank holds 1/n of
every sample's token frames through the whole network:

    network input x [B,C,T,H,W] and every per-frame input --split along T--> T/n frames on each rank
    positions: RoPE and the learnable position tables are made for the whole grid, then each rank takes its frames
    AdaLN, cross-attention to the text and the MLP act token by token: on the local tokens, unchanged
    self-attention needs every token (Ulysses, DeepSpeed-Ulysses' all-to-all):
        q, k, v [B, L/n, heads, hd] --all-to-all--> [B, L, heads/n, hd] -> attention -> all-to-all back
    network output [B,C,T/n,H,W] --all-gather along T--> [B,C,T,H,W]

so the loss is computed whole, and identically, on every rank of the group (they hold the same batch and noise).

Gradients. Each parameter is used by every rank on its own tokens, so the true gradient is the *sum* over the CP group
of the ranks' gradients. FSDP2 (and the trainer, for parameters outside the networks) *average* gradients over all
ranks; so the output gather's backward multiplies the gradient by n: the average of n gradients each scaled by n is
their sum. Parameters whose gradient does not come through a network's output (the `logvar` head) get the same whole
gradient on every rank of the group, for which the average is right as it is.

Mesh: `ContextParallel.build(cp_size)` makes the 2-D device mesh ("dp", "cp"): ranks d*n .. d*n+n-1 form CP group d.
FSDP2 shards over all ranks (the two dimensions flattened, `fsdp_mesh`), the data loader and the per-rank random
streams follow the data-parallel rank d (the ranks of a CP group must draw the same samples and the same noise).

What is split, per network (`_TEMPORAL_INPUTS`): the input and each per-frame argument (per-frame timesteps, the control
hint, the 2.5 condition mask and control latents, per-token control weights) along its frame dimension; an argument
that is already the local size (the control branch's residuals, made by a CP network) is left as it is. The network's
tensor output is gathered; the Transfer1 control branch returns residuals for the base's local tokens, not gathered.
The only seam in the networks is `Attention.attend` (a class attribute), replaced on every self-attention instance.
Ulysses needs the heads divisible by n and the token frames T' divisible by n: cosmos_transfer/preflight.py checks
both before anything is built, naming what would split; here they are checked again (a ConfigError) where they bite.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from cosmos_transfer.config.errors import ConfigError
from cosmos_transfer.networks import dit, dit_v2_5
from cosmos_transfer.networks.dit import GeneralDIT, LearnablePosEmbAxis, RopePosition3D, apply_rope
from cosmos_transfer.networks.dit_ctrl import GeneralDITControl
from cosmos_transfer.networks.dit_v2_5 import Cosmos25DiT
from cosmos_transfer.networks.dit_v2_5_control import Cosmos25ControlDiT


# ------------------------------------------------------------------------------------------------ collectives
class _AllToAll(torch.autograd.Function):
    """Split x in n along `scatter_dim`, send chunk c to rank c, concatenate what comes back along `gather_dim`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scatter_dim: int, gather_dim: int, group) -> torch.Tensor:
        ctx.dims, ctx.group = (scatter_dim, gather_dim), group
        return _all_to_all(x, scatter_dim, gather_dim, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        scatter_dim, gather_dim = ctx.dims
        return _all_to_all(grad, gather_dim, scatter_dim, ctx.group), None, None, None  # the inverse exchange


def _all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, group) -> torch.Tensor:
    n = dist.get_world_size(group)
    inputs = [chunk.contiguous() for chunk in x.chunk(n, dim=scatter_dim)]
    outputs = [torch.empty_like(inputs[0]) for _ in range(n)]
    dist.all_to_all(outputs, inputs, group=group)  # gloo (CPU) and NCCL both have it
    return torch.cat(outputs, dim=gather_dim)


class _GatherScaledGrad(torch.autograd.Function):
    """All-gather along `dim`; backward: this rank's part of the gradient, times n (module docstring: Gradients)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, group) -> torch.Tensor:
        ctx.dim, ctx.group = dim, group
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n, rank = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        return grad.chunk(n, dim=ctx.dim)[rank] * n, None, None


# ------------------------------------------------------------------------------------------------ the group
@dataclass
class ContextParallel:
    """A CP group: its process group, size and this rank's place in it, and the data-parallel rank and size."""

    group: object
    size: int
    rank: int
    dp_rank: int
    dp_size: int
    mesh: DeviceMesh | None = None

    @classmethod
    def build(cls, cp_size: int, device: torch.device) -> "ContextParallel":
        """The 2-D mesh ("dp", "cp") over all ranks; consecutive ranks share a sample."""
        world = dist.get_world_size()
        if not isinstance(cp_size, int) or cp_size < 1 or world % cp_size:
            raise ConfigError(
                f"trainer.context_parallel_size={cp_size!r} must be a positive integer dividing the number of ranks "
                f"({world}): each context-parallel group of that many ranks shares one sample"
            )
        mesh = init_device_mesh(device.type, (world // cp_size, cp_size), mesh_dim_names=("dp", "cp"))
        return cls(group=mesh.get_group("cp"), size=cp_size, rank=mesh.get_local_rank("cp"),
                   dp_rank=mesh.get_local_rank("dp"), dp_size=world // cp_size, mesh=mesh)

    def fsdp_mesh(self) -> DeviceMesh:
        """The mesh FSDP2 shards over: the dp and cp dimensions flattened (every rank)."""
        return self.mesh["dp", "cp"]._flatten("dp_cp")

    def local(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's contiguous part of `tensor` along `dim` (autograd: gradient zero outside it)."""
        return tensor.chunk(self.size, dim=dim)[self.rank]

    def gather(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        return _GatherScaledGrad.apply(tensor, dim, self.group)


def build_context_parallel(cp_size: int, device: torch.device, fsdp_shard_size: int = 0) -> ContextParallel | None:
    """The trainer's CP group for `trainer.context_parallel_size` (None when 1: no context parallelism)."""
    if cp_size == 1:
        return None
    if fsdp_shard_size:
        raise ConfigError(
            f"trainer.context_parallel_size={cp_size} with trainer.fsdp_shard_size={fsdp_shard_size}: context "
            "parallelism shards FSDP2 over all ranks; set trainer.fsdp_shard_size=0 (HSDP with CP is not built)"
        )
    return ContextParallel.build(cp_size, device)


# ------------------------------------------------------------------------------------------------ attention
def ulysses_attend(q, k, v, mask=None, rope=None, te_attention=None, *, cp: ContextParallel):
    """networks.dit.attend for local tokens q, k, v [B, L/n, heads, hd]: each rank attends with heads/n heads over
    all L tokens (RoPE applied first, with the local positions), then takes its tokens back -> [B, L/n, heads*hd]."""
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    q, k, v = (_AllToAll.apply(t, 2, 1, cp.group) for t in (q, k, v))  # heads scattered, tokens gathered
    out = dit.attend(q, k, v, mask=mask, te_attention=te_attention)  # [B, L, heads/n * hd]
    out = out.reshape(*out.shape[:2], q.shape[2], q.shape[3])
    return _AllToAll.apply(out, 1, 2, cp.group).flatten(2)  # tokens scattered back, heads gathered


# ------------------------------------------------------------------------------------------------ networks
# Network class -> {forward argument: its frame dimension}, for the arguments split across the CP group. The first
# entry is the network input, which sets the frame count. Subclasses first (looked up in this order).
_TEMPORAL_INPUTS: list[tuple[type, dict[str, int]]] = [
    (GeneralDITControl, {"x": 2, "timesteps": 1, "hint": 2, "control_weight": 1}),
    (GeneralDIT, {"x": 2, "timesteps": 1, "block_residuals": 1}),
    (Cosmos25ControlDiT, {"x": 2, "timesteps": 1, "condition_mask": 2, "control_latents": 2, "control_scale": 1}),
    (Cosmos25DiT, {"x": 2, "timesteps": 1, "condition_mask": 2}),
]


def _temporal_inputs(net: nn.Module) -> dict[str, int]:
    for cls, inputs in _TEMPORAL_INPUTS:
        if isinstance(net, cls):
            return inputs
    raise TypeError(
        f"context parallelism: no rule for splitting the inputs of {type(net).__name__}; it knows "
        f"{', '.join(cls.__name__ for cls, _ in _TEMPORAL_INPUTS)}"
    )


def _split_value(value, dim: int, full: int, cp: ContextParallel):
    """The local part of one argument: tensors (or lists / dicts of them) whose `dim` has the full frame count."""
    if isinstance(value, torch.Tensor):
        if value.ndim > dim and value.shape[dim] == full:
            return cp.local(value, dim)
        return value  # per sample, broadcast over frames, or already local
    if isinstance(value, (list, tuple)):
        return type(value)(_split_value(v, dim, full, cp) for v in value)
    if isinstance(value, dict):
        return {key: _split_value(v, dim, full, cp) for key, v in value.items()}
    return value


def _split_inputs(net: nn.Module, args, kwargs, *, cp: ContextParallel, signature: inspect.Signature):
    """Forward pre-hook of a network: its arguments, each per-frame one cut to this rank's frames."""
    bound = signature.bind(*args, **kwargs)
    inputs = _temporal_inputs(net)
    x = bound.arguments["x"]
    frames = x.shape[2] // net.patch_temporal  # token frames
    if x.shape[2] % net.patch_temporal or frames % cp.size:
        raise ConfigError(
            f"context parallelism: {type(net).__name__} input has {x.shape[2]} latent frames = {frames} token frames "
            f"(patch_temporal {net.patch_temporal}), which do not split over trainer.context_parallel_size={cp.size} "
            f"ranks; choose the clip length so that the token frames are a multiple of {cp.size}"
        )
    for name, dim in inputs.items():
        if name in bound.arguments:
            full = x.shape[2] if dim == 2 else frames  # [B,C,T,H,W] inputs have latent frames, others token frames
            bound.arguments[name] = _split_value(bound.arguments[name], dim, full, cp)
    return bound.args, bound.kwargs


def _gather_output(net: nn.Module, args, output, *, cp: ContextParallel):
    """Forward hook of a network: the whole output [B,C,T,H,W] on every rank of the group."""
    return cp.gather(output, 2)


def _full_grid_positions(module: nn.Module, args, kwargs, *, cp: ContextParallel):
    """Forward pre-hook of a position module called with the local frame count: ask for the whole grid."""
    T, *rest = args
    return (T * cp.size, *rest), kwargs


def _local_rope(module: nn.Module, args, kwargs, output, *, cp: ContextParallel):
    cos, sin = output  # [B|1, T*H*W, hd], frames outermost: this rank's frames are one contiguous run
    return cp.local(cos, 1), cp.local(sin, 1)


def _local_table(module: nn.Module, args, kwargs, output, *, cp: ContextParallel):
    return cp.local(output, 1)  # [1, T, S, D]


def apply_context_parallel(model: nn.Module, cp: ContextParallel) -> nn.Module:
    """Make every network of `model` (each module with an `nn.ModuleDict` of `blocks`) split its tokens over the CP
    group (in place; before `parallelize`, so that FSDP2's hooks sit outside these). Returns the model."""
    from cosmos_transfer.trainer.parallelize import find_networks

    networks = find_networks(model)
    if not networks:
        raise ValueError(f"context parallelism: {type(model).__name__} has no network with an nn.ModuleDict 'blocks'")
    for name, net in networks:
        _temporal_inputs(net)  # a network without a rule is refused before anything changes
        if net.num_heads % cp.size:
            raise ConfigError(
                f"context parallelism: {name or 'the network'} has {net.num_heads} attention heads, which do not split "
                f"over trainer.context_parallel_size={cp.size} ranks (Ulysses gives each rank heads/n heads)"
            )
    for _, net in networks:
        signature = inspect.signature(net.forward)  # bound: no `self`
        net.register_forward_pre_hook(functools.partial(_split_inputs, cp=cp, signature=signature), with_kwargs=True)
        if not isinstance(net, GeneralDITControl):  # the branch's residuals stay on the base's local tokens
            net.register_forward_hook(functools.partial(_gather_output, cp=cp))
        for module in net.modules():
            if isinstance(module, (dit.Attention, dit_v2_5.Attention)) and module.is_selfattn:
                module.attend = functools.partial(ulysses_attend, cp=cp)
            elif isinstance(module, RopePosition3D):
                module.register_forward_pre_hook(functools.partial(_full_grid_positions, cp=cp), with_kwargs=True)
                module.register_forward_hook(functools.partial(_local_rope, cp=cp), with_kwargs=True)
            elif isinstance(module, LearnablePosEmbAxis):
                module.register_forward_pre_hook(functools.partial(_full_grid_positions, cp=cp), with_kwargs=True)
                module.register_forward_hook(functools.partial(_local_table, cp=cp), with_kwargs=True)
    return model
