"""Callbacks: small objects the trainer calls at fixed points, for behaviour that is not every run's business.

Configured as `trainer.callbacks` (group `callbacks`): a dict name -> LazyDict, each built with plain arguments.
Every hook is optional; a callback defines only those it needs. Hooks run on every rank (check
`trainer.rank == 0` for rank-0-only work) and must not run collectives unless every rank does.

    class PrintLR(Callback):
        def on_step_end(self, trainer, iteration, metrics):
            if trainer.rank == 0 and iteration % 100 == 0:
                print(iteration, metrics["lr"])
"""

from __future__ import annotations

import sys
from typing import Any


class Callback:
    def on_train_start(self, trainer: Any) -> None:
        pass

    def on_step_end(self, trainer: Any, iteration: int, metrics: dict[str, Any]) -> None:
        """After each iteration; `metrics` is the iteration's metrics.jsonl record (averaged over ranks)."""

    def on_validation_end(self, trainer: Any, iteration: int, metrics: dict[str, Any]) -> None:
        pass

    def on_save(self, trainer: Any, iteration: int) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        pass


class LossLine(Callback):
    """Every `every` iterations rank 0 prints one plain line (iteration, loss, mse, lr, step time): readable in
    batch-job logs where a progress bar is not."""

    def __init__(self, every: int = 10) -> None:
        if every < 1:
            raise ValueError(f"LossLine: every must be >= 1, got {every}")
        self.every = every

    def on_step_end(self, trainer: Any, iteration: int, metrics: dict[str, Any]) -> None:
        if trainer.rank != 0 or iteration % self.every:
            return
        parts = [f"iter {iteration}"]
        for key, fmt in (("loss", ".4f"), ("mse", ".4f"), ("lr", ".2e"), ("grad_norm", ".3f"), ("step_time_s", ".3f")):
            if isinstance(metrics.get(key), (int, float)):
                parts.append(f"{key} {metrics[key]:{fmt}}")
        trainer.logger.write(" | ".join(parts))
