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

# Dense bf16 peak (TFLOP/s) of GPUs we know, by a substring of torch.cuda.get_device_name().
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def device_peak_tflops(device: torch.device, configured: float | None = None) -> float | None:
    """The peak used for MFU: `configured` when given, a known GPU's bf16 peak, else None (MFU is not reported)."""
    if configured:
        return float(configured)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_TFLOPS.items():
            if key in name:
                return peak
    return None


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
        if progress_bar:
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

    def add_image(self, tag: str, image_hwc_uint8: np.ndarray, iteration: int) -> None:
        if self.tensorboard is not None:
            self.tensorboard.add_image(tag, image_hwc_uint8, iteration, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(image_hwc_uint8)}, step=iteration)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.close()
        self.metrics_file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
