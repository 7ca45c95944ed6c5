"""One run per job folder (issue 14, item 5): rank 0 holds `<job dir>/job.lock` (fcntl.flock) for the whole run.

Two runs in one job folder overwrote each other's checkpoints, latest_checkpoint.txt and metrics.jsonl, and the
second deleted the first's checkpoint in progress. Now the second exits at once naming the holder; a lock whose holder
died is taken over with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosmos_transfer.trainer.job_lock import LOCK_FILE, JobLock, JobLockedError
from tests.helpers import ROOT, TOY_RUNNER, logged_iterations, run_python, subprocess_env, toy_command


HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from cosmos_transfer.trainer.job_lock import JobLock
JobLock({job!r}).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def hold_in_another_process(job: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), job=str(job))],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    holder = hold_in_another_process(tmp_path / "job")
    try:
        with pytest.raises(JobLockedError) as error:
            JobLock(str(tmp_path / "job")).acquire()
        message = str(error.value)
        assert f"pid {holder.pid}" in message and "host " in message and "started " in message, message
        assert str(tmp_path / "job") in message and "job.name" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_whose_holder_died_is_taken_over_with_a_warning(tmp_path):
    job = tmp_path / "job"
    holder = hold_in_another_process(job)
    holder.send_signal(signal.SIGKILL)  # dies without releasing: the kernel drops the flock, the record stays
    holder.wait()
    assert json.loads((job / LOCK_FILE).read_text())["pid"] == holder.pid
    warnings = []
    lock = JobLock(str(job), warn=warnings.append).acquire()
    assert len(warnings) == 1 and f"pid {holder.pid}" in warnings[0] and "ended without releasing" in warnings[0]
    assert json.loads((job / LOCK_FILE).read_text())["pid"] == os.getpid()  # now ours
    lock.release()
    assert (job / LOCK_FILE).read_text() == ""  # a clean release leaves no record ...
    warnings.clear()
    JobLock(str(job), warn=warnings.append).acquire().release()
    assert warnings == []  # ... so the next run takes it without a warning


def test_without_flock_the_run_goes_on_unguarded_with_a_warning(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    warnings = []
    lock = JobLock(str(tmp_path / "job"), warn=warnings.append).acquire()
    assert not lock.supported and len(warnings) == 1 and "not protected" in warnings[0]


def test_two_concurrent_runs_on_one_job_the_second_exits_at_once(tmp_path):
    job = tmp_path / "job"
    env = subprocess_env()
    # The first run waits after iteration 2 until the test creates <job>/release: it is mid-training, holding the
    # lock, for as long as the second one takes to start and give up.
    options = {"job_dir": str(job), "max_iter": 20, "save_iter": 5, "hold_at": 2}
    first = subprocess.Popen(toy_command(options), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(logged_iterations(job)) < 2:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.05)
        lock_file = job / LOCK_FILE
        holder_pid = json.loads(lock_file.read_text())["pid"] if lock_file.exists() else None
        start = time.monotonic()
        second = subprocess.run(toy_command(options), capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        second_s = time.monotonic() - start
        assert first.poll() is None, "the first run should still be training"
        assert logged_iterations(job) == [1, 2], "the first run should be held after iteration 2"
        (job / "release").touch()
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode != 0
    assert "is in use by another run: host" in second.stderr and f"pid {holder_pid}" in second.stderr, \
        second.stderr[-3000:]
    assert second_s < 60, f"the second run took {second_s:.1f} s to give up"  # start-up of torchrun and torch
    assert "start " not in second.stdout + second.stderr  # it gave up before building anything
    assert first.returncode == 0, err[-3000:]
    assert logged_iterations(job) == list(range(1, 21))  # one metrics line per iteration: nobody else wrote there
    assert (job / "checkpoints" / "latest_checkpoint.txt").read_text().strip() == "iter_000000020"
    assert sorted(os.listdir(job / "checkpoints")) == ["iter_000000010", "iter_000000015", "iter_000000020",
                                                        "latest_checkpoint.txt"]


def test_train_script_exits_with_the_holder_and_leaves_config_yaml_alone(tmp_path):
    env = {**subprocess_env(), "OUTPUT_ROOT": str(tmp_path)}
    job = tmp_path / "cosmos_transfer" / "debug" / "locked"
    job.mkdir(parents=True)
    (job / "config.yaml").write_text("the running job's config\n")
    holder = hold_in_another_process(job)
    try:
        result = run_python([str(ROOT / "scripts" / "train.py"), "--", "job.name=locked", "trainer.max_iter=1"],
                            env=env, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 3, result.stderr[-3000:]
    assert f"pid {holder.pid}" in result.stderr and "in use by another run" in result.stderr
    assert "Traceback" not in result.stderr
    assert (job / "config.yaml").read_text() == "the running job's config\n"


def test_a_refused_run_leaves_the_running_one_s_checkpoint_in_progress_alone(tmp_path):
    # The clean-up of *.partial folders at start happens only under the lock: here another run holds it and is
    # (as far as the second one can tell) writing iter_000000005.partial.
    job = tmp_path / "job"
    in_progress = job / "checkpoints" / "iter_000000005.partial"
    in_progress.mkdir(parents=True)
    (in_progress / "__0_0.distcp").write_bytes(b"being written")
    holder = hold_in_another_process(job)
    try:
        result = run_python([str(TOY_RUNNER), json.dumps({"job_dir": str(job), "max_iter": 2})], timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 3 and "in use by another run" in result.stderr and f"pid {holder.pid}" in result.stderr
    assert (in_progress / "__0_0.distcp").read_bytes() == b"being written"
    assert not (job / "metrics.jsonl").exists()


def test_a_lock_file_that_is_a_symlink_or_a_folder_is_refused_by_name(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    victim = tmp_path / "someone_elses_file"
    victim.write_text("keep me\n")
    (job / LOCK_FILE).symlink_to(victim)  # taking the lock truncates its file: never through a link
    with pytest.raises(OSError) as error:
        JobLock(str(job)).acquire()
    assert str(job / LOCK_FILE) in str(error.value) and "symbolic link" in str(error.value)
    assert victim.read_text() == "keep me\n"
    (job / LOCK_FILE).unlink()
    (job / LOCK_FILE).mkdir()
    with pytest.raises(OSError, match="cannot open the job lock"):
        JobLock(str(job)).acquire()
