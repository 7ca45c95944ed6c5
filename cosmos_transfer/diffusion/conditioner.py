"""The conditioner: turns a training batch into the network's conditioning inputs.

Text embeddings and mask (T5-XXL 512 x 1024 in the real setting, any size here), fps, image size and padding mask
are passed through; the text is dropped (embeddings zeroed, as Cosmos does) with probability `text_dropout_rate`
while training, so that the same network also learns the unconditional prediction used by classifier-free guidance.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

TEXT_EMBEDDINGS_KEY = "t5_text_embeddings"
TEXT_MASK_KEY = "t5_text_mask"
NEGATIVE_TEXT_EMBEDDINGS_KEY = "neg_t5_text_embeddings"
NEGATIVE_TEXT_MASK_KEY = "neg_t5_text_mask"


@dataclass
class Condition:
    """Everything a denoiser call needs besides x and sigma.

    The video2world fields are filled by the diffusion model, not by the conditioner:
    `condition_latent` holds the clean latents of the conditioning frames and `condition_frames` is the
    [B,1,T',1,1] indicator (1 = conditioning frame, kept clean; 0 = frame to generate).
    Subclasses (e.g. the control model's) add their own fields.
    """

    crossattn_emb: torch.Tensor  # [B, L, D]
    crossattn_mask: torch.Tensor | None = None  # [B, L], 1 for real tokens
    fps: torch.Tensor | None = None  # [B]
    image_size: torch.Tensor | None = None  # [B, 4]
    padding_mask: torch.Tensor | None = None  # [B, 1, H, W], 1 = padding
    condition_latent: torch.Tensor | None = None  # [B, C, T', H', W']
    condition_frames: torch.Tensor | None = None  # [B, 1, T', 1, 1]

    @property
    def batch_size(self) -> int:
        return self.crossattn_emb.shape[0]

    def replace(self, **changes) -> "Condition":
        return dataclasses.replace(self, **changes)

    def network_kwargs(self) -> dict[str, torch.Tensor | None]:
        """Keyword arguments of the network's forward (GeneralDIT)."""
        return {
            "crossattn_emb": self.crossattn_emb,
            "crossattn_mask": self.crossattn_mask,
            "fps": self.fps,
            "padding_mask": self.padding_mask,
        }


class VideoConditioner(nn.Module):
    """Batch -> Condition, with classifier-free-guidance dropout of the text while training.

    Args:
        text_dropout_rate: probability that a sample's text embedding is replaced by zeros (training mode only).
        use_fps / use_image_size / use_padding_mask: pass that batch key through (required in the batch when on).
    """

    def __init__(
        self,
        text_dropout_rate: float = 0.2,
        use_fps: bool = True,
        use_image_size: bool = True,
        use_padding_mask: bool = True,
    ):
        super().__init__()
        if not 0.0 <= text_dropout_rate <= 1.0:
            raise ValueError(f"VideoConditioner: text_dropout_rate must be in [0, 1], got {text_dropout_rate}")
        self.text_dropout_rate = text_dropout_rate
        self.use_fps = use_fps
        self.use_image_size = use_image_size
        self.use_padding_mask = use_padding_mask

    def forward(
        self,
        batch: dict,
        *,
        text_dropout_rate: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Condition:
        """Build the condition of `batch`.

        The text dropout rate is `self.text_dropout_rate` in training mode and 0 in eval mode unless
        `text_dropout_rate` is given. Dropout draws come from `generator` (a CPU generator) or the global RNG.
        """
        embeddings, mask = self._text(batch, TEXT_EMBEDDINGS_KEY, TEXT_MASK_KEY)
        if text_dropout_rate is None:
            text_dropout_rate = self.text_dropout_rate if self.training else 0.0
        if text_dropout_rate > 0:
            keep = self.draw_text_keep(embeddings.shape[0], text_dropout_rate, generator=generator)
            embeddings = embeddings * keep.to(device=embeddings.device, dtype=embeddings.dtype)[:, None, None]
        return Condition(
            crossattn_emb=embeddings,
            crossattn_mask=mask,
            fps=self._optional(batch, "fps", self.use_fps, dtype=torch.float32),
            image_size=self._optional(batch, "image_size", self.use_image_size, dtype=torch.float32),
            padding_mask=self._optional(batch, "padding_mask", self.use_padding_mask, dtype=torch.float32),
        )

    @staticmethod
    def draw_text_keep(batch_size: int, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bernoulli(1 - rate) keep flags [batch_size] (1.0 = keep the text, 0.0 = drop it)."""
        return (torch.rand(batch_size, generator=generator) >= rate).float()

    def condition_and_uncondition(self, batch: dict) -> tuple[Condition, Condition]:
        """(condition, unconditional condition) for classifier-free guidance.

        The unconditional one uses the negative prompt when the batch has `neg_t5_text_embeddings`
        (and optionally `neg_t5_text_mask`), otherwise the zeroed text embedding the network saw in training.
        """
        condition = self.forward(batch, text_dropout_rate=0.0)
        if NEGATIVE_TEXT_EMBEDDINGS_KEY in batch:
            negative, negative_mask = self._text(batch, NEGATIVE_TEXT_EMBEDDINGS_KEY, NEGATIVE_TEXT_MASK_KEY)
            return condition, condition.replace(crossattn_emb=negative, crossattn_mask=negative_mask)
        return condition, condition.replace(crossattn_emb=torch.zeros_like(condition.crossattn_emb))

    @staticmethod
    def _text(batch: dict, embeddings_key: str, mask_key: str) -> tuple[torch.Tensor, torch.Tensor]:
        if embeddings_key not in batch:
            raise KeyError(
                f"VideoConditioner: batch has no '{embeddings_key}' (text embeddings [B, L, D]); "
                f"batch keys: {sorted(batch)}"
            )
        embeddings = batch[embeddings_key]
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 3:
            shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise ValueError(f"VideoConditioner: '{embeddings_key}' must be a tensor [B, L, D], got {shape}")
        embeddings = embeddings.float()
        mask = batch.get(mask_key)
        if mask is None:
            mask = torch.ones(embeddings.shape[:2], device=embeddings.device)
        elif tuple(mask.shape) != tuple(embeddings.shape[:2]):
            raise ValueError(
                f"VideoConditioner: '{mask_key}' must be [B, L] = {tuple(embeddings.shape[:2])}, "
                f"got {tuple(mask.shape)}"
            )
        return embeddings, mask.float()

    @staticmethod
    def _optional(batch: dict, key: str, enabled: bool, dtype: torch.dtype) -> torch.Tensor | None:
        if not enabled:
            return None
        if key not in batch:
            raise KeyError(
                f"VideoConditioner: batch has no '{key}' (disable it with use_{key}=False); batch keys: {sorted(batch)}"
            )
        return torch.as_tensor(batch[key]).to(dtype)
