"""DCTTokenizer: a fixed tokenizer that compresses, for CPU work at tiny size (the demo). No learned weights.

Each t x s x s patch of each colour (as in PixelTokenizer) is reduced to its lowest `temporal_frequencies` x
`spatial_frequencies`^2 DCT coefficients, which become the channels of one latent pixel: 4x4 pixels x 4 frames x RGB
= 192 values -> 3 x 2 x 2 x 2 = 24 channels by default (8x compression; Cosmos' CV8x8x8 compresses 96x). Decoding is
the least-squares inverse: the dropped frequencies are zero, so a decoded video is smooth inside each patch.

Why the demo needs it: a net's output per token is a linear map of its features, and sampling leaves every value the
net cannot predict as noise. With the PixelTokenizer a token holds 192 raw pixel values, most of them fine detail a
tiny net trained for minutes cannot predict, and the samples stay grainy, which Canny (and the eye) reads as
edges everywhere. Kept to its low frequencies, a token holds what a small net can learn: colours and where they
change. The channels are scaled so that the constant (DC) channel is the patch mean, normalized like PixelTokenizer
pixels: (mean - `mean`) / `std`.

Per-channel scale (as Cosmos' tokenizers standardize their latents with mean_std.pt): at that common scale the 21
channels of the patches' gradients are 4-30x smaller than the 3 patch means on the demo clips, and an EDM loss with
one sigma_data for every channel leaves them (the shapes' outlines) unlearned. `latent_mean` / `latent_std` (one
value per channel, measured on the data with `channel_stats`) standardize each channel to zero mean and unit std, the
way StandardizedTokenizer does for the learned autoencoders; the defaults (0 and 1) keep the common scale.

    tok = DCTTokenizer()   # 17 x 32 x 32 video -> 24 x 5 x 8 x 8 latent
    mean, std = channel_stats(DCTTokenizer(), videos)   # per-channel statistics of the unstandardized latents
    tok = DCTTokenizer(latent_mean=mean, latent_std=std)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from cosmos_transfer.tokenizers.base import StandardizedTokenizer
from cosmos_transfer.tokenizers.pixel import fold_patches, unfold_patches


def dct_basis(n: int, k: int) -> torch.Tensor:
    """The first k rows of the orthonormal DCT-II matrix of size n: [k, n]."""
    i = torch.arange(n, dtype=torch.float64)
    rows = [torch.cos(math.pi * (i + 0.5) * f / n) * math.sqrt((1 if f == 0 else 2) / n) for f in range(k)]
    return torch.stack(rows)


class DCTTokenizer(StandardizedTokenizer):
    def __init__(
        self,
        spatial_compression: int = 4,
        temporal_compression: int = 4,
        spatial_frequencies: int = 2,
        temporal_frequencies: int = 2,
        mean: float = 0.0,
        std: float = 0.5,
        latent_mean: Sequence[float] | None = None,
        latent_std: Sequence[float] | None = None,
        pixel_chunk_duration: int = 121,
        max_enc_batch_size: int = 64,
        max_dec_batch_size: int = 64,
    ) -> None:
        """
        Args:
            spatial_compression, temporal_compression: s and t, the patch folded into one latent pixel.
            spatial_frequencies: DCT frequencies kept along each of height and width (1..s).
            temporal_frequencies: DCT frequencies kept along time (1..t).
            mean, std: the DC channel is (patch mean - mean) / std; the other channels share the same scale.
            latent_mean, latent_std: per channel (latent_channels values each), subtracted from and divided into
                the latent at that common scale; None: 0 and 1 (no per-channel standardization).
        """
        for name, value, most in [("spatial_frequencies", spatial_frequencies, spatial_compression),
                                  ("temporal_frequencies", temporal_frequencies, temporal_compression)]:  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
                raise ValueError(f"DCTTokenizer: {name} must be an int from 1 to {most}, got {value!r}")
        if not std > 0:
            raise ValueError(f"DCTTokenizer: std must be positive, got {std}")
        channels = 3 * temporal_frequencies * spatial_frequencies**2
        latent_mean = _per_channel("latent_mean", latent_mean, channels, 0.0)
        latent_std = _per_channel("latent_std", latent_std, channels, 1.0)
        if not bool((latent_std > 0).all()):
            raise ValueError(f"DCTTokenizer: every latent_std must be positive, got {latent_std.flatten().tolist()}")
        super().__init__(
            dtype="float32",  # a few matmuls: bf16 would only lose precision
            latent_channels=channels,
            temporal_compression=temporal_compression,
            spatial_compression=spatial_compression,
            pixel_chunk_duration=pixel_chunk_duration,
            max_enc_batch_size=max_enc_batch_size,
            max_dec_batch_size=max_dec_batch_size,
        )
        t, s = temporal_compression, spatial_compression
        spatial = dct_basis(s, spatial_frequencies)
        # Rows: kept frequencies (time, row, column); columns: a patch's values in fold_patches' order.
        basis = torch.einsum("at,by,cx->abctyx", dct_basis(t, temporal_frequencies), spatial, spatial)
        # Constants of the arguments, kept as plain tensors (not buffers) and moved to the data's device at each use:
        # no module operation can change them (a meta-device build's to_empty() would leave a buffer uninitialized).
        self.basis = basis.reshape(-1, t * s * s).float()
        self.mean, self.std = float(mean), float(std)
        self.scale = self.std * math.sqrt(t * s * s)  # DC coefficient / scale = patch mean / std
        self.latent_mean, self.latent_std = latent_mean, latent_std  # read by StandardizedTokenizer._stats
        self.freeze()

    def _encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        x = fold_patches(video - self.mean, self.temporal_compression, self.spatial_compression)
        n, _, frames, h, w = x.shape
        x = x.reshape(n, 3, -1, frames, h, w)
        latent = torch.einsum("kp,ncpfhw->nckfhw", self.basis.to(x), x) / self.scale
        return latent.reshape(n, self.latent_channels, frames, h, w)

    def _decode_raw(self, latent: torch.Tensor) -> torch.Tensor:
        n, _, frames, h, w = latent.shape
        x = latent.reshape(n, 3, -1, frames, h, w) * self.scale
        x = torch.einsum("kp,nckfhw->ncpfhw", self.basis.to(x), x).reshape(n, -1, frames, h, w)
        video = unfold_patches(x, self.temporal_compression, self.spatial_compression) + self.mean
        return video.clamp(-1.0, 1.0)


def _per_channel(name: str, values: Sequence[float] | None, channels: int, default: float) -> torch.Tensor:
    """`values` (one float per channel, or None for `default`) as a [1, C, 1, 1, 1] buffer."""
    if values is None:
        return torch.full((1, channels, 1, 1, 1), default)
    try:
        tensor = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError):
        raise ValueError(f"DCTTokenizer: {name} must be a list of {channels} floats (one per latent channel), "
                         f"got {values!r}") from None
    if tensor.numel() != channels or not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"DCTTokenizer: {name} must be {channels} finite floats (one per latent channel), got "
                         f"{tensor.numel()}: {tensor.tolist()}")
    return tensor.reshape(1, channels, 1, 1, 1)


@torch.no_grad()
def channel_stats(tokenizer: DCTTokenizer, videos: Iterable[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Mean and std per channel of `tokenizer`'s unstandardized latents over `videos` (float [B,3,T,H,W] in [-1, 1]):
    the `latent_mean` and `latent_std` that give those videos zero-mean, unit-std channels."""
    total = total_sq = None
    count = 0
    for video in videos:
        z = tokenizer.encode(video).double() * tokenizer.latent_std.double() + tokenizer.latent_mean.double()
        z = z.transpose(0, 1).flatten(1)  # [C, everything else]
        total = z.sum(1) if total is None else total + z.sum(1)
        total_sq = (z**2).sum(1) if total_sq is None else total_sq + (z**2).sum(1)
        count += z.shape[1]
    if not count:
        raise ValueError("channel_stats: no videos given")
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()
