"""Cosmos-Tokenize1-CV8x8x8: the continuous causal video autoencoder the Cosmos-1.0 DiT trains on, top to bottom.

8x temporal and 8x8 spatial compression, 16 latent channels; 1 + 8k frames -> 1 + k latent frames.

    video [B,3,T,H,W]
      -> 2 levels of 3D Haar wavelets (the first frame repeated 4x, so the video stays causal): 192 ch, T'x H/4 x W/4
      -> conv_in, 3 levels of factorized residual blocks (the first level downsamples 2x in time and space),
         middle block with spatial + causal temporal attention, GroupNorm, SiLU, conv_out -> quant_conv
    latent [B,16,1+(T-1)/8,H/8,W/8]
      -> post_quant_conv, the mirrored decoder, inverse Haar wavelets -> video

Every convolution is "factorized" (a 1x3x3 spatial conv followed by a 3x1x1 temporal conv) and causal in time: the
past is padded by repeating the first frame, so frame t never sees frame t+1. GroupNorm runs on each frame alone.
Parameter names are the official ones (those in encoder.jit / decoder.jit / autoencoder.jit), so the released
weights load by name: `encoder.down.0.block.0.conv1.0.conv3d.weight`, `encoder.mid.attn_1.1.q.conv3d.weight`,
`quant_conv.conv3d.weight`, `decoder.up.1.upsample.conv2.conv3d.bias`, ...

`CosmosCV8x8x8Tokenizer` wraps the network in the tokenizer interface (normalization by mean_std.pt, chunking,
bf16 on CUDA); `cosmos_transfer.tokenizers.jit` loads the official TorchScript files instead.
"""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cosmos_transfer.tokenizers.base import StandardizedTokenizer
from cosmos_transfer.tokenizers.files import (
    DECODER_FILE,
    ENCODER_FILE,
    load_jit_module,
    load_mean_std,
    resolve_checkpoint_dir,
)

# Wavelet buffers that TorchScript files carry (theirs and ours: a .jit state dict keeps non-persistent buffers);
# they are computed, not loaded.
_IGNORED_OFFICIAL_KEYS = ("wavelets", "_arange", "patch_size_buffer", "haar")


# ------------------------------------------------------------------------------------------------ building blocks
class CausalConv3d(nn.Module):
    """Conv3d, causal in time: the past is padded with copies of the first frame, space with zeros."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int = 1,
        time_stride: int = 1,
        padding: int = 1,
    ) -> None:
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        self.time_pad = (kt - 1) + (1 - time_stride)
        self.stride, self.time_stride, self.padding = stride, time_stride, padding
        # The factorized network has only (1,k,k) spatial and (k,1,1) temporal kernels. Both run as 2D convs:
        # PyTorch's CPU conv3d often falls back to a slow unfold path for them, conv2d does not (same weights).
        if kh == 1 and kw == 1 and stride == 1 and padding == 0:
            self.kind = "temporal"  # also 1x1x1: a view, no copies
        elif kt == 1 and time_stride == 1:
            self.kind = "spatial"
        else:
            self.kind = "full"
        self.conv3d = nn.Conv3d(  # official name `conv3d`
            in_channels, out_channels, (kt, kh, kw), stride=(time_stride, stride, stride), padding=(0, padding, padding)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad > 0:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        b, c, t, h, w = x.shape
        if self.kind == "temporal":  # (k,1,1): a 2D conv over (T, H*W) of a view of the input
            y = F.conv2d(x.reshape(b, c, t, h * w), self.conv3d.weight.flatten(3), self.conv3d.bias,
                         stride=(self.time_stride, 1))  # fmt: skip
            return y.view(b, y.shape[1], y.shape[2], h, w)
        if self.kind == "spatial":  # (1,k,k): a 2D conv of every frame
            frames = x.transpose(1, 2).reshape(b * t, c, h, w)
            y = F.conv2d(frames, self.conv3d.weight.squeeze(2), self.conv3d.bias, stride=self.stride,
                         padding=self.padding)  # fmt: skip
            return y.view(b, t, y.shape[1], y.shape[2], y.shape[3]).transpose(1, 2).contiguous()
        return self.conv3d(x)


def factorized_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """A 1x3x3 spatial conv then a 3x1x1 causal temporal conv (official names `<name>.0`, `<name>.1`)."""
    return nn.Sequential(
        CausalConv3d(in_channels, out_channels, kernel_size=(1, 3, 3), padding=1),
        CausalConv3d(out_channels, out_channels, kernel_size=(3, 1, 1), padding=0),
    )


class FrameGroupNorm(nn.Module):
    """GroupNorm with one group, over each frame on its own (so normalization stays causal)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups=1, num_channels=channels, eps=1e-6, affine=True)  # official name `norm`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or x.dtype == torch.float64:
            # Statistics over (C, H, W) of each frame straight on [B,C,T,H,W], then one fused multiply-add:
            # no transposed copies of the activation (GroupNorm itself would need [B*T,C,H,W]).
            var, mean = torch.var_mean(x, dim=[1, 3, 4], keepdim=True, correction=0)
            scale = torch.rsqrt(var + self.norm.eps) * self.norm.weight.view(1, -1, 1, 1, 1)
            shift = self.norm.bias.view(1, -1, 1, 1, 1) - mean * scale
            return torch.addcmul(shift, x, scale)
        # Half precision: GroupNorm's kernels keep the statistics in float32.
        b = x.shape[0]
        y = self.norm(x.transpose(1, 2).flatten(0, 1))
        return y.unflatten(0, (b, -1)).transpose(1, 2)


class ResnetBlock(nn.Module):
    """norm-SiLU-conv twice, plus a (1x1 conv) shortcut; both convs factorized."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = FrameGroupNorm(in_channels)
        self.conv1 = factorized_conv(in_channels, out_channels)
        self.norm2 = FrameGroupNorm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = factorized_conv(out_channels, out_channels)
        if in_channels != out_channels:
            self.nin_shortcut = CausalConv3d(in_channels, out_channels, kernel_size=1, padding=0)
        else:
            self.nin_shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x), inplace=True))  # the norm output is a fresh tensor: SiLU in place
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return self.nin_shortcut(x) + h


class _AttentionBase(nn.Module):
    """Single-head attention whose q/k/v/out projections are 1x1x1 convs (official names q, k, v, proj_out)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = FrameGroupNorm(channels)
        self.q = CausalConv3d(channels, channels, kernel_size=1, padding=0)
        self.k = CausalConv3d(channels, channels, kernel_size=1, padding=0)
        self.v = CausalConv3d(channels, channels, kernel_size=1, padding=0)
        self.proj_out = CausalConv3d(channels, channels, kernel_size=1, padding=0)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # One 1x1x1 conv with the three weights stacked: one pass over the activation instead of three.
        weight = torch.cat([self.q.conv3d.weight, self.k.conv3d.weight, self.v.conv3d.weight])
        q_bias, k_bias, v_bias = self.q.conv3d.bias, self.k.conv3d.bias, self.v.conv3d.bias
        assert q_bias is not None and k_bias is not None and v_bias is not None  # (for TorchScript's type checker)
        bias = torch.cat([q_bias, k_bias, v_bias])
        b, c, t, h, w = x.shape
        qkv = F.conv2d(self.norm(x).reshape(b, c, t, h * w), weight.flatten(2).unsqueeze(-1), bias)  # 1x1 conv
        q, k, v = qkv.view(b, 3 * c, t, h, w).chunk(3, dim=1)
        return q, k, v


class SpatialAttention(_AttentionBase):
    """Attention among the pixels of each frame (official CausalAttnBlock)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        q, k, v = self.qkv(x)
        # [B,C,T,H,W] -> [B*T, H*W, C]
        q, k, v = [y.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c) for y in (q, k, v)]
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return x + self.proj_out(out)


class TemporalAttention(_AttentionBase):
    """Causal attention along time at each pixel (official CausalTemporalAttnBlock)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        q, k, v = self.qkv(x)
        # [B,C,T,H,W] -> [B*H*W, T, C]
        q, k, v = [y.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c) for y in (q, k, v)]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = out.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)
        return x + self.proj_out(out)


def attention_pair(channels: int) -> nn.Sequential:
    """Spatial then causal temporal attention (official `attn.<i>.0` / `attn.<i>.1`)."""
    return nn.Sequential(SpatialAttention(channels), TemporalAttention(channels))


def _avg_pool(x: torch.Tensor, time: int, space: int) -> torch.Tensor:
    """avg_pool3d with kernel = stride = (time, space, space) for time == 1 or space == 1, as a 2D pool of a view
    (CPU avg_pool3d has no bfloat16 kernel)."""
    b, c, t, h, w = x.shape
    if time == 1:
        y = F.avg_pool2d(x.reshape(b, c * t, h, w), space)
        return y.view(b, c, t, y.shape[2], y.shape[3])
    y = F.avg_pool2d(x.reshape(b, c, t, h * w), (time, 1))
    return y.view(b, c, y.shape[2], h, w)


class Downsample(nn.Module):
    """2x down in space and/or time: a strided conv plus average pooling, then a 1x1 conv (CausalHybridDownsample3d).
    Its three convs exist even when it does nothing, as in the official network (their weights are in the files)."""

    def __init__(self, channels: int, spatial: bool, temporal: bool) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, kernel_size=(1, 3, 3), stride=2, padding=0)
        self.conv2 = CausalConv3d(channels, channels, kernel_size=(3, 1, 1), time_stride=2, padding=0)
        self.conv3 = CausalConv3d(channels, channels, kernel_size=1, padding=0)
        self.spatial, self.temporal = spatial, temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spatial and not self.temporal:
            return x
        if self.spatial:
            x = F.pad(x, (0, 1, 0, 1, 0, 0))
            x = self.conv1(x) + _avg_pool(x, time=1, space=2)
        if self.temporal:
            x = torch.cat([x[:, :, :1], x], dim=2)  # causal: the first frame pairs with itself
            x = self.conv2(x) + _avg_pool(x, time=2, space=1)
        return self.conv3(x)


class Upsample(nn.Module):
    """2x up in time and/or space: nearest repeat plus a residual conv, then a 1x1 conv (CausalHybridUpsample3d)."""

    def __init__(self, channels: int, spatial: bool, temporal: bool) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, kernel_size=(3, 1, 1), padding=0)
        self.conv2 = CausalConv3d(channels, channels, kernel_size=(1, 3, 3), padding=1)
        self.conv3 = CausalConv3d(channels, channels, kernel_size=1, padding=0)
        self.spatial, self.temporal = spatial, temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spatial and not self.temporal:
            return x
        if self.temporal and x.shape[2] > 1:
            # Each frame twice, minus the first copy: 1 + k frames -> 1 + 2k (the causal inverse of Downsample).
            x = x.repeat_interleave(2, dim=2)[:, :, 1:]
        if self.temporal:
            x = self.conv1(x) + x
        if self.spatial:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
            x = self.conv2(x) + x
        return self.conv3(x)


# ------------------------------------------------------------------------------------------------ Haar wavelets
def _haar_matrix() -> torch.Tensor:
    """[8, 8]: one level of the 3D Haar transform of a 2x2x2 block, band (t,h,w) x position (i,j,k); rows are the
    low (+,+) or high (+,-) filter along each axis; 1/8 is the official scaling (LLL = block mean)."""
    sign = torch.tensor([[1.0, 1.0], [1.0, -1.0]])  # [band, position] for one axis
    m = torch.einsum("ai,bj,ck->abcijk", sign, sign, sign).reshape(8, 8)
    return m / 8.0


class _Haar(nn.Module):
    """What the patcher and the unpatcher share: the patch size, its log2(patch_size) levels, the Haar matrix."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.levels = int(math.log2(patch_size))
        self.register_buffer("haar", _haar_matrix(), persistent=False)


class HaarPatcher(_Haar):
    """Causal 3D Haar wavelet patching: repeat the first frame patch_size times, then log2(patch_size) levels of
    2x2x2 Haar; [B,C,T,H,W] -> [B, C*p^3, (T+p-1)/p, H/p, W/p], channels band-major as in the official patcher."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, :, :1].expand(-1, -1, self.patch_size - 1, -1, -1), x], dim=2)
        for _ in range(self.levels):
            b, c, t, h, w = x.shape
            blocks = x.reshape(b, c, t // 2, 2, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
            bands = torch.matmul(blocks.reshape(b, c, t // 2, h // 2, w // 2, 8), self.haar.to(x.dtype).t())
            x = bands.permute(0, 5, 1, 2, 3, 4).reshape(b, 8 * c, t // 2, h // 2, w // 2)
        return x


class HaarUnpatcher(_Haar):
    """Inverse of HaarPatcher (drops the repeated copies of the first frame)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inverse = self.haar.to(x.dtype).t() * 8.0  # M @ M.T = I / 8, so M's inverse is 8 * M.T
        for _ in range(self.levels):
            b, c8, t, h, w = x.shape
            c = c8 // 8
            bands = x.reshape(b, 8, c, t, h, w).permute(0, 2, 3, 4, 5, 1)
            blocks = torch.matmul(bands, inverse.t()).reshape(b, c, t, h, w, 2, 2, 2)
            x = blocks.permute(0, 1, 2, 5, 3, 6, 4, 7).reshape(b, c, 2 * t, 2 * h, 2 * w)
        return x[:, :, self.patch_size - 1 :]


# ------------------------------------------------------------------------------------------------ encoder, decoder
class _Level(nn.Module):
    """Residual blocks, each followed by attention at the attention resolutions (the two level kinds' shared part)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool, dropout: float) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            [ResnetBlock(in_channels if i == 0 else out_channels, out_channels, dropout) for i in range(num_blocks)]
        )
        # Identity (no weights, so no names) where a level has no attention: keeps the official names.
        self.attn = nn.ModuleList(
            [attention_pair(out_channels) if attention else nn.Identity() for _ in range(num_blocks)]
        )

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        for block, attn in zip(self.block, self.attn):
            x = attn(block(x))
        return x


class EncoderLevel(_Level):
    """A level of the encoder: its blocks, then `downsample` (the official name; set by Encoder, Identity on the
    deepest level)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self._blocks(x))


class MiddleBlock(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = attention_pair(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


@dataclass(frozen=True)
class CoderShape:
    """What the encoder and the decoder are both built from: CausalVideoAutoencoder's arguments of these names."""

    channels: int
    channels_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    resolution: int
    z_channels: int
    patch_size: int
    spatial_compression: int
    temporal_compression: int
    dropout: float

    def resampling_levels(self) -> tuple[int, int, int]:
        """(levels, spatial, temporal): the number of levels, and how many of them resample in space and in time
        (the Haar patching does log2(patch_size) of each compression); the encoder downsamples, the decoder
        mirrors it."""
        num_levels = len(self.channels_mult)
        spatial = int(math.log2(self.spatial_compression)) - int(math.log2(self.patch_size))
        temporal = int(math.log2(self.temporal_compression)) - int(math.log2(self.patch_size))
        if not (0 <= spatial < num_levels and 0 <= temporal < num_levels):
            raise ValueError(
                f"Encoder: compression {self.temporal_compression}x{self.spatial_compression} with patch_size "
                f"{self.patch_size} needs more than the {num_levels - 1} downsampling levels of "
                f"channels_mult={list(self.channels_mult)}"
            )
        return num_levels, spatial, temporal


class Encoder(nn.Module):
    def __init__(self, in_channels: int, shape: CoderShape) -> None:
        super().__init__()
        num_levels, spatial_downs, temporal_downs = shape.resampling_levels()
        self.patcher3d = HaarPatcher(shape.patch_size)
        self.conv_in = factorized_conv(in_channels * shape.patch_size**3, shape.channels)
        res = shape.resolution // shape.patch_size
        widths = [shape.channels] + [shape.channels * m for m in shape.channels_mult]
        self.down = nn.ModuleList()
        for i in range(num_levels):
            attention = res in shape.attn_resolutions
            level = EncoderLevel(widths[i], widths[i + 1], shape.num_res_blocks, attention, shape.dropout)
            level.downsample = nn.Identity()
            if i != num_levels - 1:
                level.downsample = Downsample(widths[i + 1], spatial=i < spatial_downs, temporal=i < temporal_downs)
                res //= 2
            self.down.append(level)
        self.mid = MiddleBlock(widths[-1], shape.dropout)
        self.norm_out = FrameGroupNorm(widths[-1])
        self.conv_out = factorized_conv(widths[-1], shape.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(self.patcher3d(x))
        for level in self.down:
            x = level(x)
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x), inplace=True))


class DecoderLevel(_Level):
    """A level of the decoder: its blocks, then `upsample` (the official name; set by Decoder, Identity on the
    full-resolution level)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self._blocks(x))


class Decoder(nn.Module):
    def __init__(self, out_channels: int, shape: CoderShape) -> None:
        super().__init__()
        num_levels, spatial_ups, temporal_ups = shape.resampling_levels()
        channels, channels_mult = shape.channels, shape.channels_mult
        width = channels * channels_mult[-1]
        res = (shape.resolution // shape.patch_size) // 2 ** (num_levels - 1)
        self.conv_in = factorized_conv(shape.z_channels, width)
        self.mid = MiddleBlock(width, shape.dropout)
        # `up.<level>` counts from the full-resolution level 0, but decoding runs from the deepest level up. The
        # levels are registered deepest first, so iterating the ModuleList (also under TorchScript) runs them in
        # decoding order while their names stay the official ones.
        self.up = nn.ModuleList()
        for i in reversed(range(num_levels)):
            attention = res in shape.attn_resolutions
            level = DecoderLevel(width, channels * channels_mult[i], shape.num_res_blocks + 1, attention, shape.dropout)
            width = channels * channels_mult[i]
            level.upsample = nn.Identity()
            if i != 0:
                depth = num_levels - 1 - i  # 0 for the deepest level
                temporal = 0 < depth < temporal_ups + 1
                spatial = temporal or (depth < spatial_ups and spatial_ups > temporal_ups)
                level.upsample = Upsample(width, spatial=spatial, temporal=temporal)
                res *= 2
            self.up.add_module(str(i), level)
        self.norm_out = FrameGroupNorm(width)
        self.conv_out = factorized_conv(width, out_channels * shape.patch_size**3)
        self.unpatcher3d = HaarUnpatcher(shape.patch_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in self.up:
            x = level(x)
        return self.unpatcher3d(self.conv_out(F.silu(self.norm_out(x), inplace=True)))


# ------------------------------------------------------------------------------------------------ the autoencoder
class CausalVideoAutoencoder(nn.Module):
    """The CV8x8x8 network (official CausalContinuousVideoTokenizer, AE formulation). Defaults are the released
    Cosmos-Tokenize1-CV8x8x8-720p settings; tests use a small `channels`."""

    def __init__(
        self,
        channels: int = 128, channels_mult: Sequence[int] = (2, 4, 4), num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (32,), resolution: int = 1024,
        latent_channels: int = 16, z_channels: int = 16, patch_size: int = 4,
        spatial_compression: int = 8, temporal_compression: int = 8,
        in_channels: int = 3, out_channels: int = 3, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        shape = CoderShape(channels, tuple(channels_mult), num_res_blocks, tuple(attn_resolutions), resolution,
                           z_channels, patch_size, spatial_compression, temporal_compression, dropout)
        self.encoder = Encoder(in_channels, shape)
        self.decoder = Decoder(out_channels, shape)
        self.quant_conv = CausalConv3d(z_channels, latent_channels, kernel_size=1, padding=0)
        self.post_quant_conv = CausalConv3d(latent_channels, z_channels, kernel_size=1, padding=0)
        self.latent_channels = latent_channels
        self.spatial_compression = spatial_compression
        self.temporal_compression = temporal_compression

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(video))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latent))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(video))

    def latent_encoder(self) -> nn.Sequential:
        """The encoder half as one module, encoder then quant_conv (video -> raw latent; it shares the parameters):
        the names and state dict of the official encoder.jit, e.g. to script and save as one."""
        return nn.Sequential(OrderedDict(encoder=self.encoder, quant_conv=self.quant_conv))

    def latent_decoder(self) -> nn.Sequential:
        """The decoder half, post_quant_conv then decoder (raw latent -> video), as the official decoder.jit."""
        return nn.Sequential(OrderedDict(post_quant_conv=self.post_quant_conv, decoder=self.decoder))

    def load_official_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load official weights by name (keys of autoencoder.jit, or encoder.jit and decoder.jit merged), ignoring
        the wavelet buffers the official files carry. Raises with the missing/unexpected names."""
        state = {k: v for k, v in state_dict.items() if k.rsplit(".", 1)[-1] not in _IGNORED_OFFICIAL_KEYS}
        result = self.load_state_dict(state, strict=False)
        if strict and (result.missing_keys or result.unexpected_keys):
            raise ValueError(
                "CausalVideoAutoencoder: the weights do not match the network "
                f"(missing {len(result.missing_keys)}: {result.missing_keys[:5]}, "
                f"unexpected {len(result.unexpected_keys)}: {result.unexpected_keys[:5]}); check channels, "
                "channels_mult, num_res_blocks and attn_resolutions against the checkpoint"
            )


def _diffusers_key(key: str, num_levels: int) -> str:
    key = re.sub(r"^encoder\.down\.(\d+)\.", r"encoder.down_blocks.\1.", key)
    key = re.sub(r"^decoder\.up\.(\d+)\.", lambda m: f"decoder.up_blocks.{num_levels - 1 - int(m[1])}.", key)
    key = re.sub(r"\.attn\.(\d+)\.0\.", r".attentions.\1.", key)
    key = re.sub(r"\.attn\.(\d+)\.1\.", r".temp_attentions.\1.", key)
    for ours, theirs in [
        (".mid.block_1.", ".mid_block.resnets.0."),
        (".mid.block_2.", ".mid_block.resnets.1."),
        (".mid.attn_1.0.", ".mid_block.attentions.0."),
        (".mid.attn_1.1.", ".mid_block.temp_attentions.0."),
        (".block.", ".resnets."),
        (".downsample.", ".downsamplers.0."),
        (".upsample.", ".upsamplers.0."),
        (".q.conv3d.", ".to_q."),
        (".k.conv3d.", ".to_k."),
        (".v.conv3d.", ".to_v."),
        (".proj_out.conv3d.", ".to_out.0."),
        (".nin_shortcut.conv3d.", ".conv_shortcut."),
    ]:
        key = key.replace(ours, theirs)
    key = re.sub(r"\.0\.conv3d\.", ".conv_s.", key)  # factorized convs: spatial, then temporal
    key = re.sub(r"\.1\.conv3d\.", ".conv_t.", key)
    return key.replace(".conv3d.", ".")


def diffusers_state_dict(network: CausalVideoAutoencoder) -> dict[str, torch.Tensor]:
    """The network's weights under the parameter names of diffusers' AutoencoderKLCosmos (which leaves out the
    convs of resamplers that are switched off; the official files keep them)."""
    unused = set()
    for prefix, module in network.named_modules():
        if isinstance(module, (Downsample, Upsample)):
            # Downsample: conv1 spatial, conv2 temporal; Upsample: conv1 temporal, conv2 spatial; conv3 if either.
            first, second = (module.spatial, module.temporal) if isinstance(module, Downsample) else (
                module.temporal, module.spatial)  # fmt: skip
            for name, used in [("conv1", first), ("conv2", second), ("conv3", first or second)]:
                if not used:
                    unused.add(f"{prefix}.{name}.")
    num_levels = len(network.encoder.down)
    return {
        _diffusers_key(key, num_levels): value
        for key, value in network.state_dict().items()
        if not any(key.startswith(u) for u in unused)
    }


# ------------------------------------------------------------------------------------------------ the tokenizer
class CosmosCV8x8x8Tokenizer(StandardizedTokenizer):
    """Our CV8x8x8 network behind the tokenizer interface.

    With `checkpoint_dir` (or $COSMOS_CHECKPOINT_DIR/nvidia/Cosmos-Tokenize1-CV8x8x8-720p when it is None and
    `load_weights` is true) the official weights are read by name from encoder.jit/decoder.jit and the latent
    statistics from mean_std.pt. With load_weights=False the network keeps a seeded random initialization and the
    latents are not shifted or scaled (mean 0, std 1): the `cosmos_cv8x8x8_random` option for tests.

    dtype: "auto" runs in bfloat16 on CUDA and float32 on CPU (the weights are cast when the device changes);
    "float32" / "bfloat16" force one.
    **architecture: the network's other arguments (CausalVideoAutoencoder's channels, channels_mult, num_res_blocks,
    attn_resolutions, resolution, z_channels, patch_size); their defaults are the released network's.
    """

    def __init__(
        self,
        checkpoint_dir: str | None = None, load_weights: bool = True,
        latent_channels: int = 16, spatial_compression: int = 8, temporal_compression: int = 8,
        pixel_chunk_duration: int = 121, max_enc_batch_size: int = 8, max_dec_batch_size: int = 4,
        dtype: str = "auto", seed: int = 0, **architecture,
    ) -> None:
        super().__init__(latent_channels=latent_channels, spatial_compression=spatial_compression,
                         temporal_compression=temporal_compression, pixel_chunk_duration=pixel_chunk_duration,
                         max_enc_batch_size=max_enc_batch_size, max_dec_batch_size=max_dec_batch_size, dtype=dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the random-weight option is the same network in every process
            self.network = CausalVideoAutoencoder(latent_channels=latent_channels,
                                                  spatial_compression=spatial_compression,
                                                  temporal_compression=temporal_compression, **architecture)
        mean = torch.zeros(1, latent_channels, self.latent_chunk_duration, 1, 1)
        std = torch.ones(1, latent_channels, self.latent_chunk_duration, 1, 1)
        self.checkpoint_dir = None
        if load_weights:
            folder = resolve_checkpoint_dir(checkpoint_dir, "CosmosCV8x8x8Tokenizer")
            self.checkpoint_dir = folder
            state = dict(load_jit_module(os.path.join(folder, ENCODER_FILE)).state_dict())
            state.update(load_jit_module(os.path.join(folder, DECODER_FILE)).state_dict())
            self.network.load_official_state_dict({k: v.float() for k, v in state.items()})
            mean, std = load_mean_std(folder, latent_channels, self.latent_chunk_duration)
        self.set_latent_stats(mean, std)
        self.freeze()

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Cast x to the compute dtype; the network follows x's device and that dtype (e.g. after an offload)."""
        dtype = self.compute_dtype(x.device)
        weight = self.network.quant_conv.conv3d.weight
        if weight.dtype != dtype or weight.device != x.device:
            self.network.to(device=x.device, dtype=dtype)
        return x.to(dtype)

    def _encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        return self.network.encode(self._prepare(video))

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.network.decode(self._prepare(z))
