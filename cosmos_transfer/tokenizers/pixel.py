"""PixelTokenizer: the light tokenizer for CPU work (the demo, fast tests). No learned weights.

A fixed patch (un)shuffle: each s x s pixel patch of each group of t frames becomes 3*t*s*s channels of one latent
pixel, scaled to roughly unit variance. Decoding is the exact inverse, so generated latents are viewable as video
without the 2 GB Cosmos tokenizer.

    tok = PixelTokenizer(spatial_compression=4)           # 17 x 64 x 64 video -> 48 x 17 x 16 x 16 latent
    tok = PixelTokenizer(spatial_compression=2, latent_channels=16)   # 12 channels, zero-padded to 16

With temporal_compression t > 1 the frame arithmetic is causal like Cosmos' (1 + t*k frames -> 1 + k latent
frames): the first frame is repeated t times to make the first group, and decoding drops the copies.
"""

from __future__ import annotations

import torch

from cosmos_transfer.tokenizers.base import VideoTokenizer


class PixelTokenizer(VideoTokenizer):
    def __init__(
        self,
        spatial_compression: int = 4,
        temporal_compression: int = 1,
        latent_channels: int | None = None,
        mean: float = 0.0,
        std: float = 0.5,
        pixel_chunk_duration: int = 121,
        max_enc_batch_size: int = 64,
        max_dec_batch_size: int = 64,
    ) -> None:
        """
        Args:
            spatial_compression: s, the side of the pixel patch folded into channels.
            temporal_compression: t, frames folded into channels (1: every frame is a latent frame).
            latent_channels: channels of the latent; default 3*t*s*s. A larger value zero-pads the channels (to
                match a network built for e.g. 16 channels); a smaller one is an error (the mapping would be lossy).
            mean, std: latent = (pixels - mean) / std; pixel values in [-1,1] have a std near 0.5 in natural video.
        """
        packed = 3 * temporal_compression * spatial_compression**2
        if latent_channels is None:
            latent_channels = packed
        if not isinstance(latent_channels, int) or latent_channels < packed:
            raise ValueError(
                f"PixelTokenizer: latent_channels must be an int >= 3*t*s*s = {packed} "
                f"(t={temporal_compression}, s={spatial_compression}), got {latent_channels!r}"
            )
        if not std > 0:
            raise ValueError(f"PixelTokenizer: std must be positive, got {std}")
        super().__init__(latent_channels=latent_channels, spatial_compression=spatial_compression,
                         temporal_compression=temporal_compression, pixel_chunk_duration=pixel_chunk_duration,
                         max_enc_batch_size=max_enc_batch_size, max_dec_batch_size=max_dec_batch_size)
        self.packed_channels = packed
        self.mean, self.std = float(mean), float(std)
        self.freeze()

    def _encode_chunk(self, video: torch.Tensor) -> torch.Tensor:
        x = (fold_patches(video, self.temporal_compression, self.spatial_compression) - self.mean) / self.std
        if self.latent_channels > self.packed_channels:
            x = torch.cat([x, x.new_zeros(x.shape[0], self.latent_channels - self.packed_channels, *x.shape[2:])], 1)
        return x

    def _decode_chunk(self, latent: torch.Tensor) -> torch.Tensor:
        x = latent[:, : self.packed_channels] * self.std + self.mean
        return unfold_patches(x, self.temporal_compression, self.spatial_compression).clamp(-1.0, 1.0)


def fold_patches(video: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """[N,3,F,H,W] -> [N, 3*t*s*s, (F+t-1)/t, H/s, W/s]: each t x s x s patch of each colour becomes channels
    (colour-major, then frame, row, column). With t > 1 the first frame is repeated t-1 times first (causal)."""
    if t > 1:
        video = torch.cat([video[:, :, :1].expand(-1, -1, t - 1, -1, -1), video], dim=2)
    n, c, frames, h, w = video.shape
    x = video.reshape(n, c, frames // t, t, h // s, s, w // s, s)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(n, c * t * s * s, frames // t, h // s, w // s)


def unfold_patches(x: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """The inverse of `fold_patches` (the repeated first frames are dropped)."""
    n, _, frames, h, w = x.shape
    x = x.reshape(n, 3, t, s, s, frames, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(n, 3, frames * t, h * s, w * s)[:, :, t - 1 :]
