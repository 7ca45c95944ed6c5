"""ControlDiffusionModel: the base DiffusionModel with ControlNet branches (Cosmos-Transfer1).

    batch --tokenizer--> x0, and each control video control_input_<key> --tokenizer--> hint latent
    denoise: every branch k runs on the same input and its hint -> residuals * weight_k, summed per block
             -> base GeneralDIT with the residuals added after its first blocks -> x0_hat --> the base EDM loss

Only `_extend_condition` (encode the hints, choose the control weights) and `_net_forward` (branches + base) are
ours; the loss, the preconditioning, the conditioner (with its CFG text dropout), video2world conditioning and the
sampling are DiffusionModel's.

Training:
- The base is frozen (requires_grad False: no gradient, no optimizer state, not in trainable_parameters) unless
  `finetune_base`; `base_dtype="bfloat16"` stores the frozen base in bf16 (no fp32 copy of it anywhere). Gradients
  still flow *through* the base to the residuals.
- Several hint keys may be trained jointly (which Cosmos forbids): each sample drops each hint with probability
  `hint_dropout_rate` (keeping at least one), and the kept hints' weights go through the same normalization as at
  inference (sum capped at 1), so training sees what inference will do.
- With `finetune_base`, the whole control signal is dropped for a sample with probability `branch_dropout_rate`
  (Cosmos: 0.5), so that the base keeps working without control.
The uncertainty head `logvar` is the model's own and trainable, as in Cosmos' control training (its control files
carry it as `logvar.*`).

Sampling / inference: the batch may carry `control_weight` in any form of `prepare_control_weights` (scalar, one per
hint key in `hint_keys` order, spatio-temporal maps); otherwise `control_weights` of the model (default 1 each).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cosmos_transfer.diffusion.conditioner import Condition, VideoConditioner
from cosmos_transfer.diffusion.model import DiffusionModel
from cosmos_transfer.dtypes import DTYPE_NAMES, torch_dtype
from cosmos_transfer.hints import normalize_hint_key
from cosmos_transfer.networks.dit_ctrl import GeneralDITControl, prepare_control_weights


@dataclass
class ControlCondition(Condition):
    """A Condition plus the control inputs.

    hints: hint key -> hint latent [B,C,T',H',W']; control_weight: any form of prepare_control_weights (None = 1);
    hint_keep: [B,K] 0/1, per-sample hint dropout of joint training (None = all kept);
    branch_keep: [B] 0/1, drop of the whole control signal when the base is fine-tuned (None = kept).
    """

    hints: dict[str, torch.Tensor] = field(default_factory=dict)
    control_weight: Any = None
    hint_keep: torch.Tensor | None = None
    branch_keep: torch.Tensor | None = None


class ControlDiffusionModel(DiffusionModel):
    """DiffusionModel with one ControlNet branch per hint key over a frozen (or fine-tuned) base.

    Args:
        net: the base GeneralDIT.
        tokenizer, conditioner: as DiffusionModel (the tokenizer also encodes the control videos).
        net_ctrl: a GeneralDITControl with the base's architecture; it becomes the first hint key's branch and
            deep copies of it the others. Every branch is initialized from the base's weights (init_from_base).
        hint_keys: control inputs, e.g. ["edge"] or ["edge", "depth"] (or "control_input_edge", ...); the batch
            carries `control_input_<key>` (uint8 [B,3,T,H,W]).
        control_weights: default weight per hint key (None = 1 each), any form of prepare_control_weights.
        normalize_control_weights: where the weights sum to more than 1, divide them by their sum; maps are also
            clamped at 0 (NVIDIA's inference rule, see networks/dit_ctrl.py).
        hint_dropout_rate: joint training: per-sample probability of dropping each hint (at least one is kept).
        finetune_base: also train the base network (default: frozen).
        branch_dropout_rate: with finetune_base, per-sample probability of training without any control.
        base_dtype: None keeps the base as built; "bfloat16" stores the frozen base in bf16 (the 7B on one GPU).
        **diffusion_kwargs: DiffusionModel's EDM / video2world settings.
    """

    def __init__(
        self,
        net: nn.Module,
        tokenizer: nn.Module,
        conditioner: VideoConditioner | None = None,
        *,
        net_ctrl: GeneralDITControl,
        hint_keys: Sequence[str] = ("edge",),
        control_weights: Any = None,
        normalize_control_weights: bool = True,
        hint_dropout_rate: float = 0.0,
        finetune_base: bool = False,
        branch_dropout_rate: float = 0.5,
        base_dtype: str | None = None,
        **diffusion_kwargs: Any,
    ):
        super().__init__(net, tokenizer, conditioner, **diffusion_kwargs)
        if not isinstance(net_ctrl, GeneralDITControl):
            raise TypeError(f"ControlDiffusionModel: net_ctrl must be a GeneralDITControl, got {type(net_ctrl).__name__}")
        if isinstance(hint_keys, str):
            hint_keys = [hint_keys]
        keys = [normalize_hint_key(k) for k in hint_keys]
        if not keys or len(set(keys)) != len(keys):
            raise ValueError(f"ControlDiffusionModel: hint_keys must be a non-empty list without repeats, got {hint_keys}")
        for name, rate in (("hint_dropout_rate", hint_dropout_rate), ("branch_dropout_rate", branch_dropout_rate)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"ControlDiffusionModel: {name} must be in [0, 1), got {rate}")
        if base_dtype is not None and base_dtype not in DTYPE_NAMES:
            raise ValueError(f"ControlDiffusionModel: base_dtype must be None or one of {list(DTYPE_NAMES)}, got {base_dtype!r}")
        if finetune_base and base_dtype not in (None, "float32"):
            raise ValueError(
                f"ControlDiffusionModel: finetune_base with base_dtype={base_dtype!r} would train without fp32 master "
                "weights; leave base_dtype unset (the trainer's mixed precision computes in bf16 anyway)"
            )
        if net_ctrl.hint_channels < tokenizer.latent_channels:
            raise ValueError(
                f"ControlDiffusionModel: net_ctrl.hint_channels={net_ctrl.hint_channels} is less than the tokenizer's "
                f"{tokenizer.latent_channels} latent channels"
            )
        self.hint_keys = keys
        self.control_weights = control_weights
        self.normalize_control_weights = normalize_control_weights
        self.hint_dropout_rate = hint_dropout_rate
        self.finetune_base = finetune_base
        self.branch_dropout_rate = branch_dropout_rate

        branches = {}
        for index, key in enumerate(keys):
            branch = net_ctrl if index == 0 else copy.deepcopy(net_ctrl)
            branch.init_from_base(net)
            branches[key] = branch
        self.net_ctrl = nn.ModuleDict(branches)
        if not finetune_base:
            self.net.requires_grad_(False)
        if base_dtype is not None:
            self.net.to(torch_dtype(base_dtype))

    # -------------------------------------------------------------------------------------------- conditions
    def _draw_hint_keep(self, batch_size: int) -> torch.Tensor:
        """[B,K] 0/1: each hint kept with probability 1 - hint_dropout_rate, at least one per sample."""
        num_keys = len(self.hint_keys)
        keep = torch.rand(batch_size, num_keys) >= self.hint_dropout_rate
        none_kept = ~keep.any(dim=1)
        if none_kept.any():
            rescued = torch.randint(num_keys, (int(none_kept.sum()),))
            keep[none_kept.nonzero()[:, 0], rescued] = True
        return keep.float()

    def _extend_condition(self, batch: dict, condition: Condition,
                          hint_latents: dict[str, torch.Tensor] | None = None) -> ControlCondition:
        hints = self.hints_of(batch, hint_latents)  # sampling encodes them once for condition and uncondition
        hint_keep = branch_keep = None
        if self.training and torch.is_grad_enabled():  # training steps only, never sampling
            batch_size = condition.batch_size
            if len(self.hint_keys) > 1 and self.hint_dropout_rate > 0:
                hint_keep = self._draw_hint_keep(batch_size)
            if self.finetune_base and self.branch_dropout_rate > 0:
                branch_keep = (torch.rand(batch_size) >= self.branch_dropout_rate).float()
        fields = {f.name: getattr(condition, f.name) for f in dataclasses.fields(Condition)}
        return ControlCondition(
            **fields,
            hints=hints,
            control_weight=batch.get("control_weight", self.control_weights),
            hint_keep=hint_keep,
            branch_keep=branch_keep,
        )

    # ----------------------------------------------------------------------------------------------- network
    def control_weight_tokens(self, condition: ControlCondition, latent_shape: Sequence[int]) -> torch.Tensor:
        """Dense per-branch weights [K,B,T',S,1] on the token grid, with hint/branch dropout applied (dropped hints
        get weight 0 before the normalization, so the kept ones share the total)."""
        B, _, T, H, W = latent_shape
        first = next(iter(self.net_ctrl.values()))
        grid = (T // first.patch_temporal, H // first.patch_spatial, W // first.patch_spatial)
        weights = prepare_control_weights(condition.control_weight, len(self.hint_keys), B, grid, latent_frames=T,
                                          temporal_compression=self.temporal_compression, keep=condition.hint_keep,
                                          normalize=self.normalize_control_weights, device=self.device)
        if condition.branch_keep is not None:
            weights = weights * condition.branch_keep.to(weights.device)[None, :, None, None, None]
        return weights

    @property
    def temporal_compression(self) -> int:
        return int(getattr(self.tokenizer, "temporal_compression", 1))

    def _net_forward(self, net_input: torch.Tensor, timesteps: torch.Tensor, condition: Condition) -> torch.Tensor:
        if not isinstance(condition, ControlCondition):
            raise TypeError("ControlDiffusionModel: the condition has no control inputs (build it with _extend_condition)")
        kwargs = condition.network_kwargs()
        weights = self.control_weight_tokens(condition, net_input.shape)
        residuals: dict[str, torch.Tensor] = {}
        for index, (key, branch) in enumerate(self.net_ctrl.items()):
            dtype = _floating_dtype(branch)
            branch_kwargs = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in kwargs.items()}
            out = branch(net_input.to(dtype), timesteps.to(dtype), **branch_kwargs,
                         hint=condition.hints[key].to(dtype), control_weight=weights[index])
            for name, residual in out.items():
                residuals[name] = residual if name not in residuals else residuals[name] + residual
        base_dtype = net_input.dtype
        base_kwargs = {k: (v.to(base_dtype) if v is not None and v.is_floating_point() else v) for k, v in kwargs.items()}
        residuals = {name: r.to(base_dtype) for name, r in residuals.items()}
        return self.net(net_input, timesteps, **base_kwargs, block_residuals=residuals)

    def flops_per_step(self, batch: dict) -> float:
        """Training-step FLOPs: the base's forward and its backward to the inputs (2x forward when frozen, 3x when
        fine-tuned), plus forward and backward (3x forward) of every branch."""
        from cosmos_transfer import flops

        shape = self.latent_shape(batch)
        text_length = batch["t5_text_embeddings"].shape[1]
        base = flops.dit_training_step_flops(self.net, shape, text_length)
        if not self.finetune_base:
            base = base * 2 / 3  # no weight gradients for the frozen base
        branches = sum(flops.dit_training_step_flops(branch, shape, text_length) for branch in self.net_ctrl.values())
        return float(base + branches)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, hint_keys={self.hint_keys}, finetune_base={self.finetune_base}, "
                f"hint_dropout_rate={self.hint_dropout_rate}")


def _floating_dtype(module: nn.Module) -> torch.dtype:
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32
