"""Learning-rate schedules: Cosmos' linear warm-up ("lambdalinear") and a constant one.

Both return a `torch.optim.lr_scheduler.LambdaLR` whose multiplier is a small picklable object, so the scheduler's
`state_dict()` is plain data (step counters and base learning rates) that a checkpoint can hold.

    scheduler = lambda_linear(optimizer, warm_up_steps=[2500], f_start=[1e-6], f_max=[1.0], f_min=[1.0])
    scheduler.step()   # once per optimizer step

The multiplier at step n, inside cycle c (cycles follow each other, lengths `cycle_lengths`), with n counted from the
cycle's start: warm-up from f_start to f_max over `warm_up_steps[c]` steps, then a straight line from f_max (at the
cycle's start) towards f_min (at its end). With the defaults f_max = f_min = 1 that is warm-up, then constant.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR


def _as_list(value, name: str) -> list:
    if isinstance(value, (int, float)):
        return [value]
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"lambda_linear: {name} must be a number or a list of numbers, got {value!r}") from None


class LambdaLinearMultiplier:
    """The lr multiplier of Cosmos' LambdaLinearScheduler, as a function of the optimizer step."""

    def __init__(
        self,
        warm_up_steps: Sequence[int],
        f_start: Sequence[float],
        f_max: Sequence[float],
        f_min: Sequence[float],
        cycle_lengths: Sequence[int],
    ) -> None:
        lists = dict(warm_up_steps=warm_up_steps, f_start=f_start, f_max=f_max, f_min=f_min, cycle_lengths=cycle_lengths)
        lists = {name: _as_list(value, name) for name, value in lists.items()}
        lengths = {name: len(value) for name, value in lists.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"lambda_linear: every list needs one entry per cycle, got lengths {lengths}")
        if any(n < 0 for n in lists["warm_up_steps"]) or any(n <= 0 for n in lists["cycle_lengths"]):
            raise ValueError(
                f"lambda_linear: warm_up_steps must be >= 0 and cycle_lengths > 0, got {lists['warm_up_steps']} "
                f"and {lists['cycle_lengths']}"
            )
        self.warm_up_steps = [int(n) for n in lists["warm_up_steps"]]
        self.f_start = [float(f) for f in lists["f_start"]]
        self.f_max = [float(f) for f in lists["f_max"]]
        self.f_min = [float(f) for f in lists["f_min"]]
        self.cycle_lengths = [int(n) for n in lists["cycle_lengths"]]

    def __call__(self, step: int) -> float:
        cycle, start = 0, 0
        # The last cycle extends forever: past the end of all cycles the schedule stays in the last one.
        while cycle < len(self.cycle_lengths) - 1 and step >= start + self.cycle_lengths[cycle]:
            start += self.cycle_lengths[cycle]
            cycle += 1
        n = step - start
        warm_up = self.warm_up_steps[cycle]
        if n < warm_up:
            return self.f_start[cycle] + (self.f_max[cycle] - self.f_start[cycle]) * n / warm_up
        length = self.cycle_lengths[cycle]
        progress = min(n, length) / length
        return self.f_max[cycle] + (self.f_min[cycle] - self.f_max[cycle]) * progress


def lambda_linear(
    optimizer: torch.optim.Optimizer,
    warm_up_steps: Sequence[int] | int = (2500,),
    f_start: Sequence[float] | float = (1.0e-6,),
    f_max: Sequence[float] | float = (1.0,),
    f_min: Sequence[float] | float = (1.0,),
    cycle_lengths: Sequence[int] | int = (10_000_000_000_000,),
) -> LambdaLR:
    """Cosmos' linear warm-up schedule (config option `lambdalinear`); multiplies each group's configured lr."""
    return LambdaLR(optimizer, LambdaLinearMultiplier(warm_up_steps, f_start, f_max, f_min, cycle_lengths))


class ConstantMultiplier:
    def __call__(self, step: int) -> float:
        return 1.0


def constant(optimizer: torch.optim.Optimizer) -> LambdaLR:
    """The configured learning rate at every step (config option `constant`)."""
    return LambdaLR(optimizer, ConstantMultiplier())
