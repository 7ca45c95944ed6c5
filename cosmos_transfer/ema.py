"""PowerEMA: the power-function EMA of EDM2 (Karras et al. 2024), as Cosmos trains with it.

At update i (0-based) the shadow weights move by beta_i = (1 - 1/(i+1))^(gamma+1); the result is the average of
all past weights with weights growing like i^gamma. gamma follows from the relative standard deviation `s` of the
averaging profile: s^2 (gamma+2)^2 (gamma+3) = gamma+1 (EDM2 eq. 3), so s=0.1 gives gamma ~ 6.94.

Shadow weights are float32 whatever the training precision. Under FSDP2 every rank keeps only the shadow of its
own shard (the local tensors of the DTensor parameters); `state_dict()` wraps them back into DTensors with the
parameters' placements, so torch.distributed.checkpoint saves and reshards them like the model itself.

Build it after the model is parallelized (the EMA follows the parameters it finds at construction):

    ema = PowerEMA(model, s=0.1)
    ...; optimizer.step(); ema.update(iteration)
    with ema.swapped_in():   # validation / sampling with EMA weights; training weights restored after
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

try:
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # pragma: no cover - very old torch
    DTensor = None
    distribute_tensor = None

# Name parts inserted by torch.compile, activation checkpointing and FSDP1 wrappers; removed from EMA keys so that
# checkpoints do not depend on how the model was wrapped.
_WRAPPER_NAME_PARTS = ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.")


def power_ema_gamma(s: float) -> float:
    """Exponent gamma of the power-function EMA whose profile has relative standard deviation s (EDM2)."""
    if not 0 < s < 0.28:  # s -> 0.2887 as gamma -> -1 (a flat average); beyond that no profile exists
        raise ValueError(f"PowerEMA: s must be in (0, 0.28), got {s}")
    roots = np.roots([1.0, 7.0, 16.0 - s**-2, 12.0 - s**-2])
    return float(roots.real.max())


def power_ema_beta(iteration: int, gamma: float) -> float:
    """Decay of the update at 0-based `iteration`: 0 at the first one (copy), then (1 - 1/(i+1))^(gamma+1)."""
    if iteration < 0:
        raise ValueError(f"PowerEMA: iteration must be >= 0, got {iteration}")
    return (1.0 - 1.0 / (iteration + 1)) ** (gamma + 1.0)


def _clean_name(name: str) -> str:
    for part in _WRAPPER_NAME_PARTS:
        name = name.replace(part, "")
    return name


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor this rank holds: the local shard of a DTensor, the tensor itself otherwise."""
    if DTensor is not None and isinstance(tensor, DTensor):
        return tensor.to_local()
    return tensor


class PowerEMA:
    """Power-function EMA of the trainable parameters of `model` (fp32 shadow, FSDP2-shard aware).

    Args:
        model: the module whose parameters with requires_grad=True are averaged (frozen ones are skipped).
        s: relative standard deviation of the averaging profile (EDM2; Cosmos uses 0.1).
    """

    def __init__(self, model: nn.Module, s: float = 0.1):
        self.model = model
        self.s = s
        self.gamma = power_ema_gamma(s)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, param in self._tracked_parameters():
                self.shadow[name] = _local(param.detach()).float().clone()
        if not self.shadow:
            raise ValueError(f"PowerEMA: {type(model).__name__} has no trainable parameters to average")
        self._swapped_out: dict[str, torch.Tensor] | None = None

    def _tracked_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                yield _clean_name(name), param

    def _pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(shadow, local parameter tensor) for every tracked parameter, checked against the construction."""
        pairs = []
        seen = set()
        for name, param in self._tracked_parameters():
            if name not in self.shadow:
                raise RuntimeError(f"PowerEMA: parameter '{name}' was not trainable when the EMA was built")
            local = _local(param.detach())
            if local.shape != self.shadow[name].shape:
                raise RuntimeError(
                    f"PowerEMA: parameter '{name}' has local shape {tuple(local.shape)} but its EMA has "
                    f"{tuple(self.shadow[name].shape)}; build the EMA after the model is sharded (fully_shard)"
                )
            pairs.append((self.shadow[name], local))
            seen.add(name)
        missing = set(self.shadow) - seen
        if missing:
            raise RuntimeError(f"PowerEMA: parameters no longer trainable or gone: {sorted(missing)[:5]}")
        return pairs

    def beta(self, iteration: int) -> float:
        return power_ema_beta(iteration, self.gamma)

    @torch.no_grad()
    def update(self, iteration: int | None = None) -> float:
        """Fold the current weights in; `iteration` is 0-based (default: the number of updates so far).

        Returns the beta used.
        """
        if self._swapped_out is not None:
            raise RuntimeError("PowerEMA.update: the EMA weights are swapped in; update after leaving swapped_in()")
        iteration = self.num_updates if iteration is None else iteration
        beta = self.beta(iteration)
        pairs = self._pairs()
        shadows = [shadow for shadow, _ in pairs]
        currents = [current.float() for _, current in pairs]
        torch._foreach_lerp_(shadows, currents, 1.0 - beta)
        self.num_updates = iteration + 1
        return beta

    @contextlib.contextmanager
    def swapped_in(self, offload_to_cpu: bool = False) -> Iterator[None]:
        """Within the block the model holds the EMA weights; its training weights are restored on exit."""
        if self._swapped_out is not None:
            raise RuntimeError("PowerEMA.swapped_in: the EMA weights are already swapped in (nested use)")
        saved = {}
        with torch.no_grad():
            for name, param in self._tracked_parameters():
                local = _local(param.detach())
                saved[name] = local.to("cpu", copy=True) if offload_to_cpu else local.clone()
            for shadow, local in self._pairs():
                local.copy_(shadow)
        self._swapped_out = saved
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self._tracked_parameters():
                    _local(param.detach()).copy_(saved[name])
            self._swapped_out = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat dict of tensors: `num_updates` and `shadow.<parameter name>` (DTensors for sharded parameters)."""
        state: dict[str, torch.Tensor] = {"num_updates": torch.tensor(self.num_updates, dtype=torch.int64)}
        for name, param in self._tracked_parameters():
            shadow = self.shadow[name]
            if DTensor is not None and isinstance(param, DTensor):
                shadow = DTensor.from_local(shadow, param.device_mesh, param.placements, run_check=False,
                                            shape=param.shape, stride=param.stride())
            state[f"shadow.{name}"] = shadow
        return state

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a state_dict() (DTensors, or full tensors that are sharded here like the parameters)."""
        expected = {f"shadow.{name}" for name in self.shadow} | {"num_updates"}
        missing, unexpected = expected - set(state_dict), set(state_dict) - expected
        if missing or unexpected:
            raise KeyError(
                f"PowerEMA.load_state_dict: missing keys {sorted(missing)[:5]}, unexpected keys {sorted(unexpected)[:5]}"
            )
        params = dict(self._tracked_parameters())
        for name, shadow in self.shadow.items():
            value = state_dict[f"shadow.{name}"]
            param = params[name]
            if DTensor is not None and isinstance(value, DTensor):
                value = value.to_local()
            elif DTensor is not None and isinstance(param, DTensor):
                value = distribute_tensor(value.to(param.device), param.device_mesh, param.placements).to_local()
            if value.shape != shadow.shape:
                raise ValueError(
                    f"PowerEMA.load_state_dict: '{name}' has shape {tuple(value.shape)}, expected {tuple(shadow.shape)}"
                )
            shadow.copy_(value)
        self.num_updates = int(state_dict["num_updates"])
