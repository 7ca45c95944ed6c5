"""The video tokenizer interface shared by every tokenizer (docs/ARCHITECTURE.md, "Tokenizer").

    latent = tokenizer.encode(video)      # float [B,3,T,H,W] in [-1,1] -> normalized latent [B,C,T',H/s,W/s]
    video = tokenizer.decode(latent)      # -> float video in [-1,1]
    tokenizer.latent_num_frames(121)      # 16 for the Cosmos CV8x8x8 tokenizer (1 + 8k frames -> 1 + k)

Temporal chunks. A causal tokenizer is trained on clips of `pixel_chunk_duration` frames (121 for Cosmos) and
encodes longer videos chunk by chunk, each chunk on its own, exactly like the original. A video of T frames is
cut into whole chunks followed by at most one shorter chunk, which must itself be a valid clip length (1 + 8k).
Chunks of the same length are folded into the batch and run at most `max_enc_batch_size` (decode:
`max_dec_batch_size`) at a time, so memory is bounded by the chunk size, not by the video length or batch.

Frozen. A tokenizer never trains: parameters have requires_grad False, it stays in eval mode even when a parent
calls .train(), encode/decode run without autograd. A parent model keeps it out of its state_dict and optimizer by
holding it as a plain attribute instead of a submodule (see `hide_from_state_dict`).
"""

from __future__ import annotations

import abc

import torch
from torch import nn


class VideoTokenizer(nn.Module, metaclass=abc.ABCMeta):
    """Base class: frame arithmetic, input checks, chunking and batching. Subclasses implement `_encode_chunk`
    and `_decode_chunk` on one batch of whole chunks and call `self.freeze()` at the end of their __init__."""

    def __init__(self, *, latent_channels: int, temporal_compression: int, spatial_compression: int,
                 pixel_chunk_duration: int = 121, max_enc_batch_size: int = 8, max_dec_batch_size: int = 4) -> None:
        super().__init__()
        sizes = dict(latent_channels=latent_channels, temporal_compression=temporal_compression,
                     spatial_compression=spatial_compression, pixel_chunk_duration=pixel_chunk_duration,
                     max_enc_batch_size=max_enc_batch_size, max_dec_batch_size=max_dec_batch_size)
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {value!r}")
        if (pixel_chunk_duration - 1) % temporal_compression:
            raise ValueError(
                f"{type(self).__name__}: pixel_chunk_duration must be 1 + {temporal_compression}k frames "
                f"(e.g. {1 + 15 * temporal_compression}), got {pixel_chunk_duration}"
            )
        self.latent_channels = latent_channels
        self.temporal_compression, self.spatial_compression = temporal_compression, spatial_compression
        self.pixel_chunk_duration = pixel_chunk_duration
        self.max_enc_batch_size, self.max_dec_batch_size = max_enc_batch_size, max_dec_batch_size
        self.latent_chunk_duration = self._chunk_latent_frames(pixel_chunk_duration)

    # ------------------------------------------------------------------------------------- frame arithmetic
    def _chunk_latent_frames(self, n: int, total: int | None = None) -> int:
        t = self.temporal_compression
        if n < 1 or (n - 1) % t:
            raise ValueError(self._frame_count_message(n if total is None else total))
        return 1 + (n - 1) // t

    def _frame_count_message(self, n: int) -> str:
        t, p = self.temporal_compression, self.pixel_chunk_duration
        examples = ", ".join(str(1 + t * k) for k in range(4))
        return (
            f"{type(self).__name__}: cannot tokenize {n} frames: expected 1 + {t}k frames ({examples}, ..., {p}), "
            f"or whole chunks of {p} frames followed by 1 + {t}k frames"
        )

    def latent_num_frames(self, num_pixel_frames: int) -> int:
        """Latent frames of a video of `num_pixel_frames` frames (1 + 8k -> 1 + k per chunk for Cosmos)."""
        n = int(num_pixel_frames)
        if n < 1:
            raise ValueError(self._frame_count_message(n))
        whole, rest = divmod(n, self.pixel_chunk_duration)
        return whole * self.latent_chunk_duration + (self._chunk_latent_frames(rest, n) if rest else 0)

    def pixel_num_frames(self, num_latent_frames: int) -> int:
        """Pixel frames decoded from `num_latent_frames` latent frames (the inverse of latent_num_frames)."""
        m = int(num_latent_frames)
        if m < 1:
            raise ValueError(f"{type(self).__name__}: the number of latent frames must be >= 1, got {m}")
        whole, rest = divmod(m, self.latent_chunk_duration)
        return whole * self.pixel_chunk_duration + (1 + self.temporal_compression * (rest - 1) if rest else 0)

    # ----------------------------------------------------------------------------------------- frozen state
    def freeze(self) -> "VideoTokenizer":
        """No gradients, eval mode (call at the end of a subclass's __init__)."""
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "VideoTokenizer":
        # A parent's model.train() must not switch the tokenizer to training mode: it is always frozen.
        return super().train(False)

    # --------------------------------------------------------------------------------------- encode/decode
    @abc.abstractmethod
    def _encode_chunk(self, video: torch.Tensor) -> torch.Tensor:
        """[N,3,T,H,W] float (T a valid chunk length) -> normalized latent [N,C,T',H',W']."""

    @abc.abstractmethod
    def _decode_chunk(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalized latent [N,C,T',H',W'] (T' <= latent_chunk_duration) -> video [N,3,T,H,W]."""

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video float [B,3,T,H,W] in [-1,1] -> normalized latent float32 [B,C,T',H/s,W/s]."""
        name = f"{type(self).__name__}.encode"
        if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(f"{name}: expected a video tensor [B,3,T,H,W], got {shape}")
        if not video.is_floating_point():
            raise ValueError(
                f"{name}: expected a float video in [-1,1], got dtype {video.dtype} (uint8 frames: x / 127.5 - 1)"
            )
        s = self.spatial_compression
        if video.shape[-2] % s or video.shape[-1] % s:
            raise ValueError(f"{name}: frame size {video.shape[-2]}x{video.shape[-1]} is not a multiple of {s}")
        self.latent_num_frames(video.shape[2])  # clear error for a frame count that does not fit
        return self._chunked(video, self.pixel_chunk_duration, self.max_enc_batch_size, self._encode_chunk)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalized latent [B,C,T',H',W'] -> float32 video [B,3,T,H'*s,W'*s] in [-1,1]."""
        name = f"{type(self).__name__}.decode"
        if not isinstance(latent, torch.Tensor) or latent.ndim != 5 or latent.shape[1] != self.latent_channels:
            shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise ValueError(f"{name}: expected a latent tensor [B,{self.latent_channels},T',H',W'], got {shape}")
        if not latent.is_floating_point():
            raise ValueError(f"{name}: expected a float latent, got dtype {latent.dtype}")
        return self._chunked(latent, self.latent_chunk_duration, self.max_dec_batch_size, self._decode_chunk)

    @staticmethod
    def _chunked(x: torch.Tensor, chunk: int, max_batch: int, fn) -> torch.Tensor:
        """Apply `fn` to whole `chunk`-frame pieces of x (and to the shorter tail), at most `max_batch` at a time."""
        b, t = x.shape[0], x.shape[2]
        whole = t // chunk
        outputs = []
        if whole:
            # [B,C,(n chunk),H,W] -> [(B n),C,chunk,H,W]: the chunks of every video side by side in the batch.
            pieces = x[:, :, : whole * chunk].unflatten(2, (whole, chunk)).transpose(1, 2).flatten(0, 1)
            y = torch.cat([fn(p).float() for p in pieces.split(max_batch)])
            outputs.append(y.unflatten(0, (b, whole)).transpose(1, 2).flatten(2, 3))
        if t > whole * chunk:
            tail = x[:, :, whole * chunk :]
            outputs.append(torch.cat([fn(p).float() for p in tail.split(max_batch)]))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


def hide_from_state_dict(parent: nn.Module, name: str, tokenizer: nn.Module) -> None:
    """Attach `tokenizer` to `parent` as a plain attribute: reachable as parent.<name>, but in none of parent's
    state_dict(), parameters() or children (so no optimizer, checkpoint or FSDP wrap sees it). The parent must
    move it along itself in `_apply` if it should follow .to()/.cuda() (see DiffusionModel)."""
    object.__setattr__(parent, name, tokenizer)


COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


class StandardizedTokenizer(VideoTokenizer):
    """A VideoTokenizer around an autoencoder whose latents are standardized: latent = (z - latent_mean) / latent_std,
    the statistics per channel and latent frame of a chunk ([1,C,T',1,1]; T' = 1 broadcasts over frames).

    dtype: "auto" runs the autoencoder in bfloat16 on CUDA and float32 on CPU, "float32" / "bfloat16" force one.
    Subclasses implement `_encode_raw` / `_decode_raw` (unstandardized) and call `set_latent_stats` and `freeze`.
    """

    def __init__(self, *, dtype: str = "auto", **sizes: int) -> None:
        super().__init__(**sizes)
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"{type(self).__name__}: dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
        self.dtype_option = dtype

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype_option == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return torch.bfloat16 if self.dtype_option == "bfloat16" else torch.float32

    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.register_buffer("latent_mean", mean, persistent=False)
        self.register_buffer("latent_std", std, persistent=False)

    def _stats(self, t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean[:, :, :t].to(device), self.latent_std[:, :, :t].to(device)

    @abc.abstractmethod
    def _encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        """[N,3,T,H,W] -> the autoencoder's latent z (not standardized)."""

    @abc.abstractmethod
    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """The autoencoder's latent z -> video [N,3,T,H,W]."""

    def _encode_chunk(self, video: torch.Tensor) -> torch.Tensor:
        z = self._encode_raw(video).float()
        mean, std = self._stats(z.shape[2], z.device)
        return (z - mean) / std

    def _decode_chunk(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(latent.shape[2], latent.device)
        return self._decode_raw(latent.float() * std + mean).float()
