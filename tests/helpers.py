"""Helpers shared by the test files: where the checkout is, launching the toy trainer (one process, or two under
torchrun with gloo) and reading what a run wrote, and the torchvision stand-in for the diffusers parity tests.

Imported as `tests.helpers` (the repository root is on sys.path, see tests/conftest.py)."""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
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
    if nproc == 1:
        return run_python([str(TOY_RUNNER), json.dumps(options)], timeout=timeout)
    return subprocess.run(toy_command(options, nproc), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=subprocess_env())


class _WarmPython:
    """The client of tests/warm_python.py: one server for the test session, started on first use."""

    def __init__(self) -> None:
        self.server: subprocess.Popen | None = None
        self.startup: dict = {}
        self.pending = b""  # what the server wrote after the last reply read

    def start(self) -> None:
        self.server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "warm_python.py")], cwd=ROOT,
                                       env=subprocess_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pending = b""
        self.startup = self.reply(timeout=300)["ready"]
        atexit.register(self.stop)

    def stop(self) -> None:
        """The server ends with its input; waited for, so that its runs' CPU time counts as the session's."""
        if self.server.poll() is None:
            self.server.stdin.close()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()

    def reply(self, timeout: float | None = None) -> dict | None:
        """The server's next reply line, or None after `timeout` seconds (read unbuffered, so that select sees it)."""
        fd = self.server.stdout.fileno()
        while b"\n" not in self.pending:
            if timeout is not None and not select.select([fd], [], [], timeout)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("tests/warm_python.py ended; its output is above")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def can_run(self, env: dict) -> bool:
        from tests.warm_python import STARTUP_VARIABLES

        if self.server is None or self.server.poll() is not None:
            self.start()
        return all(env.get(k) == self.startup[k] for k in STARTUP_VARIABLES)

    def run(self, argv: list[str], env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="warm_python_") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            out.touch(), err.touch()
            request = {"argv": argv, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
            pid = None
            try:
                self.server.stdin.write(json.dumps(request) + "\n")
                self.server.stdin.flush()
                pid = self.reply()["pid"]
                done = self.reply(timeout)
                if done is None:
                    os.kill(pid, signal.SIGKILL)
                    self.reply()
                    raise subprocess.TimeoutExpired(argv, timeout, out.read_text(), err.read_text())
            except BaseException as error:  # interrupted (Ctrl-C) or the server failed: the next run starts a new one
                if not isinstance(error, subprocess.TimeoutExpired):
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                    self.server.kill()
                raise
            return subprocess.CompletedProcess([sys.executable, *argv], done["returncode"], out.read_text(),
                                               err.read_text())


_WARM = _WarmPython()


def run_python(argv: list[str], env: dict | None = None, cwd: Path = ROOT,
               timeout: float = 240) -> subprocess.CompletedProcess:
    """`python *argv` (a script and its arguments, or -c code), output captured as text, as subprocess.run gives it:
    forked from a server that has imported torch and the trainer already (tests/warm_python.py), which saves ~6 s
    a run here. The environment is subprocess_env() unless given; one the server cannot provide starts cold."""
    env = subprocess_env() if env is None else env
    if not _WARM.can_run(env):
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=env)
    return _WARM.run(argv, env, cwd, timeout)


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


def control_batch(frames: int = 4, size: int = 32, text_length: int = 6) -> dict:
    """A fixed random batch of 2 clips for the tiny edge-control experiments (ctrl_tiny): uint8 video and edge
    control, the padding mask, fps, image size, frame count and 384-wide text embeddings."""
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (2, 3, frames, size, size), generator=g, dtype=torch.uint8)
    return {"video": video, "control_input_edge": torch.randint(0, 256, video.shape, generator=g, dtype=torch.uint8),
            "padding_mask": torch.zeros(2, 1, size, size), "fps": torch.full((2,), 10.0),
            "image_size": torch.tensor([[size, size, size, size]] * 2, dtype=torch.float32),
            "num_frames": torch.full((2,), frames), "t5_text_embeddings": torch.randn(2, text_length, 384, generator=g),
            "t5_text_mask": torch.ones(2, text_length)}
