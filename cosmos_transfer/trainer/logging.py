"""What a run reports, on rank 0 only: metrics.jsonl, TensorBoard, optional Weights & Biases, a progress bar.

`metrics.jsonl` holds one JSON object per iteration (non-finite numbers are written as null so every line is valid
JSON). On resume, lines past the resumed iteration (written after the checkpoint by the interrupted run) are
dropped, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from typing import Any

import numpy as np
import torch

def peak_memory_gb(device: torch.device) -> float:
    """Peak allocated accelerator memory (CUDA), or this process's peak resident memory (CPU), in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 2**20


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, (torch.Tensor, np.generic)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Rank 0 writes; on other ranks every method does nothing."""

    def __init__(
        self,
        job_dir: str,
        *,
        enabled: bool,
        start_iteration: int,
        max_iteration: int,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        wandb_name: str | None = None,
        wandb_config: dict | None = None,
        progress_bar: bool = True,
        dashboard_every: int = 1,
    ) -> None:
        self.enabled = enabled
        self.dashboard_every = max(1, int(dashboard_every))
        self.tensorboard = None
        self.wandb = None
        self.progress = None
        if not enabled:
            return
        os.makedirs(job_dir, exist_ok=True)
        self.metrics_path = os.path.join(job_dir, "metrics.jsonl")
        self._truncate_after(start_iteration)
        self.metrics_file = open(self.metrics_path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(os.path.join(job_dir, "tensorboard"), purge_step=start_iteration + 1)
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise ImportError(
                    "trainer.wandb_project is set but wandb is not installed: pip install 'cosmos_transfer[wandb]'"
                ) from None
            self.wandb = wandb.init(project=wandb_project, name=wandb_name, config=wandb_config, resume="allow")
        # Only on a terminal: in a log file (a pipe, a batch job) every refresh would be one more copy of the bar,
        # the last one written again on close. Logs get plain lines instead (callbacks=loss_line) and metrics.jsonl.
        if progress_bar and sys.stderr.isatty():
            from tqdm import tqdm

            self.progress = tqdm(
                total=max_iteration, initial=start_iteration, desc="train", unit="it", dynamic_ncols=True,
                file=sys.stderr, mininterval=1.0,
            )

    def _truncate_after(self, iteration: int) -> None:
        if not os.path.isfile(self.metrics_path):
            return
        kept = []
        with open(self.metrics_path, encoding="utf-8") as f:
            for line in f:
                try:
                    if json.loads(line).get("iteration", 0) <= iteration:
                        kept.append(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
        tmp = self.metrics_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, self.metrics_path)

    def log(self, iteration: int, metrics: dict[str, Any], prefix: str = "train") -> None:
        """One JSON line (train metrics) or an event (validation), plus TensorBoard/W&B scalars (training ones every
        `dashboard_every` iterations: trainer.logging_iter)."""
        if not self.enabled:
            return
        clean = {k: _finite_or_none(v) for k, v in metrics.items()}
        if prefix == "train":
            self.metrics_file.write(json.dumps({"iteration": iteration, **clean}) + "\n")
            self.metrics_file.flush()
        else:
            self.metrics_file.write(json.dumps({"iteration": iteration, "event": prefix, **clean}) + "\n")
            self.metrics_file.flush()
        if prefix == "train" and iteration % self.dashboard_every:
            return
        scalars = {f"{prefix}/{k}": v for k, v in clean.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, iteration)
        if self.wandb is not None:
            self.wandb.log(scalars, step=iteration)

    def update_progress(self, iteration: int, loss: float | None) -> None:
        if self.progress is not None:
            if loss is not None:
                self.progress.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.progress.update(iteration - self.progress.n)  # tqdm derives it/s and the ETA from updates

    def write(self, message: str) -> None:
        """Print a line on rank 0 without breaking the progress bar."""
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close_progress(self) -> None:
        """End the progress bar (once: its last state stays on screen) so that lines after it print below it."""
        if self.progress is not None:
            self.progress.close()
            self.progress = None

    def add_image(self, tag: str, image_hwc_uint8: np.ndarray, iteration: int) -> None:
        if self.tensorboard is not None:
            self.tensorboard.add_image(tag, image_hwc_uint8, iteration, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(image_hwc_uint8)}, step=iteration)

    def close(self) -> None:
        if not self.enabled:
            return
        self.close_progress()
        self.metrics_file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


# -- console lines (rank 0): what a run is doing, in words ----------------------------------------------------------


def _count(n: int) -> str:
    return f"{n / 1e9:,.2f} B" if n >= 1e9 else f"{n / 1e6:,.2f} M" if n >= 1e6 else f"{n:,}"


def _clips(loader: Any) -> str:
    if callable(getattr(loader, "describe", None)):  # e.g. the bucket loader: its buckets and the clips of each
        return loader.describe()
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return "?"
    root = getattr(dataset, "root", None)
    try:
        count = f"{len(dataset):,}"
    except TypeError:
        count = "?"
    return f"{count} in {root}" if root else count


def _tokens_per_step(trainer: Any) -> str:
    """Transformer tokens per optimizer step over all ranks, from the dataset's clip shape (no batch is read); under
    context parallelism per data-parallel rank, each sample once; with buckets, each bucket's own shape and batch."""
    loader = trainer.data.loader
    dataset = getattr(loader, "dataset", None)
    num_frames, resolution = getattr(dataset, "num_frames", None), getattr(dataset, "resolution", None)
    batch_size = int(getattr(loader, "batch_size", None) or 1)
    buckets = getattr(dataset, "buckets", None)  # a bucketed dataset's num_frames/resolution are only stand-ins
    shapes = [(b.batch_size, b.num_frames, (b.height, b.width)) for b in buckets] if buckets else \
        [(batch_size, num_frames, resolution)]
    if not all(frames and size for _, frames, size in shapes):
        return "?"
    # The ranks of a context-parallel group share one sample (each holds 1/n of its tokens): counted once.
    cp = getattr(trainer, "cp", None)
    samples = f"{trainer.dp_size} data-parallel rank(s) of {cp.size} sharing each sample" if cp is not None else \
        f"{trainer.world_size} rank(s)"
    per_step = trainer.grad_accum_iter * (trainer.dp_size if cp is not None else trainer.world_size)
    totals = []
    for batch, frames, size in shapes:
        video = torch.empty(batch, 3, int(frames), *map(int, size), device="meta")
        try:
            totals.append(trainer._tokens({"video": video}) * per_step)
        except Exception:  # noqa: BLE001 - a model that cannot tell from a shape: the figure is only informative
            return "?"
    if buckets:
        each = ", ".join(f"{bucket} {total:,}" for bucket, total in zip(buckets, totals))
        span = f"{min(totals):,}" + (f"..{max(totals):,}" if max(totals) > min(totals) else "")
        return f"{span} by bucket ({each}; x {trainer.grad_accum_iter} accumulation x {samples})"
    return (f"{totals[0]:,} ({batch_size} clip(s) of {num_frames} frames at {resolution[0]}x{resolution[1]} per rank, "
            f"x {trainer.grad_accum_iter} accumulation x {samples})")


def startup_summary(trainer: Any) -> str:
    """The lines a run starts with: where it writes, where it starts from, what it trains on and how big it is."""
    model = trainer.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    if trainer.resumed_from:
        start = f"resumed from {trainer.resumed_from} (iteration {trainer.iteration})"
    else:
        load_path = getattr(trainer.config.checkpoint, "load_path", "") or ""
        start = f"new run, weights from {load_path}" if load_path else "new run, initial weights"
    lines = [
        f"job folder   {trainer.job_dir}",
        f"start        {start}; training to iteration {trainer.max_iter:,}",
        f"clips        train {_clips(trainer.data.loader)}"
        + (f"; validation {_clips(trainer.val_loader)}" if trainer.val_loader is not None else ""),
        f"parameters   {_count(trainable)} trainable, {_count(frozen)} frozen",
        f"tokens/step  {_tokens_per_step(trainer)}",
        f"world        {trainer.world_size} rank(s) on {trainer.device.type}",
    ]
    return "\n".join(lines)


def validation_line(iteration: int, metrics: dict[str, float] | None, samples: str | None) -> str:
    losses = ", ".join(f"{k} {v:.4f}" for k, v in (metrics or {}).items() if isinstance(v, (int, float)))
    return (f"validation at iteration {iteration}: {losses or 'no batches'}"
            + (f"; samples {samples} (and {os.path.basename(samples)[:-4]}_grid.gif)" if samples else ""))
