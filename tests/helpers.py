"""Helpers shared by the test files: where the checkout is, launching the toy trainer (one process, or two under
torchrun with gloo) and reading what a run wrote, and the torchvision stand-in for the diffusers parity tests.

Imported as `tests.helpers` (the repository root is on sys.path, see tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
REPO_DIR = str(ROOT)
TOY_RUNNER = ROOT / "tests" / "trainer_toy_run.py"
# torchrun re-raises the signal it received (torch.distributed.elastic SignalException) once its workers are gone,
# so it exits 1 even when every rank saved its checkpoint and exited 0: docs/TRAINING.md says so.
TORCHRUN_EXIT_AFTER_SIGNAL = 1


def subprocess_env() -> dict:
    """One thread per process: two ranks on this 2-core machine, and quiet warnings in the captured output."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def toy_command(options: dict, nproc: int = 2, shutdown_timeout: int | None = None) -> list[str]:
    """The toy trainer (tests/trainer_toy_run.py) with `options`: in this process's Python, or under torchrun."""
    if nproc == 1:
        return [sys.executable, str(TOY_RUNNER), json.dumps(options)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    if shutdown_timeout is not None:
        command.append(f"--shutdown_timeout={shutdown_timeout}")
    return command + [str(TOY_RUNNER), json.dumps(options)]


def run_toy(options: dict, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(toy_command(options, nproc), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=subprocess_env())


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """The run succeeded; otherwise the assertion shows the end of its output."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def metrics(job: Path) -> list[dict]:
    """The records of a job's metrics.jsonl (none when the run wrote none yet)."""
    path = Path(job) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(job: Path) -> dict[int, float]:
    """Training loss per iteration."""
    return {m["iteration"]: m["loss"] for m in metrics(job) if "event" not in m}


def logged_iterations(job: Path) -> list[int]:
    return [m["iteration"] for m in metrics(job) if "event" not in m]


def val_losses(job: Path) -> dict[int, float]:
    """Validation runs with the EMA weights: equal values mean the EMA was restored exactly too."""
    return {m["iteration"]: m["loss"] for m in metrics(job) if m.get("event") == "val"}


def latest(job: Path) -> str | None:
    """The checkpoint latest_checkpoint.txt names, or None when there is none."""
    path = Path(job) / "checkpoints" / "latest_checkpoint.txt"
    return path.read_text().strip() if path.exists() else None


class TorchvisionStandIn:
    """diffusers resizes the padding mask with torchvision (no CPU build here): nearest resize, as torchvision does."""

    class InterpolationMode:
        NEAREST = "nearest"

    class functional:
        @staticmethod
        def resize(x, size, interpolation=None):
            return F.interpolate(x, size=list(size), mode="nearest")


def patch_torchvision(monkeypatch, *modules) -> None:
    """Give diffusers modules that import torchvision's transforms the stand-in above."""
    for module in modules:
        monkeypatch.setattr(module, "transforms", TorchvisionStandIn, raising=False)
