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

    tok = DCTTokenizer()   # 17 x 32 x 32 video -> 24 x 5 x 8 x 8 latent
"""

from __future__ import annotations

import math

import torch

from cosmos_transfer.tokenizers.base import VideoTokenizer
from cosmos_transfer.tokenizers.pixel import fold_patches, unfold_patches


def dct_basis(n: int, k: int) -> torch.Tensor:
    """The first k rows of the orthonormal DCT-II matrix of size n: [k, n]."""
    i = torch.arange(n, dtype=torch.float64)
    rows = [torch.cos(math.pi * (i + 0.5) * f / n) * math.sqrt((1 if f == 0 else 2) / n) for f in range(k)]
    return torch.stack(rows)


class DCTTokenizer(VideoTokenizer):
    def __init__(
        self,
        spatial_compression: int = 4,
        temporal_compression: int = 4,
        spatial_frequencies: int = 2,
        temporal_frequencies: int = 2,
        mean: float = 0.0,
        std: float = 0.5,
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
        """
        for name, value, most in [("spatial_frequencies", spatial_frequencies, spatial_compression),
                                  ("temporal_frequencies", temporal_frequencies, temporal_compression)]:  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
                raise ValueError(f"DCTTokenizer: {name} must be an int from 1 to {most}, got {value!r}")
        if not std > 0:
            raise ValueError(f"DCTTokenizer: std must be positive, got {std}")
        super().__init__(
            latent_channels=3 * temporal_frequencies * spatial_frequencies**2,
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
        self.register_buffer("basis", basis.reshape(-1, t * s * s).float(), persistent=False)
        self.mean, self.std = float(mean), float(std)
        self.scale = self.std * math.sqrt(t * s * s)  # DC coefficient / scale = patch mean / std
        self.freeze()

    def _encode_chunk(self, video: torch.Tensor) -> torch.Tensor:
        x = fold_patches(video - self.mean, self.temporal_compression, self.spatial_compression)
        n, _, frames, h, w = x.shape
        x = x.reshape(n, 3, -1, frames, h, w)
        latent = torch.einsum("kp,ncpfhw->nckfhw", self.basis.to(x), x) / self.scale
        return latent.reshape(n, self.latent_channels, frames, h, w)

    def _decode_chunk(self, latent: torch.Tensor) -> torch.Tensor:
        n, _, frames, h, w = latent.shape
        x = latent.reshape(n, 3, -1, frames, h, w) * self.scale
        x = torch.einsum("kp,nckfhw->ncpfhw", self.basis.to(x), x).reshape(n, -1, frames, h, w)
        video = unfold_patches(x, self.temporal_compression, self.spatial_compression) + self.mean
        return video.clamp(-1.0, 1.0)
