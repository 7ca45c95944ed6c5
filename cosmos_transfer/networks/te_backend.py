"""Optional Transformer Engine kernels for GeneralDIT (attention_backend="te").

Transformer Engine is never imported unless a network asks for it: a failed TE install must not stop anyone from
training on plain PyTorch. With attention_backend="te" the network uses, on CUDA tensors:
  - TE DotProductAttention (fused flash / cuDNN attention) for unmasked attention, "bshd" layout;
  - TE fused RoPE (apply_rotary_pos_emb, fused=True) when the rotary table is shared by the batch.
CPU tensors, masked cross-attention and per-sample RoPE tables fall back to the PyTorch path.
RMSNorm stays PyTorch's fused F.rms_norm on every backend (TE's RMSNorm module would add `_extra_state` entries).
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

_INSTALL_HINT = (
    "attention_backend='te' needs NVIDIA Transformer Engine (pip install transformer_engine[pytorch]), "
    "which is not importable here{reason}. Use attention_backend='torch' (PyTorch SDPA, same weights) instead."
)


def _import_te():
    try:
        return importlib.import_module("transformer_engine.pytorch")
    except Exception as error:  # ImportError, or a broken install raising OSError / RuntimeError at import
        raise ImportError(_INSTALL_HINT.format(reason=f" ({type(error).__name__}: {error})")) from error


def is_available() -> bool:
    """True when transformer_engine.pytorch imports."""
    try:
        _import_te()
    except ImportError:
        return False
    return True


def require() -> None:
    """Raise a clear ImportError when Transformer Engine is absent or broken."""
    _import_te()


def make_dot_product_attention(num_heads: int, head_dim: int) -> Callable[..., torch.Tensor]:
    """TE DotProductAttention for q, k, v [B, L, heads, head_dim] -> [B, L, heads*head_dim], no mask."""
    te = _import_te()
    return te.DotProductAttention(
        num_heads, head_dim, attention_dropout=0.0, qkv_format="bshd", attn_mask_type="no_mask"
    )


def _rope_function() -> Callable[..., torch.Tensor]:
    # Its module moved between TE releases.
    for module_name in (
        "transformer_engine.pytorch.attention.rope",
        "transformer_engine.pytorch.attention",
        "transformer_engine.pytorch.dot_product_attention.rope",
        "transformer_engine.pytorch",
    ):
        try:
            function = getattr(importlib.import_module(module_name), "apply_rotary_pos_emb", None)
        except ImportError:
            continue
        if function is not None:
            return function
    raise ImportError("Transformer Engine is installed but apply_rotary_pos_emb was not found in it")


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Fused RoPE on x [B, L, heads, hd] with GeneralDIT's (cos, signed_sin) [1, L, hd] tables."""
    cos, signed_sin = rope
    half = cos.shape[-1] // 2
    angles = torch.atan2(signed_sin[0, :, half:], cos[0, :, half:])  # both halves hold the same angles
    angles = torch.cat([angles, angles], dim=-1)[:, None, None, :]  # TE takes the angles, [L, 1, 1, hd]
    return _rope_function()(x, angles, tensor_format="bshd", fused=True)
