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
(one for all controls, a list of them, or [K,B,1,T,H,W]) at pixel or latent resolution, resampled to the token grid.
Weights are clamped at 0 and, where their sum over the controls exceeds 1, divided by that sum (Cosmos' inference
rule). The official-checkpoint key conversion for control branches is at the end of this file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from cosmos_transfer.networks.dit import GeneralDIT, PatchEmbed

# Widths of the official hint MLP: Linear(D,16), SiLU, Linear(16,16), SiLU, ..., Linear(96,256), SiLU, Linear(256,D).
HINT_BLOCK_CHANNELS = (16, 16, 32, 32, 96, 96, 256)

ControlWeight = Union[float, torch.Tensor, Sequence[Union[float, torch.Tensor]], None]


class GeneralDITControl(GeneralDIT):
    """One control branch (official: GeneralDITEncoder). Returns per-block residuals for the base network.

    Args:
        num_control_blocks: blocks of the branch, copies of the base's first blocks (3 in Cosmos-Transfer1-7B).
        hint_channels: channels the hint latent is zero-padded to (128 in the released models; the tokenizer gives 16).
        **net_kwargs: the base GeneralDIT's arguments (same architecture as the base). `num_blocks`, when given, is
            the base's depth and only checked against num_control_blocks.
    """

    def __init__(self, num_control_blocks: int = 3, hint_channels: int = 128, **net_kwargs):
        base_blocks = net_kwargs.pop("num_blocks", None)
        if not isinstance(num_control_blocks, int) or num_control_blocks < 1:
            raise ValueError(f"GeneralDITControl: num_control_blocks must be a positive integer, got {num_control_blocks!r}")
        if base_blocks is not None and num_control_blocks > base_blocks:
            raise ValueError(
                f"GeneralDITControl: num_control_blocks={num_control_blocks} exceeds the base's num_blocks={base_blocks}"
            )
        if not isinstance(hint_channels, int) or hint_channels < 1:
            raise ValueError(f"GeneralDITControl: hint_channels must be a positive integer, got {hint_channels!r}")
        super().__init__(num_blocks=num_control_blocks, **net_kwargs)
        self.hint_channels = hint_channels
        channels = self.model_channels

        self.x_embedder2 = PatchEmbed(
            hint_channels + int(self.concat_padding_mask), channels, self.patch_spatial, self.patch_temporal
        )
        layers: list[nn.Module] = [nn.Linear(channels, HINT_BLOCK_CHANNELS[0]), nn.SiLU()]
        for width_in, width_out in zip(HINT_BLOCK_CHANNELS[:-1], HINT_BLOCK_CHANNELS[1:]):
            layers += [nn.Linear(width_in, width_out), nn.SiLU()]
        layers.append(nn.Linear(HINT_BLOCK_CHANNELS[-1], channels))
        self.input_hint_block = nn.Sequential(*layers)
        self.zero_blocks = nn.ModuleDict({name: nn.Linear(channels, channels) for name in self.blocks})
        self._init_control_weights()
        # Unused by the branch (it returns residuals, not a prediction); kept for official names, never trained.
        self.final_layer.requires_grad_(False)

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
def _resample_frames(weight: torch.Tensor, frames: int, temporal_compression: int) -> torch.Tensor:
    """[B,1,T,H,W] -> [B,1,frames,H,W]: as-is, or pixel frames (T = c*(frames-1)+1) averaged per latent frame."""
    T = weight.shape[2]
    if T == frames:
        return weight
    if T == temporal_compression * (frames - 1) + 1:
        # Causal tokenizer: pixel frame 0 alone makes latent frame 0, then each group of c frames makes one.
        rest = weight[:, :, 1:].reshape(*weight.shape[:2], frames - 1, temporal_compression, *weight.shape[3:])
        return torch.cat([weight[:, :, :1], rest.mean(dim=3)], dim=2)
    if T == 1:
        return weight.expand(-1, -1, frames, -1, -1)
    raise ValueError(
        f"control weight map has {T} frames; expected 1, the latent frames ({frames}) or the pixel frames "
        f"({temporal_compression * (frames - 1) + 1})"
    )


def resample_weight_map(
    weight: torch.Tensor, token_grid: tuple[int, int, int], latent_frames: int, temporal_compression: int = 8
) -> torch.Tensor:
    """Spatio-temporal weight map [B,1,T,H,W] at pixel or latent resolution -> [B,1,T',H',W'] on the token grid.

    Time: pixel frames are averaged per latent frame (first frame alone, as the causal tokenizer does), then latent
    frames per token frame. Space: area averaging when shrinking (each token gets the mean weight of its pixels),
    bilinear when enlarging.
    """
    if weight.ndim != 5 or weight.shape[1] != 1:
        raise ValueError(f"control weight map must be [B,1,T,H,W], got shape {tuple(weight.shape)}")
    t_tokens, h_tokens, w_tokens = token_grid
    weight = _resample_frames(weight.float(), latent_frames, temporal_compression)
    if latent_frames != t_tokens:  # temporal patches: mean over each patch's latent frames
        weight = weight.reshape(weight.shape[0], 1, t_tokens, latent_frames // t_tokens, *weight.shape[3:]).mean(3)
    B, _, T, H, W = weight.shape
    if (H, W) != (h_tokens, w_tokens):
        planes = weight.reshape(B * T, 1, H, W)
        mode = "area" if H >= h_tokens and W >= w_tokens else "bilinear"
        planes = F.interpolate(planes, size=(h_tokens, w_tokens), mode=mode)
        weight = planes.reshape(B, 1, T, h_tokens, w_tokens)
    return weight


def normalize_control_weights(weights: torch.Tensor) -> torch.Tensor:
    """[K, ...] weights of K controls: clamp at 0, then divide by their sum over K wherever that sum exceeds 1."""
    weights = weights.clamp(min=0)
    return weights / weights.sum(dim=0, keepdim=True).clamp(min=1.0)


def prepare_control_weights(
    control_weight: ControlWeight,
    num_controls: int,
    batch_size: int,
    token_grid: tuple[int, int, int],
    *,
    latent_frames: int | None = None,
    temporal_compression: int = 8,
    normalize: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Any accepted control-weight form -> dense weights [K, B, T', H'*W', 1] on the token grid (float32).

    Accepted forms (K = num_controls): None (1 for every control); a number or 0-d tensor (the same for every
    control); a 1-D tensor or a sequence of K numbers (one per control); a map [B|1,1,T,H,W] (the same for every
    control); a tensor [K,B|1,1,T,H,W]; a sequence of K items, each a number or a map.
    Maps may be at pixel or latent resolution (see resample_weight_map).
    """
    t_tokens, h_tokens, w_tokens = token_grid
    latent_frames = t_tokens if latent_frames is None else latent_frames
    shape = (batch_size, 1, t_tokens, h_tokens, w_tokens)

    def dense(item) -> torch.Tensor:
        if isinstance(item, torch.Tensor) and item.ndim == 5:
            if item.shape[0] not in (1, batch_size):
                raise ValueError(f"control weight map has batch {item.shape[0]}, expected 1 or {batch_size}")
            resampled = resample_weight_map(item.to(device), token_grid, latent_frames, temporal_compression)
            return resampled.expand(shape)
        if isinstance(item, torch.Tensor):
            if item.numel() != 1:
                raise ValueError(
                    f"a control weight must be a number or a map [B,1,T,H,W], got a tensor of shape {tuple(item.shape)}"
                )
            item = item.item()
        if not isinstance(item, (int, float)):
            raise TypeError(f"a control weight must be a number or a tensor map, got {type(item).__name__}")
        return torch.full(shape, float(item), device=device)

    if control_weight is None:
        items = [1.0] * num_controls
    elif isinstance(control_weight, torch.Tensor) and control_weight.ndim == 6:
        items = list(control_weight.unbind(0))
    elif isinstance(control_weight, torch.Tensor) and control_weight.ndim == 1:
        items = list(control_weight.unbind(0))
    elif isinstance(control_weight, (torch.Tensor, int, float)):
        items = [control_weight] * num_controls
    elif isinstance(control_weight, Sequence) and not isinstance(control_weight, str):
        items = list(control_weight)
    else:
        raise TypeError(f"control_weight: unsupported type {type(control_weight).__name__}")
    if len(items) != num_controls:
        raise ValueError(f"control_weight gives {len(items)} weights for {num_controls} controls")
    weights = torch.stack([dense(item) for item in items])  # [K, B, 1, T', H', W']
    if normalize:
        weights = normalize_control_weights(weights)
    return weights.reshape(num_controls, batch_size, t_tokens, h_tokens * w_tokens, 1)


# --------------------------------------------------------------------------------------- official control checkpoints
# An official control file (`edge_control.pt`, ...; a torch.save'd dict, maybe wrapped in "model"/"ema") holds the
# branch as `net.<branch key>`, the trained uncertainty head as `logvar.*`, and sometimes the base as
# `base_model.net.*` (+ `base_model.logvar.*`). Ours: the branch of hint key K is `net_ctrl.K.*` in the control
# model, the base `net.*`, the head `logvar.*`.
CONTROL_PREFIX = "net_ctrl."
_BASE_MODEL_PREFIX = "base_model."
_NON_WEIGHT = re.compile(r".*_extra_state$")


def official_control_to_ours(state: dict[str, torch.Tensor], hint_key: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official control state dict -> (our ControlDiffusionModel weights for `hint_key`, dropped keys).

    `net.X` -> `net_ctrl.<hint_key>.X`; `logvar.*` kept; `base_model.net.X` -> `net.X` (when the file has the base).
    """
    ours: dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in state.items():
        if _NON_WEIGHT.match(key) or not isinstance(value, torch.Tensor):
            dropped.append(key)
        elif key.startswith("net."):
            ours[f"{CONTROL_PREFIX}{hint_key}.{key[len('net.'):]}"] = value
        elif key.startswith("logvar."):
            ours[key] = value
        elif key.startswith(_BASE_MODEL_PREFIX + "net."):
            ours[key[len(_BASE_MODEL_PREFIX):]] = value
        else:
            dropped.append(key)
    if not any(k.startswith(CONTROL_PREFIX) for k in ours):
        raise ValueError(
            f"official_control_to_ours: no control-branch weights ('net.*') found; first keys: {list(state)[:5]}"
        )
    if not any(k.startswith(f"{CONTROL_PREFIX}{hint_key}.x_embedder2.") for k in ours):
        raise ValueError("official_control_to_ours: the file's 'net.*' has no 'x_embedder2' (hint embedding): "
                         "this is a base-model checkpoint, not a control checkpoint")
    return ours, sorted(dropped)


def ours_to_official_control(state: dict[str, torch.Tensor], hint_key: str, include_base: bool = False
                             ) -> dict[str, torch.Tensor]:
    """Our control-model weights -> an official control file for `hint_key` (`net.*` = branch, `logvar.*`)."""
    prefix = f"{CONTROL_PREFIX}{hint_key}."
    official = {"net." + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not official:
        branches = sorted({k.split(".")[1] for k in state if k.startswith(CONTROL_PREFIX)})
        raise ValueError(f"ours_to_official_control: no branch '{hint_key}' in the weights; branches: {branches}")
    official.update({k: v for k, v in state.items() if k.startswith("logvar.")})
    if include_base:
        official.update({_BASE_MODEL_PREFIX + k: v for k, v in state.items() if k.startswith("net.")})
    return official


def control_weights_from_base(state: dict[str, torch.Tensor], hint_keys: Sequence[str], num_control_blocks: int
                              ) -> dict[str, torch.Tensor]:
    """New branches initialized from base weights: for each hint key, `net_ctrl.K.X` = `net.X` for every X the
    branch shares with the base (embedders, blocks 0..num_control_blocks-1, final layer, norms).

    The result, merged with the base weights, is what `checkpoint.load_path` takes to start a new control branch
    from official base weights; the branch's own parts (x_embedder2, input_hint_block, zero_blocks) are absent and
    keep their initialization (allow them with checkpoint.allowed_missing_keys, see `NEW_BRANCH_KEY_PATTERNS`).
    """
    shared = {}
    for key, value in state.items():
        if not key.startswith("net."):
            continue
        name = key[len("net."):]
        match = re.match(r"blocks\.block(\d+)\.", name)
        if match and int(match.group(1)) >= num_control_blocks:
            continue
        for hint_key in hint_keys:
            shared[f"{CONTROL_PREFIX}{hint_key}.{name}"] = value.clone()  # files may not share storage
    if not shared:
        raise ValueError(f"control_weights_from_base: no 'net.*' base weights; first keys: {list(state)[:5]}")
    return shared


# checkpoint.allowed_missing_keys for a new branch started by control_weights_from_base.
NEW_BRANCH_KEY_PATTERNS = ("net_ctrl.*.x_embedder2.*", "net_ctrl.*.input_hint_block.*", "net_ctrl.*.zero_blocks.*")


def load_official_control(path: str, hint_key: str, use_ema: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read an official control file (torch.load, weights_only=True) as our weights for branch `hint_key`."""
    import os

    from cosmos_transfer import checkpoint_convert

    if not os.path.isfile(path):
        raise FileNotFoundError(f"official control checkpoint {path} does not exist")
    saved = checkpoint_convert.torch_load_weights(path)
    return official_control_to_ours(checkpoint_convert.unwrap(saved, use_ema=use_ema, source=path), hint_key)


def add_control_branches(
    state: dict[str, torch.Tensor],
    official_controls: dict[str, str] | None = None,
    new_branches: Sequence[str] = (),
    num_control_blocks: int = 3,
    use_ema: bool = False,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Base-model weights (`net.*`, `logvar.*`) + control branches -> our ControlDiffusionModel weights.

    official_controls: hint key -> official control file (`edge_control.pt`, ...): the branch, and its trained
        `logvar.*`, which replaces the base's (the base inside such a file is used only when `state` has none).
    new_branches: hint keys of new branches initialized from the base (control_weights_from_base).
    Returns (weights, dropped keys).
    """
    merged = dict(state)
    dropped: list[str] = []
    for hint_key, path in (official_controls or {}).items():
        control, control_dropped = load_official_control(path, hint_key, use_ema)
        dropped += control_dropped
        for key, value in control.items():
            if key.startswith("net.") and key in state:
                continue  # the base file's weights win over a copy inside the control file
            merged[key] = value
    overlap = set(new_branches) & set(official_controls or {})
    if overlap:
        raise ValueError(f"add_control_branches: hint keys {sorted(overlap)} given both as official files and as new")
    if new_branches:
        merged.update(control_weights_from_base(merged, list(new_branches), num_control_blocks))
    return merged, dropped
