"""The dtype names a config, a script's --dtype or a model argument may use, and their torch dtypes.

The names are torch's own (`torch.bfloat16` is named "bfloat16"), so the table is a tuple and torch is imported only
when a name is turned into a dtype: the config schema validates names at start-up without importing torch.
"""

from __future__ import annotations

from typing import Any

DTYPE_NAMES = ("float32", "bfloat16", "float16")


def check_dtype_name(name: Any, what: str = "dtype") -> str:
    """`name` if it is one of DTYPE_NAMES, else a ValueError naming `what` and the choices."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"{what} must be one of {list(DTYPE_NAMES)}, got {name!r}")
    return name


def torch_dtype(name: str, what: str = "dtype") -> "torch.dtype":  # noqa: F821 (torch imported on use)
    """'bfloat16' -> torch.bfloat16 (a ValueError for a name outside DTYPE_NAMES)."""
    import torch

    return getattr(torch, check_dtype_name(name, what))
