"""Preemption under torchrun (issue 14, item 3): SIGTERM sent to torchrun itself, as schedulers and Kubernetes do.

torchrun forwards the signal to the process group of every worker (its ranks and their data-loader workers), waits
its shutdown timeout (`--shutdown_timeout`, 30 s by default), SIGKILLs what is left, then exits 1. Before this was
fixed, data-loader workers died of the signal, the rank failed with "DataLoader worker ... is killed by signal", and
no checkpoint was written; a validation or sampling pass longer than the timeout lost the save too.

Each test launches two ranks with gloo on CPU (tests/trainer_toy_run.py) and signals the torchrun process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.helpers import (ROOT, TORCHRUN_EXIT_AFTER_SIGNAL, check, latest, logged_iterations, losses, run_toy,
                           subprocess_env, toy_command)


def run_to_end(options: dict) -> subprocess.CompletedProcess:
    return check(run_toy(options))


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc): ranks, their data-loader workers, ..."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Signalled:
    """A torchrun run that the test signals once `ready()` is true; its output, exit status and shutdown time.

    everyone=True signals torchrun and every process below it at once, as Slurm does to the processes of a job step.
    """

    def __init__(self, tmp_path: Path, options: dict, ready, shutdown_timeout: int | None = None,
                 everyone: bool = False) -> None:
        self.stdout_path, self.stderr_path = tmp_path / "torchrun.out", tmp_path / "torchrun.err"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            process = subprocess.Popen(toy_command(options, 2, shutdown_timeout), stdout=out, stderr=err, cwd=ROOT,
                                       env=subprocess_env())
        try:
            deadline = time.monotonic() + 120
            while not ready() and process.poll() is None:
                assert time.monotonic() < deadline, "the run never reached the point where the test signals it"
                time.sleep(0.05)
            assert process.poll() is None, f"the run ended before it was signalled: {self.stderr_path.read_text()[-3000:]}"
            signalled_at = time.monotonic()
            others = descendants(process.pid) if everyone else []
            process.send_signal(signal.SIGTERM)  # to torchrun: it forwards the signal to its workers
            for pid in others:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self.returncode = process.wait(timeout=120)
            self.shutdown_s = time.monotonic() - signalled_at
        finally:
            if process.poll() is None:
                process.kill()
        self.stdout, self.stderr = self.stdout_path.read_text(), self.stderr_path.read_text()

    def output(self) -> str:
        return self.stdout[-3000:] + self.stderr[-6000:]


def test_sigterm_to_torchrun_with_dataloader_workers_saves_and_the_rerun_continues(tmp_path):
    common = {"save_iter": 0, "num_workers": 2, "keep_last_k": 3}
    job = tmp_path / "preempted"
    run = Signalled(tmp_path, {**common, "job_dir": str(job), "max_iter": 500, "step_sleep_s": 0.1},
                    ready=lambda: len(logged_iterations(job)) >= 4)
    assert "is killed by signal" not in run.stderr, run.output()  # the data-loader workers survived the signal
    reached = max(logged_iterations(job))
    assert 4 <= reached < 500
    assert latest(job) == f"iter_{reached:09d}", run.output()  # a checkpoint at the step reached
    assert "preempted: saving at iteration" in run.stdout + run.stderr
    assert "forcefully exiting" not in run.stderr, run.output()  # every rank left before torchrun's SIGKILL
    assert run.returncode == TORCHRUN_EXIT_AFTER_SIGNAL, run.output()

    end = reached + 3
    resumed = run_to_end({**common, "job_dir": str(job), "max_iter": end})
    assert f"resumed from {job / 'checkpoints' / f'iter_{reached:09d}'}" in resumed.stdout + resumed.stderr
    assert logged_iterations(job)[-3:] == [reached + 1, reached + 2, reached + 3]  # continues at the next step

    reference = tmp_path / "reference"
    run_to_end({**common, "job_dir": str(reference), "max_iter": end})
    assert losses(job) == losses(reference)  # bitwise: the interruption changed nothing


def test_sigterm_to_every_process_of_the_job_as_slurm_sends_it(tmp_path):
    job = tmp_path / "job"
    options = {"job_dir": str(job), "save_iter": 0, "num_workers": 2, "max_iter": 500, "step_sleep_s": 0.1}
    run = Signalled(tmp_path, options, ready=lambda: len(logged_iterations(job)) >= 4, everyone=True)
    assert "is killed by signal" not in run.stderr, run.output()
    assert latest(job) == f"iter_{max(logged_iterations(job)):09d}", run.output()
    assert "forcefully exiting" not in run.stderr, run.output()


@pytest.mark.parametrize("slow_part", ["validation", "sampling"])
def test_a_long_validation_pass_still_saves_promptly_after_the_signal(tmp_path, slow_part):
    # Validation (or its sampling) would take about 30 s here, twice torchrun's shutdown timeout of 15 s.
    job = tmp_path / "job"
    options = {"job_dir": str(job), "max_iter": 50, "save_iter": 0, "validation_iter": 3, "ema": True}
    if slow_part == "validation":
        options.update(slow_validation_s=0.25, validation_num_batches=30, dataset_length=256)  # 1 s per batch of 4
    else:
        options.update(slow_sampling_s=1.0, sample_num_steps=30)  # 1 s per network call of the sampler
    marker = job / f"{slow_part}_started"
    run = Signalled(tmp_path, options, ready=marker.exists, shutdown_timeout=15)
    assert latest(job) == "iter_000000003", run.output()  # saved at the step reached, before the SIGKILL
    assert "forcefully exiting" not in run.stderr, run.output()  # torchrun never had to SIGKILL a rank
    assert run.shutdown_s < 15, f"took {run.shutdown_s:.1f} s from the signal to the end\n{run.output()}"
    assert f"stop requested: {slow_part}" in run.stdout + run.stderr, run.output()


def test_no_rank_leaves_before_rank_0_has_published_the_last_checkpoint(tmp_path):
    # Under Slurm (`srun --kill-on-bad-exit`) the first node whose torchrun exits (status 1 after a signal) ends the
    # whole step: a rank that left before rank 0 had published the checkpoint could cut its publication short.
    job = tmp_path / "job"
    run_to_end({"job_dir": str(job), "max_iter": 3, "save_iter": 0, "slow_publish_s": 3.0})
    published = (job / "checkpoints" / "latest_checkpoint.txt").stat().st_mtime
    for rank in (0, 1):
        assert float((job / f"left_rank{rank}").read_text()) >= published, f"rank {rank} left before the publication"
