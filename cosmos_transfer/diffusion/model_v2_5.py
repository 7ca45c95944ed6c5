"""Cosmos25Model: the training model of the Cosmos-2.5 family (Predict2.5 bases, Transfer2.5 control branches).

    batch --tokenizer--> x0 --rectified flow--> x_t --Cosmos25DiT | Cosmos25ControlDiT--> velocity --> loss
    control videos control_input_<key> --the same tokenizer--> control latents, one branch per hint key

It is DiffusionModel (diffusion/model.py) with the rectified-flow objective of diffusion/objectives.py (NVIDIA's
2.5 settings: shift 5, logit-normal times, network timestep 1000 sigma scaled by the net's 0.001, velocity loss),
video2world conditioning on 0, 1 or 2 clean latent frames, and classifier-free guidance on the velocity
(`cond + guidance * (cond - uncond)`, both branches with the same control and conditioning frames, as NVIDIA's
`get_velocity_fn_from_batch`); sampling is the objective's (UniPC by default). Only the network call is ours:
- the 2.5 nets take the condition mask as an argument (`condition_mask`) instead of an input channel, and no text
  mask; their in_channels is the latent's;
- with a Cosmos25ControlDiT the hint keys' control latents go to its branches (one branch per key, in order; a
  released single-control file is one branch) and `control_scale` carries the per-branch weights;
- a net built with image context (released Transfer2.5) gets NVIDIA's "no reference image" input: zeros,
  256 tokens x 1152 (cosmos-transfer2.5 `transfer2/networks/siglip2_image_context.py` SigLip2EmbImgContext).

Training (Transfer2.5 post-training on our side):
- The base is frozen (requires_grad False) unless `finetune_base`; only `control_embedder` and the control blocks
  learn. `base_dtype="bfloat16"` stores the frozen base in bf16 (no fp32 copy anywhere), the branches stay fp32
  master weights. A Predict2.5 base without branches trains as a whole.
- Several hint keys trained jointly (NVIDIA trains one modality per run): each sample drops each hint with
  probability `hint_dropout_rate`, keeping at least one; a dropped hint's branch gets weight 0 for that sample.
Control weights follow NVIDIA's 2.5 rule: numbers as given (a weighted sum of branches, not normalized); when any
weight is a map, every weight becomes a map and their sum is capped at 1 per position
(`vid2vid_model_control_vace_rectified_flow.py` resize_control_weight).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cosmos_transfer.diffusion.conditioner import Condition, VideoConditioner
from cosmos_transfer.diffusion.model import DiffusionModel
from cosmos_transfer.diffusion.model_ctrl import ControlCondition
from cosmos_transfer.diffusion.objectives import RectifiedFlowObjective
from cosmos_transfer.dtypes import DTYPE_NAMES, torch_dtype
from cosmos_transfer.hints import normalize_hint_key
from cosmos_transfer.networks.dit_ctrl import prepare_control_weights
from cosmos_transfer.networks.dit_v2_5 import Cosmos25DiT
from cosmos_transfer.networks.dit_v2_5_control import Cosmos25ControlDiT

# NVIDIA's image context without a reference image: SigLIP2's 256 tokens, all zero.
IMAGE_CONTEXT_TOKENS = 256
# Parameter names of the control branches inside a Cosmos25ControlDiT (what post-training trains).
CONTROL_PREFIXES = ("control_embedder.", "control_blocks")


def is_control_parameter(name: str) -> bool:
    """Whether a Cosmos25ControlDiT parameter name (no `net.` prefix) belongs to a control branch."""
    return name.startswith(CONTROL_PREFIXES)


class Cosmos25Model(DiffusionModel):
    """DiffusionModel for a Cosmos25DiT (Predict2.5) or a Cosmos25ControlDiT (Transfer2.5), rectified flow.

    Args:
        net: Cosmos25DiT, or Cosmos25ControlDiT with one branch per hint key.
        tokenizer, conditioner: as DiffusionModel (the tokenizer also encodes the control videos).
        hint_keys: control inputs of a Cosmos25ControlDiT, one per branch, in branch order (e.g. ["edge"]);
            empty for a Cosmos25DiT.
        control_weights: default weights (any form of prepare_control_weights; None = 1 each); the batch's
            `control_weight` replaces them.
        hint_dropout_rate: joint training: per-sample probability of dropping each hint (at least one is kept).
        finetune_base: also train the base of a Cosmos25ControlDiT (default: only the control branches learn).
        base_dtype: None keeps the net as built; "bfloat16" stores the frozen base in bf16.
        objective: default RectifiedFlowObjective() (shift 5, logit-normal: NVIDIA's 2.5 training).
        video2world, condition_frame_probs: as DiffusionModel (Transfer2.5: {0: 0.4, 1: 0.4, 2: 0.2}).
        **diffusion_kwargs: DiffusionModel's other settings (loss_scale, video_key, ...).
    """

    # The 2.5 nets add the condition-mask channel themselves (DiffusionModel checks in_channels with this).
    condition_mask_in_net_channels = False

    def __init__(
        self,
        net: nn.Module,
        tokenizer: nn.Module,
        conditioner: VideoConditioner | None = None,
        *,
        hint_keys: Sequence[str] = (),
        control_weights: Any = None,
        hint_dropout_rate: float = 0.0,
        finetune_base: bool = False,
        base_dtype: str | None = None,
        objective: RectifiedFlowObjective | None = None,
        video2world: bool = True,
        condition_frame_probs: dict[int, float] | None = None,
        **diffusion_kwargs: Any,
    ):
        if not isinstance(net, Cosmos25DiT):
            raise TypeError(f"Cosmos25Model: net must be a Cosmos25DiT or Cosmos25ControlDiT (networks/dit_v2_5*.py), "
                            f"got {type(net).__name__}; Cosmos-1.0 nets train with DiffusionModel / "
                            "ControlDiffusionModel")
        super().__init__(net, tokenizer, conditioner, objective=objective or RectifiedFlowObjective(),
                         video2world=video2world, condition_frame_probs=condition_frame_probs, **diffusion_kwargs)
        keys = [normalize_hint_key(k) for k in ([hint_keys] if isinstance(hint_keys, str) else list(hint_keys))]
        is_control = isinstance(net, Cosmos25ControlDiT)
        if len(set(keys)) != len(keys):
            raise ValueError(f"Cosmos25Model: hint_keys must not repeat, got {list(hint_keys)}")
        if is_control and len(keys) != net.num_control_branches:
            raise ValueError(
                f"Cosmos25Model: the Cosmos25ControlDiT has {net.num_control_branches} control branch(es) but "
                f"hint_keys is {keys}; give one hint key per branch (set model.net.num_control_branches={len(keys)} "
                "for several keys)")
        if not is_control and keys:
            raise ValueError(f"Cosmos25Model: hint_keys {keys} need a Cosmos25ControlDiT net (e.g. net=transfer2p5_2b)"
                             f", got a {type(net).__name__} without control branches")
        if not 0.0 <= hint_dropout_rate < 1.0:
            raise ValueError(f"Cosmos25Model: hint_dropout_rate must be in [0, 1), got {hint_dropout_rate}")
        if base_dtype is not None and base_dtype not in DTYPE_NAMES:
            raise ValueError(f"Cosmos25Model: base_dtype must be None or one of {list(DTYPE_NAMES)}, "
                             f"got {base_dtype!r}")
        frozen_base = is_control and not finetune_base
        if base_dtype not in (None, "float32") and not frozen_base:
            raise ValueError(
                f"Cosmos25Model: base_dtype={base_dtype!r} stores a frozen base; this base is trained "
                f"({'finetune_base' if is_control else 'a net without control branches trains as a whole'}), and "
                "would have no fp32 master weights: leave base_dtype unset")
        if is_control and tokenizer.latent_channels > net.control_channels:
            raise ValueError(f"Cosmos25Model: the tokenizer's {tokenizer.latent_channels} latent channels exceed the "
                             f"net's control_channels={net.control_channels}")
        self.hint_keys = keys
        self.control_weights = control_weights
        self.hint_dropout_rate = hint_dropout_rate
        self.finetune_base = finetune_base
        self.base_dtype = base_dtype
        if is_control and not net.x_embedder.proj[1].weight.is_meta:
            net.copy_base_to_control_blocks()  # NVIDIA starts a branch as a copy of the base's first blocks
        if frozen_base:
            for name, parameter in net.named_parameters():
                parameter.requires_grad_(is_control_parameter(name))
        if base_dtype is not None:
            for name, parameter in net.named_parameters():
                if not is_control_parameter(name):
                    parameter.data = parameter.data.to(torch_dtype(base_dtype))

    @property
    def is_control(self) -> bool:
        return bool(self.hint_keys)

    # -------------------------------------------------------------------------------------------- conditions
    def _extend_condition(self, batch: dict, condition: Condition,
                          hint_latents: dict[str, torch.Tensor] | None = None) -> Condition:
        if not self.is_control:
            return super()._extend_condition(batch, condition, hint_latents)
        hints = self.hints_of(batch, hint_latents)  # sampling encodes them once for condition and uncondition
        hint_keep = None
        if self.training and torch.is_grad_enabled() and len(self.hint_keys) > 1 and self.hint_dropout_rate > 0:
            drawn = torch.rand(condition.batch_size, len(self.hint_keys))
            hint_keep = keep_at_least_one(drawn >= self.hint_dropout_rate)
        fields = {f.name: getattr(condition, f.name) for f in dataclasses.fields(Condition)}
        return ControlCondition(**fields, hints=hints, control_weight=batch.get("control_weight", self.control_weights),
                                hint_keep=hint_keep)

    def control_scales(self, condition: ControlCondition, latent_shape: Sequence[int]) -> list[torch.Tensor]:
        """Per-branch weights [B, T', H', W'] on the token grid (hint dropout applied: dropped -> 0)."""
        B, _, T, H, W = latent_shape
        grid = (T // self.net.patch_temporal, H // self.net.patch_spatial, W // self.net.patch_spatial)
        weights = prepare_control_weights(condition.control_weight, len(self.hint_keys), B, grid, latent_frames=T,
                                          temporal_compression=int(getattr(self.tokenizer, "temporal_compression", 1)),
                                          keep=condition.hint_keep, normalize=_has_weight_map(condition.control_weight),
                                          device=self.device)
        return [w.reshape(B, *grid) for w in weights]  # [K, B, T', H'W', 1] -> K x [B, T', H', W']

    # ----------------------------------------------------------------------------------------------- network
    def _net_forward(self, net_input: torch.Tensor, timesteps: torch.Tensor, condition: Condition) -> torch.Tensor:
        # DiffusionModel.predict appends the condition-mask channel (video2world); the 2.5 nets take it separately.
        x, condition_mask = (net_input[:, :-1], net_input[:, -1:]) if self.video2world else (net_input, None)
        dtype = x.dtype
        kwargs: dict[str, Any] = dict(
            crossattn_emb=condition.crossattn_emb.to(dtype), condition_mask=condition_mask,
            fps=condition.fps,
            padding_mask=None if condition.padding_mask is None else condition.padding_mask.to(dtype),
        )
        if self.net.extra_image_context_dim is not None:  # NVIDIA's input without a reference image
            kwargs["img_context_emb"] = x.new_zeros(x.shape[0], IMAGE_CONTEXT_TOKENS, self.net.extra_image_context_dim)
        if self.is_control:
            if not isinstance(condition, ControlCondition):
                raise TypeError("Cosmos25Model: the condition has no control inputs (build it with _extend_condition)")
            kwargs["control_latents"] = [condition.hints[key].to(dtype) for key in self.hint_keys]
            kwargs["control_scale"] = [w.to(dtype) for w in self.control_scales(condition, x.shape)]
        with self._mixed_precision(x.device):
            return self.net(x, timesteps, **kwargs)

    def _mixed_precision(self, device: torch.device):
        """bf16 autocast when the net holds a bf16 base beside fp32 branches and no FSDP casts them to one dtype
        (FSDP2's mixed precision does, in training): the matmuls then see one dtype."""
        if self.base_dtype in (None, "float32"):
            return contextlib.nullcontext()
        dtypes = {p.dtype for p in self.net.parameters()}
        if len(dtypes) == 1:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch_dtype(self.base_dtype))

    # ------------------------------------------------------------------------------------------------ flops
    def flops_per_step(self, batch: dict) -> float:
        """Training-step FLOPs: the base's forward and backward (to its inputs only when frozen: 2x forward), and
        forward + backward (3x) of each branch's blocks."""
        from cosmos_transfer import flops

        net = self.net
        text_length = batch["t5_text_embeddings"].shape[1]
        shape = self.latent_shape(batch)

        def dit_shape(num_blocks: int, in_channels: int) -> flops.DiTShape:
            return flops.DiTShape(model_channels=net.model_channels, num_blocks=num_blocks, mlp_ratio=net.mlp_ratio,
                                  in_channels=in_channels + 1, out_channels=net.out_channels,
                                  patch_spatial=net.patch_spatial, patch_temporal=net.patch_temporal,
                                  crossattn_emb_channels=net.crossattn_emb_channels,
                                  concat_padding_mask=net.concat_padding_mask, use_adaln_lora=net.use_adaln_lora,
                                  adaln_lora_dim=net._block_args[5] if net.use_adaln_lora else 0)

        base = flops.dit_training_step_flops(dit_shape(net.num_blocks, net.in_channels), shape, text_length)
        if not self.is_control:
            return float(base)
        if not self.finetune_base:
            base = base * 2 / 3  # no weight gradients for the frozen base
        branch = flops.dit_training_step_flops(dit_shape(len(net.control_layers), net.control_channels), shape,
                                               text_length)
        return float(base + branch * len(self.hint_keys))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, hint_keys={self.hint_keys}, finetune_base={self.finetune_base}, "
                f"hint_dropout_rate={self.hint_dropout_rate}")


def keep_at_least_one(keep: torch.Tensor) -> torch.Tensor:
    """[B, K] bool keep flags -> float 0/1, where a row that keeps nothing keeps one random entry instead."""
    empty_rows = (~keep.any(dim=1)).nonzero().flatten()
    keep = keep.clone()
    keep[empty_rows, torch.randint(keep.shape[1], (empty_rows.numel(),))] = True
    return keep.float()


def _has_weight_map(control_weight: Any) -> bool:
    """Whether a control-weight value holds a spatio-temporal map (a tensor of 4 or more dimensions)."""
    if isinstance(control_weight, torch.Tensor):
        return control_weight.ndim >= 4
    if isinstance(control_weight, (list, tuple)):
        return any(_has_weight_map(item) for item in control_weight)
    return False
