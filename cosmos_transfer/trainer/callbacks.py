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

    def on_validation_samples(self, trainer: Any, iteration: int, batch: dict[str, Any]) -> str | None:
        """After the validation loss, with the validation weights (EMA) swapped in and the first validation batch
        (as the loader gave it; the model's entry points move it to the device): generate or write samples here;
        return the path of what was written (for the log line)."""
        return None

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


class SampleVideos(Callback):
    """Validation samples of a video diffusion model: rank 0 writes samples/iter_N.mp4 (generated from the first
    validation batch) and samples/iter_N_grid.gif (first control | generated | real video, side by side).

    The trainer adds one when trainer.validation_samples is true; it relies on the model's `generate_samples(batch,
    num_steps, guidance, seed)` and `decode(latent)` and on the batch's video-model keys (`video`, `fps`,
    `control_input_<key>`).
    """

    def __init__(self, num_steps: int = 35, guidance: float = 0.0) -> None:
        self.num_steps, self.guidance = int(num_steps), float(guidance)

    def on_validation_samples(self, trainer: Any, iteration: int, batch: dict[str, Any]) -> str | None:
        import os

        import torch

        from cosmos_transfer.hints import BATCH_PREFIX
        from cosmos_transfer.video_io import write_gif, write_video

        model = trainer.model
        if not (hasattr(model, "generate_samples") and hasattr(model, "decode")):
            return None
        latent = model.generate_samples(batch, num_steps=self.num_steps, guidance=self.guidance, seed=trainer.seed)
        generated = model.decode(latent)
        if trainer.rank != 0:
            return None
        panels = [k for k in sorted(batch) if k.startswith(BATCH_PREFIX)][:1]
        videos = [batch[k][0] for k in panels]
        videos.append(((generated[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        if "video" in batch:
            videos.append(batch["video"][0])
        num_frames = min(v.shape[1] for v in videos)
        frames = [v[:, :num_frames].permute(1, 2, 3, 0).cpu() for v in videos]  # [T,H,W,3] each
        height = min(f.shape[1] for f in frames)
        grid = torch.cat([f[:, :height] for f in frames], dim=2).numpy()
        fps = float(batch["fps"][0]) if "fps" in batch else 8.0
        folder = os.path.join(trainer.job_dir, "samples")
        os.makedirs(folder, exist_ok=True)
        stem = os.path.join(folder, f"iter_{iteration:09d}")
        write_video(stem + ".mp4", frames[len(panels)].numpy(), fps=fps)
        write_gif(stem + "_grid.gif", grid, fps=fps)
        trainer.logger.add_image("samples/grid_first_frame", grid[0], iteration)
        return stem + ".mp4"
