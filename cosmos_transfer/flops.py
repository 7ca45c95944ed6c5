"""FLOPs of a GeneralDIT training step, and MFU (model FLOPs utilization), the one place both are computed.

Counted: every matrix multiply (2*m*n*k), i.e. all Linear layers (patch embedding, time MLP, AdaLN modulation,
q/k/v/out projections, MLP, final layer) and attention's two matmuls (Q K^T and P V: 4 * L_q * L_k * D per sample),
whose L^2 term dominates for long videos. Elementwise work (norms, RoPE, softmax, GELU, modulation) is left out, as
is usual for MFU. A training step is forward + backward = 3x forward (the backward computes gradients for both the
inputs and the weights); for a frozen network (e.g. the ControlNet's base) that overestimates: its backward only
needs the input gradients (2x forward in all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DiTShape:
    """The sizes that determine a GeneralDIT's FLOPs."""

    model_channels: int
    num_blocks: int
    mlp_ratio: float
    in_channels: int  # as the network is built (the padding-mask channel is added when concat_padding_mask)
    out_channels: int
    patch_spatial: int
    patch_temporal: int
    crossattn_emb_channels: int
    concat_padding_mask: bool = True
    use_adaln_lora: bool = True
    adaln_lora_dim: int = 256

    @classmethod
    def of(cls, net: nn.Module) -> "DiTShape":
        """Read the sizes from a GeneralDIT (works on the meta device)."""
        first_block = net.blocks["block0"] if len(net.blocks) else None
        adaln_lora_dim = 0
        if net.use_adaln_lora and first_block is not None:
            adaln_lora_dim = first_block.blocks[0].adaLN_modulation[1].out_features
        return cls(
            model_channels=net.model_channels, num_blocks=net.num_blocks, mlp_ratio=net.mlp_ratio,
            in_channels=net.in_channels, out_channels=net.out_channels, patch_spatial=net.patch_spatial,
            patch_temporal=net.patch_temporal, crossattn_emb_channels=net.crossattn_emb_channels,
            concat_padding_mask=net.concat_padding_mask, use_adaln_lora=net.use_adaln_lora,
            adaln_lora_dim=adaln_lora_dim,
        )


def _adaln_flops(rows: int, d: int, chunks: int, use_lora: bool, lora_dim: int) -> int:
    if use_lora:
        return 2 * rows * (d * lora_dim + lora_dim * chunks * d)
    return 2 * rows * d * chunks * d


def dit_forward_flops(
    shape: DiTShape, batch: int, frames: int, height: int, width: int, text_len: int, per_frame_timesteps: bool = False
) -> int:
    """FLOPs of one forward pass on latents [batch, C, frames, height, width] with text_len text tokens."""
    for name, value in dict(batch=batch, frames=frames, height=height, width=width, text_len=text_len).items():
        if value < 1:
            raise ValueError(f"dit_forward_flops: {name} must be >= 1, got {value}")
    ps, pt = shape.patch_spatial, shape.patch_temporal
    if frames % pt or height % ps or width % ps:
        raise ValueError(f"dit_forward_flops: latent ({frames}, {height}, {width}) not divisible by the patch size")
    d, dc, m = shape.model_channels, shape.crossattn_emb_channels, text_len
    hidden = int(d * shape.mlp_ratio)
    seq = (frames // pt) * (height // ps) * (width // ps)  # tokens per sample
    tokens = batch * seq
    rows = batch * (frames // pt if per_frame_timesteps else 1)  # time-embedding rows (AdaLN inputs)
    lora, r = shape.use_adaln_lora, shape.adaln_lora_dim

    patch_in = (shape.in_channels + int(shape.concat_padding_mask)) * pt * ps * ps
    flops = 2 * tokens * patch_in * d  # patch embedding
    flops += 2 * rows * d * d + 2 * rows * d * (3 * d if lora else d)  # time MLP
    per_block = (
        4 * 2 * tokens * d * d  # self-attention q, k, v, out
        + 4 * batch * seq * seq * d  # self-attention Q K^T and P V
        + 2 * 2 * tokens * d * d  # cross-attention q, out
        + 2 * 2 * batch * m * dc * d  # cross-attention k, v from the text
        + 4 * batch * seq * m * d  # cross-attention Q K^T and P V
        + 2 * 2 * tokens * d * hidden  # MLP
        + 3 * _adaln_flops(rows, d, 3, lora, r)  # modulation of the three sub-blocks
    )
    flops += shape.num_blocks * per_block
    flops += _adaln_flops(rows, d, 2, lora, r) + 2 * tokens * d * (pt * ps * ps * shape.out_channels)  # final layer
    return flops


def dit_training_step_flops(
    net_or_shape: nn.Module | DiTShape, latent_shape: tuple[int, int, int, int, int], text_len: int,
    per_frame_timesteps: bool = False,
) -> int:
    """FLOPs of one training step (forward + backward = 3x forward) on latents of latent_shape [B, C, T, H, W]."""
    shape = net_or_shape if isinstance(net_or_shape, DiTShape) else DiTShape.of(net_or_shape)
    if len(latent_shape) != 5:
        raise ValueError(f"dit_training_step_flops: latent_shape must be (B, C, T, H, W), got {latent_shape}")
    batch, _, frames, height, width = latent_shape
    return 3 * dit_forward_flops(shape, batch, frames, height, width, text_len, per_frame_timesteps)


def mfu(flops_per_step: float, seconds_per_step: float, peak_flops_per_second: float, num_devices: int = 1) -> float:
    """Model FLOPs utilization: achieved FLOP/s over the devices' peak (e.g. H100 SXM bf16 dense: 989e12)."""
    if seconds_per_step <= 0 or peak_flops_per_second <= 0 or num_devices < 1:
        raise ValueError("mfu: seconds_per_step and peak_flops_per_second must be > 0, num_devices >= 1")
    return flops_per_step / seconds_per_step / (peak_flops_per_second * num_devices)


# Dense bf16 peak (TFLOP/s) of GPUs we know, by a substring of torch.cuda.get_device_name().
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def device_peak_tflops(device: torch.device, configured: float | None = None) -> float | None:
    """The peak used for MFU: `configured` when given, a known GPU's bf16 peak, else None (MFU is not reported)."""
    if configured:
        return float(configured)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_TFLOPS.items():
            if key in name:
                return peak
    return None
