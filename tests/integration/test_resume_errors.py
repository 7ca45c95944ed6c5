"""A resume that does not match its checkpoint ends with one paragraph and exit status 2, never a traceback: what
the checkpoint holds, what the config asks, how to proceed. One-process runs of the toy trainer (tests/trainer_toy_run.py,
behind the scripts' error boundary as scripts/train.py), and one under torchrun for "once per run"."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tests.helpers import check, latest, run_toy

BASE = {"max_iter": 2, "save_iter": 2, "keep_last_k": 3}


@pytest.fixture(scope="module")
def base_jobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_errors")
    jobs = {"plain": root / "plain", "lora": root / "lora"}
    check(run_toy({**BASE, "job_dir": str(jobs["plain"])}, nproc=1))
    check(run_toy({**BASE, "job_dir": str(jobs["lora"]), "lora_rank": 2}, nproc=1))
    return jobs


def resume(base_jobs, tmp_path, changes: dict, base: str = "plain", nproc: int = 1) -> tuple[subprocess.CompletedProcess, Path]:
    job = tmp_path / "job"
    shutil.copytree(base_jobs[base], job)
    options = {**BASE, "job_dir": str(job), "max_iter": 4, **({"lora_rank": 2} if base == "lora" else {}), **changes}
    return run_toy(options, nproc=nproc), job


def refused(result: subprocess.CompletedProcess, torchrun: bool = False) -> str:
    """The run ended with exit status 2 and one paragraph (no traceback); returns that message. (Under torchrun the
    launcher adds its own ChildFailedError report, traceback included: no rank's frames may appear.)"""
    assert result.returncode in ((1, 2) if torchrun else (2,)), result.stdout[-2000:] + result.stderr[-4000:]
    assert ("cosmos_transfer/" not in result.stderr) if torchrun else ("Traceback" not in result.stderr), \
        result.stderr[-4000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("train: error: ")]
    assert len(lines) == 1, result.stderr[-4000:]
    return lines[0]


def test_another_learning_rate(base_jobs, tmp_path):
    message = refused(resume(base_jobs, tmp_path, {"lr": 1e-3})[0])
    assert "optimizer.lr is 0.001" in message and "was saved with 0.003" in message and "new job" in message


def test_other_lr_multipliers(base_jobs, tmp_path):
    result, job = resume(base_jobs, tmp_path, {"lr_multipliers": {"net.x_embedder.*": 0.5}})
    message = refused(result)
    assert "trainer.lr_multipliers is {'net.x_embedder.*': 0.5}" in message and "saved with {}" in message
    assert "Set it back" in message and latest(job) == "iter_000000002"


def test_another_model_size(base_jobs, tmp_path):
    message = refused(resume(base_jobs, tmp_path, {"dim": 48})[0])
    assert "another shape" in message and "net.x_embedder.weight: the checkpoint (32, 97), this run (48, 97)" in message
    assert "new job" in message


@pytest.mark.parametrize("change, what", [
    ({"unused_layer": True}, "this run has 2 tensors the checkpoint lacks (net.unused.bias, net.unused.weight)"),
    ({"outside_param": True}, "this run has 2 tensors the checkpoint lacks (logvar.bias, logvar.weight)"),
])
def test_another_model_another_hint_key_or_experiment(base_jobs, tmp_path, change, what):
    message = refused(resume(base_jobs, tmp_path, change)[0])
    assert what in message and "new job" in message


def test_a_checkpoint_with_layers_this_run_lacks(base_jobs, tmp_path):
    """A branch (hint key) the run no longer has would be dropped silently from the next checkpoint: refused."""
    job = tmp_path / "wide"
    check(run_toy({**BASE, "job_dir": str(job), "unused_layer": True}, nproc=1))
    message = refused(run_toy({**BASE, "job_dir": str(job), "max_iter": 4}, nproc=1))
    assert "the checkpoint has 2 tensors this run lacks (net.unused.bias, net.unused.weight)" in message


def test_another_lora_rank(base_jobs, tmp_path):
    message = refused(resume(base_jobs, tmp_path, {"lora_rank": 4}, base="lora")[0])
    assert "lora.rank is 4" in message and "saved with LoRA rank 2" in message and "new job" in message


def test_lora_added_or_removed(base_jobs, tmp_path):
    message = refused(resume(base_jobs, tmp_path, {"lora_rank": 2}, base="plain")[0])
    assert "saved without LoRA" in message
    job = tmp_path / "job2"
    shutil.copytree(base_jobs["lora"], job)
    message = refused(run_toy({**BASE, "job_dir": str(job), "max_iter": 4}, nproc=1))
    assert "saved with LoRA rank 2" in message and "this run has none" in message


def test_latest_checkpoint_outside_its_folder(base_jobs, tmp_path):
    job = tmp_path / "job"
    shutil.copytree(base_jobs["plain"], job)
    (job / "checkpoints" / "latest_checkpoint.txt").write_text("../../elsewhere/iter_000000002\n")
    message = refused(run_toy({**BASE, "job_dir": str(job), "max_iter": 4}, nproc=1))
    assert "../../elsewhere/iter_000000002" in message and "inside" in message


def test_load_path_file_of_another_size(tmp_path):
    """A weights file whose tensors have other shapes (shard_loading.copy_into_shards names the first)."""
    from safetensors.torch import save_file

    from tests.trainer_toy import ToyDiffusionModel

    weights = tmp_path / "small.safetensors"
    save_file(ToyDiffusionModel(dim=32).state_dict(), str(weights))
    message = refused(run_toy({"job_dir": str(tmp_path / "big"), "max_iter": 1, "dim": 48,
                               "load_path": str(weights)}, nproc=1))
    assert f"checkpoint.load_path={weights}" in message and "has shape (64,), the model expects (96,)" in message


def test_refused_once_under_torchrun(base_jobs, tmp_path):
    message = refused(resume(base_jobs, tmp_path, {"lr": 1e-3}, nproc=2)[0], torchrun=True)
    assert "optimizer.lr is 0.001" in message
