"""The ControlNet branch of Cosmos-Transfer1 on top of GeneralDIT, and the control weights that scale it.

    hint latent [B,16,T,H,W] --zero-pad to hint_channels, + padding mask--> x_embedder2 --> input_hint_block --> h
    x (same input as the base) --> x_embedder, t_embedder, ... (copies of the base's) -->
        block0 --> + h --> zero_blocks.block0 --> * control weight --> residual added after base block0
        block1 ----------> zero_blocks.block1 --> * control weight --> residual added after base block1
        ...  (num_control_blocks blocks, 3 in the released models)

The branch is a GeneralDIT with only its first `num_control_blocks` blocks, initialized from the base's weights
(`init_from_base`), plus its own hint patch embedding (`x_embedder2`), the hint MLP (`input_hint_block`, ending in a
zero-initialized Linear) and one zero-initialized Linear per block (`zero_blocks`). Both zero layers make the
controlled model equal to the base at initialization, exactly. Parameter names are those of the official control
checkpoints (`edge_control.pt`, ...: `net.<name>` there); `final_layer`, which the official branch carries but never
uses, is kept (so those files load strictly) and frozen (so it costs no gradient or optimizer memory).

Control weights (`prepare_control_weights`): a scalar, one scalar per control, or a spatio-temporal map [B,1,T,H,W]
(one for all controls, a list of them, or [K,B,1,T,H,W]) at pixel or latent resolution, resampled to the token grid
and normalized as NVIDIA's inference does (see the comment opening the control-weights section). Reading and
writing official control files is cosmos_transfer/checkpoints/transfer1.py's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from cosmos_transfer.config.errors import DataError
from cosmos_transfer.networks.dit import GeneralDIT, PatchEmbed

# Widths of the official hint MLP: Linear(D,16), SiLU, Linear(16,16), SiLU, ..., Linear(96,256), SiLU, Linear(256,D).
HINT_BLOCK_CHANNELS = (16, 16, 32, 32, 96, 96, 256)
# The branch's layers that a base network does not have: a branch started from base weights keeps their
# initialization; NEW_BRANCH_KEY_PATTERNS are the checkpoint.allowed_missing_keys for such branches.
BRANCH_OWN_LAYERS = ("x_embedder2", "input_hint_block", "zero_blocks")
NEW_BRANCH_KEY_PATTERNS = tuple(f"net_ctrl.*.{layer}.*" for layer in BRANCH_OWN_LAYERS)

ControlWeight = Union[float, torch.Tensor, Sequence[Union[float, torch.Tensor]], None]


class GeneralDITControl(GeneralDIT):
    """One control branch (official: GeneralDITEncoder). Returns per-block residuals for the base network.

    Args:
        num_control_blocks: blocks of the branch, copies of the base's first blocks (3 in Cosmos-Transfer1-7B).
        hint_channels: channels the hint latent is zero-padded to (128 in the released models; the tokenizer gives 16).
        hint_block_channels: hidden widths of the hint MLP (`input_hint_block`); the released models' by default.
        **net_kwargs: the base GeneralDIT's arguments (same architecture as the base). `num_blocks`, when given, is
            the base's depth and only checked against num_control_blocks.
    """

    def __init__(
        self,
        num_control_blocks: int = 3,
        hint_channels: int = 128,
        hint_block_channels: Sequence[int] = HINT_BLOCK_CHANNELS,
        **net_kwargs,
    ):
        base_blocks = net_kwargs.pop("num_blocks", None)
        if not isinstance(num_control_blocks, int) or num_control_blocks < 1:
            raise ValueError(f"GeneralDITControl: num_control_blocks must be a positive integer, got {num_control_blocks!r}")
        if base_blocks is not None and num_control_blocks > base_blocks:
            raise ValueError(
                f"GeneralDITControl: num_control_blocks={num_control_blocks} exceeds the base's num_blocks={base_blocks}"
            )
        if not isinstance(hint_channels, int) or hint_channels < 1:
            raise ValueError(f"GeneralDITControl: hint_channels must be a positive integer, got {hint_channels!r}")
        widths = list(hint_block_channels)
        if not widths or not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(
                f"GeneralDITControl: hint_block_channels must be a non-empty list of positive integers, got {widths!r}"
            )
        super().__init__(num_blocks=num_control_blocks, **net_kwargs)
        self.hint_channels = hint_channels
        channels = self.model_channels

        self.x_embedder2 = PatchEmbed(
            hint_channels + int(self.concat_padding_mask), channels, self.patch_spatial, self.patch_temporal
        )
        layers: list[nn.Module] = [nn.Linear(channels, widths[0]), nn.SiLU()]
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.SiLU()]
        layers.append(nn.Linear(widths[-1], channels))
        self.input_hint_block = nn.Sequential(*layers)
        self.zero_blocks = nn.ModuleDict({name: nn.Linear(channels, channels) for name in self.blocks})
        self._init_control_weights()
        # Unused by the branch (it returns residuals, not a prediction); kept for official names, never trained.
        self.final_layer.requires_grad_(False)

    @torch.no_grad()
    def init_weights(self) -> None:
        """GeneralDIT's initialization, then the branch's own layers (x_embedder2, the hint MLP, the zero layers)."""
        super().init_weights()
        if hasattr(self, "zero_blocks"):  # inside GeneralDIT.__init__ they do not exist yet (__init__ does them)
            self._init_control_weights()

    def _init_control_weights(self) -> None:
        if self.x_embedder2.proj[1].weight.device.type == "meta":
            return
        nn.init.xavier_uniform_(self.x_embedder2.proj[1].weight)
        for layer in self.input_hint_block:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        zero_layers = [self.input_hint_block[-1], *self.zero_blocks.values()]
        for layer in zero_layers:  # the controlled model starts as the base model
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def init_from_base(self, base: GeneralDIT) -> list[str]:
        """Copy every weight the branch shares with `base` (embedders, first blocks, final layer); returns the names.

        The control-only parts (x_embedder2, input_hint_block, zero_blocks) keep their initialization.
        """
        base_state = base.state_dict()
        copied = []
        for name, tensor in self.state_dict().items():
            if name not in base_state:
                continue
            source = base_state[name]
            if source.shape != tensor.shape:
                raise ValueError(
                    f"GeneralDITControl.init_from_base: '{name}' is {tuple(tensor.shape)} in the branch but "
                    f"{tuple(source.shape)} in the base; build the branch with the base's architecture "
                    "(same model_channels, in_channels, max sizes, ... in model.net_ctrl as in model.net)"
                )
            tensor.copy_(source)
            copied.append(name)
        missing = [n for n in base_state if n.startswith("blocks.") and n.split(".")[1] in self.blocks and n not in copied]
        if missing:
            raise ValueError(f"GeneralDITControl.init_from_base: base block weights not copied: {missing[:5]}")
        return copied

    def encode_hint(self, hint: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """Hint latent [B,C<=hint_channels,T,H,W] -> hint features [B,T',S,D] (zero at initialization)."""
        if hint.ndim != 5:
            raise ValueError(f"GeneralDITControl: hint must be a latent [B,C,T,H,W], got shape {tuple(hint.shape)}")
        if hint.shape[1] > self.hint_channels:
            raise ValueError(
                f"GeneralDITControl: hint has {hint.shape[1]} channels, more than hint_channels={self.hint_channels}"
            )
        if hint.shape[1] < self.hint_channels:
            hint = F.pad(hint, (0, 0, 0, 0, 0, 0, 0, self.hint_channels - hint.shape[1]))
        if self.concat_padding_mask:
            hint = torch.cat([hint, self.resize_padding_mask(padding_mask, hint)], dim=1)
        # RoPE acts inside attention, so (as in Cosmos) no position embedding is added to the hint tokens.
        return self.input_hint_block(self.x_embedder2(hint))

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        crossattn_emb: torch.Tensor,
        crossattn_mask: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        *,
        hint: torch.Tensor,
        control_weight: float | torch.Tensor = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Residuals {"blockN": [B,T',S,D]} for the base's first blocks, already scaled by `control_weight`.

        x, timesteps, crossattn_*, fps, padding_mask: the base network's inputs. hint: the hint latent.
        control_weight: a number, or a tensor broadcastable to [B,T',S,1] (see prepare_control_weights).
        """
        inputs = self.forward_before_blocks(x, timesteps, crossattn_emb, crossattn_mask, fps, padding_mask)
        guided_hint = self.encode_hint(hint.to(inputs.x.dtype), padding_mask)
        if guided_hint.shape != inputs.x.shape:
            raise ValueError(
                f"GeneralDITControl: hint tokens {tuple(guided_hint.shape)} do not match the input tokens "
                f"{tuple(inputs.x.shape)}; the hint latent must have the input's T, H, W (got {tuple(hint.shape)})"
            )
        if isinstance(control_weight, torch.Tensor):
            control_weight = control_weight.to(inputs.x.dtype)
        tokens = inputs.x
        block_kwargs = inputs.block_kwargs()
        residuals = {}
        for index, (name, block) in enumerate(self.blocks.items()):
            tokens = block(tokens, **block_kwargs)
            if index == 0:
                tokens = tokens + guided_hint
            residuals[name] = self.zero_blocks[name](tokens) * control_weight
        return residuals


# ------------------------------------------------------------------------------------------------ control weights
# How NVIDIA's Transfer1 inference turns the spec's weights into the tensor its branch multiplies (facts from
# cosmos-transfer1 `diffusion/inference/inference_utils.py`: load_spatial_temporal_weights, resize_control_weight_map,
# validate_controlnet_specs; `diffusion/inference/world_generation_pipeline.py`: _run_model;
# `diffusion/networks/general_dit_ctrl_enc.py`: GeneralDITEncoder.forward):
# - only numbers: no clamping; divided by their sum where the sum exceeds 1 (`w / w.sum().clip(1)`), so one control
#   at 2.0 acts at 1.0, and (1.5, -0.5) stays as given. A negative weight subtracts the branch's residual; NVIDIA's
#   spec check (and ours, inference/spec.py) refuses negative numbers, the network takes them.
# - any map: every weight becomes a map at the video's resolution (numbers constant, other-sized maps trilinear),
#   all clamped at 0, divided per pixel by their sum where it exceeds 1, then resampled to the token grid:
#   trilinear (align_corners=False), the first frame alone to one latent frame, the others to the remaining ones.
# NVIDIA builds these tensors in bf16; we keep float32 (its rounding, e.g. 0.3 -> 0.30078, is not reproduced).


def _trilinear(weight: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    if tuple(weight.shape[2:]) == tuple(size):
        return weight
    return F.interpolate(weight, size=size, mode="trilinear", align_corners=False)


def resample_weight_map(
    weight: torch.Tensor, token_grid: tuple[int, int, int], latent_frames: int, temporal_compression: int = 8
) -> torch.Tensor:
    """Spatio-temporal weight map [B,1,T,H,W] at pixel or latent resolution -> [B,1,T',H',W'] on the token grid.

    NVIDIA's rule (inference_utils.py, resize_control_weight_map): trilinear interpolation, align_corners=False,
    straight to the token grid in space; in time the first frame alone makes latent frame 0 and the other frames
    are interpolated to the remaining latent frames (T is the latent frames or the pixel frames, 1 + c*(frames-1)).
    A map of one frame applies to every frame. With temporal patches (never in the released models) each token
    frame takes the mean of its latent frames.
    """
    if weight.ndim != 5 or weight.shape[1] != 1:
        raise ValueError(f"control weight map must be [B,1,T,H,W], got shape {tuple(weight.shape)}")
    t_tokens, h_tokens, w_tokens = token_grid
    T = weight.shape[2]
    pixel_frames = temporal_compression * (latent_frames - 1) + 1
    if T not in (1, latent_frames, pixel_frames):
        raise ValueError(
            f"control weight map has {T} frames; expected 1, the latent frames ({latent_frames}) or the pixel frames "
            f"({pixel_frames})"
        )
    weight = weight.float()
    first = _trilinear(weight[:, :, :1], (1, h_tokens, w_tokens))
    if T == 1:
        weight = first.expand(-1, -1, latent_frames, -1, -1)
    elif latent_frames == 1:
        weight = first
    else:
        rest = _trilinear(weight[:, :, 1:], (latent_frames - 1, h_tokens, w_tokens))
        weight = torch.cat([first, rest], dim=2)
    if latent_frames != t_tokens:  # temporal patches: mean over each patch's latent frames
        weight = weight.reshape(weight.shape[0], 1, t_tokens, latent_frames // t_tokens, h_tokens, w_tokens).mean(3)
    return weight


def normalize_control_weights(weights: torch.Tensor) -> torch.Tensor:
    """[K, ...] weights of K controls, divided by their sum over K wherever that sum exceeds 1 (no clamping)."""
    return weights / weights.sum(dim=0, keepdim=True).clamp(min=1.0)


def _weight_items(control_weight: ControlWeight, num_controls: int) -> list:
    if control_weight is None:
        items = [1.0] * num_controls
    elif isinstance(control_weight, torch.Tensor) and control_weight.ndim in (1, 6):
        items = list(control_weight.unbind(0))
    elif isinstance(control_weight, (torch.Tensor, int, float)):
        items = [control_weight] * num_controls
    elif isinstance(control_weight, Sequence) and not isinstance(control_weight, str):
        items = list(control_weight)
    else:
        raise TypeError(f"control_weight: unsupported type {type(control_weight).__name__}")
    if len(items) != num_controls:
        raise ValueError(f"control_weight gives {len(items)} weights for {num_controls} controls")
    out = []
    for index, item in enumerate(items):
        if isinstance(item, torch.Tensor) and item.ndim == 5:
            if item.is_floating_point() and not bool(torch.isfinite(item).all()):
                bad = int((~torch.isfinite(item)).sum())
                raise DataError(f"control_weight: the map of control {index} {tuple(item.shape)} holds {bad} NaN or "
                                "inf values; weights must be finite (NaN makes the video all black)")
            out.append(item)
            continue
        if isinstance(item, torch.Tensor):
            if item.numel() != 1:
                raise ValueError(
                    f"a control weight must be a number or a map [B,1,T,H,W], got a tensor of shape {tuple(item.shape)}"
                )
            item = item.item()
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise TypeError(f"a control weight must be a number or a tensor map, got {type(item).__name__}")
        if not math.isfinite(item):
            raise DataError(f"control_weight: the weight of control {index} is {item}; weights must be finite "
                            "(NaN makes the video all black)")
        out.append(float(item))
    return out


def prepare_control_weights(
    control_weight: ControlWeight,
    num_controls: int,
    batch_size: int,
    token_grid: tuple[int, int, int],
    *,
    latent_frames: int | None = None,
    temporal_compression: int = 8,
    keep: torch.Tensor | None = None,
    normalize: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Any accepted control-weight form -> dense weights [K, B, T', H'*W', 1] on the token grid (float32).

    Accepted forms (K = num_controls): None (1 for every control); a number or 0-d tensor (the same for every
    control); a 1-D tensor or a sequence of K numbers (one per control); a map [B|1,1,T,H,W] (the same for every
    control); a tensor [K,B|1,1,T,H,W]; a sequence of K items, each a number or a map. Maps may be at pixel or latent
    resolution (see resample_weight_map).
    keep: [B, K] 0/1, controls dropped per sample before normalizing (joint training's hint dropout).
    normalize: NVIDIA's rule, see the comment opening this section (maps clamped at 0 and normalized at their own
        resolution, before resampling; numbers only normalized).
    """
    t_tokens, h_tokens, w_tokens = token_grid
    latent_frames = t_tokens if latent_frames is None else latent_frames
    items = _weight_items(control_weight, num_controls)
    if keep is not None:
        keep = keep.to(device=device, dtype=torch.float32).T  # [K, B]
    maps = [item for item in items if isinstance(item, torch.Tensor)]
    if not maps:
        weights = torch.tensor(items, dtype=torch.float32, device=device)[:, None].expand(num_controls, batch_size)
        if keep is not None:
            weights = weights * keep
        if normalize:
            weights = normalize_control_weights(weights)
        return weights[:, :, None, None, None].expand(num_controls, batch_size, t_tokens, h_tokens * w_tokens, 1)

    size = tuple(maps[0].shape[2:])  # the weights' common resolution: the first map's (NVIDIA: the video's)
    dense = []
    for item in items:
        if isinstance(item, float):
            dense.append(torch.full((batch_size, 1, *size), item, device=device))
            continue
        if item.shape[0] not in (1, batch_size) or item.shape[1] != 1:
            raise ValueError(
                f"control weight map must be [B,1,T,H,W] with B 1 or {batch_size}, got {tuple(item.shape)}")
        dense.append(_trilinear(item.to(device=device, dtype=torch.float32), size).expand(batch_size, 1, *size))
    weights = torch.stack(dense)  # [K, B, 1, T, H, W]
    if normalize:
        weights = weights.clamp(min=0)
    if keep is not None:
        weights = weights * keep[:, :, None, None, None, None]
    if normalize:
        weights = normalize_control_weights(weights)
    tokens = resample_weight_map(weights.flatten(0, 1), token_grid, latent_frames, temporal_compression)
    return tokens.reshape(num_controls, batch_size, t_tokens, h_tokens * w_tokens, 1)
