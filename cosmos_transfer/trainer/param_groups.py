"""Optimizer parameter groups with per-name learning-rate multipliers (`trainer.lr_multipliers`).

    'trainer.lr_multipliers={*adaLN_modulation*: 0.05, *t_embedder*: 0.05}'    (a Hydra override: keys unquoted)

Each trainable parameter takes the multiplier of the first pattern (fnmatch, on its name in `model.named_parameters()`)
that matches it, else 1.0. One group per multiplier (key `lr_multiplier`), the 1.0 group first so that
`param_groups[0]["lr"]` is the base rate the logs show. The optimizer is built with its own `lr` for every group, then
`scale_group_rates` multiplies each group's rate, so the optimizer config stays a plain LazyCall or partial.
Schedulers scale every group by the same factor (LambdaLR keeps each group's initial rate).

`one_tensor_kind_per_group` then splits each group into its FSDP2-sharded parameters (DTensors) and the plain ones (a
trainable parameter outside every network, such as the logvar head): torch's foreach and fused optimizer kernels
take a group's tensors in one call and refuse a mix of the two ("got mixed torch.Tensor and DTensor").

Why the multipliers: in a DiT the AdaLN modulation (shift, scale, gate) multiplies every sub-block's output.
Zero-initialized and pushed coherently by Adam, the gates of a small net trained from scratch at a high rate grow
~100x in a hundred steps; the residual stream follows, and its LayerNorms then squash the token embedding and any
ControlNet residual (measured on the CPU demo: BENCHMARKS.md). A lower rate on the modulation keeps the stream in
range.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Mapping, Sequence

import torch
from torch import nn


def lr_param_groups(
    model: nn.Module, params: Sequence[nn.Parameter], multipliers: Mapping[str, float] | None
) -> list[dict[str, Any]] | list[nn.Parameter]:
    """`params` as groups {"params", "lr_multiplier"}; `params` itself when there are no multipliers."""
    if not multipliers:
        return list(params)
    patterns = {str(pattern): float(value) for pattern, value in multipliers.items()}
    for pattern, value in patterns.items():
        if not value > 0:
            raise ValueError(f"trainer.lr_multipliers[{pattern!r}] = {value}: a multiplier must be positive")
    names = {id(p): name for name, p in model.named_parameters()}
    used: set[str] = set()
    by_multiplier: dict[float, list[nn.Parameter]] = {1.0: []}
    for param in params:
        name = names.get(id(param))
        if name is None:
            raise ValueError("lr_param_groups: a trainable parameter is not among model.named_parameters()")
        match = next((pattern for pattern in patterns if fnmatch.fnmatchcase(name, pattern)), None)
        if match is not None:
            used.add(match)
        by_multiplier.setdefault(patterns[match] if match else 1.0, []).append(param)
    unused = [pattern for pattern in patterns if pattern not in used]
    if unused:
        examples = ", ".join(list(names.values())[:3])
        raise ValueError(
            f"trainer.lr_multipliers: pattern(s) {unused} match no trainable parameter; patterns are fnmatch patterns "
            f"on parameter names such as {examples}"
        )
    return [{"params": group, "lr_multiplier": multiplier} for multiplier, group in by_multiplier.items() if group]


def one_tensor_kind_per_group(groups: Sequence[dict[str, Any]] | Sequence[nn.Parameter]) -> list[dict[str, Any]]:
    """`groups` (or a plain parameter list) with each group split into its DTensors and its plain tensors, in that
    order; a group's other keys (lr_multiplier) go with both halves, and a half without parameters is left out."""
    from torch.distributed.tensor import DTensor

    if groups and not isinstance(groups[0], dict):
        groups = [{"params": list(groups)}]
    split = []
    for group in groups:
        for is_dtensor in (True, False):
            params = [p for p in group["params"] if isinstance(p, DTensor) == is_dtensor]
            if params:
                split.append({**group, "params": params})
    return split


def scale_group_rates(optimizer: torch.optim.Optimizer) -> None:
    """Multiply each group's learning rate by its `lr_multiplier` (once, before the scheduler is built)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_multiplier", 1.0)
