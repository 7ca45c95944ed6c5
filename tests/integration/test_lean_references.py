"""Lean checkpoints' references (trainer/frozen_base.py) with the toy trainer: the frozen base (the toy's block0,
frozen) is fingerprinted when checkpoint.load_path is read, a reference to anything but a regular file is refused
without opening it, and retention never prunes a checkpoint another job's lean base points to."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import save_file

from tests.helpers import ROOT, check, latest, metrics, run_toy, subprocess_env, toy_command
from tests.trainer_toy import ToyDiffusionModel

LEAN = {"max_iter": 2, "save_iter": 2, "frozen_block0": True}


def ckpt(job: Path, iteration: int) -> Path:
    return job / "checkpoints" / f"iter_{iteration:09d}"


def forge_manifest(folder: Path) -> None:
    from cosmos_transfer.trainer.safe_dcp import write_manifest

    write_manifest(str(folder), [n for n in os.listdir(folder) if n != "manifest.json"])


@pytest.fixture
def base_file(tmp_path) -> Path:
    path = tmp_path / "base.safetensors"
    save_file(ToyDiffusionModel().state_dict(), str(path))
    return path


def finishes_within(seconds: float, call, unblock) -> object:
    """call() in a thread; fails (after `unblock()` frees it) if it does not return within `seconds`."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 (handed to the test)
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        unblock()
        thread.join(10)
        pytest.fail(f"blocked for over {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_reference_to_anything_but_a_regular_file_is_refused_unopened(tmp_path, kind):
    from cosmos_transfer.trainer import frozen_base

    target = tmp_path / "base"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target = Path("/dev/null")  # (a character device; /dev/zero would never end)
    base = frozen_base.FrozenBase(str(target), 10, "00000000", ["net.x"])

    def unblock():
        with open(target, "wb"):  # a writer frees a reader blocked on the FIFO
            pass

    problem = finishes_within(10, lambda: frozen_base.problem(base, "ckpt"), unblock)
    assert problem is not None and str(target) in problem and "not a regular file" in problem, problem
    with pytest.raises(frozen_base.FrozenBaseError, match="not a regular file"):
        finishes_within(10, lambda: frozen_base.fingerprint(str(target)), unblock)


def test_resume_and_export_refuse_a_reference_to_a_fifo(tmp_path, base_file):
    job = tmp_path / "lean"
    check(run_toy({**LEAN, "job_dir": str(job), "load_path": str(base_file)}, nproc=1))
    folder = ckpt(job, 2)
    reference = json.loads((folder / "frozen_base.json").read_text())
    assert reference["keys"] and reference["path"] == str(base_file)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (folder / "frozen_base.json").write_text(json.dumps({**reference, "path": str(fifo)}))
    forge_manifest(folder)
    result = run_toy({**LEAN, "job_dir": str(job), "max_iter": 4}, nproc=1, timeout=60)
    assert result.returncode == 2 and f"{fifo}" in result.stderr and "not a regular file" in result.stderr, \
        result.stderr[-3000:]
    exported = subprocess.run([os.sys.executable, str(ROOT / "scripts/export_checkpoint.py"), str(folder), "--out",
                               str(tmp_path / "out.safetensors")], capture_output=True, text=True, timeout=60,
                              cwd=ROOT, env=subprocess_env())
    assert exported.returncode == 2 and "not a regular file" in exported.stderr, exported.stderr[-3000:]


@pytest.mark.parametrize("nproc", [1, 2])
def test_load_path_that_is_a_fifo_is_refused_unopened(tmp_path, nproc):
    """Under torchrun too: every rank refuses it (none waits for rank 0's fingerprint of the file)."""
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    result = run_toy({**LEAN, "job_dir": str(tmp_path / "job"), "load_path": str(fifo)}, nproc=nproc, timeout=120)
    assert result.returncode in ((2,) if nproc == 1 else (1, 2)), result.stderr[-3000:]
    assert result.stderr.count("not a regular file") == 1, result.stderr[-3000:]


def test_the_base_is_fingerprinted_when_read_not_at_the_first_save(tmp_path, base_file):
    """The base file is rewritten after the run read it and before its first save: the checkpoint records the bytes
    it trained on, so resuming names the change (it used to record the rewritten file as the one read)."""
    original = base_file.read_bytes()
    job = tmp_path / "lean"
    options = {**LEAN, "job_dir": str(job), "load_path": str(base_file), "hold_at": 1}
    run = subprocess.Popen(toy_command(options, nproc=1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=ROOT, env=subprocess_env())
    try:
        deadline = time.time() + 120
        while not [m for m in metrics(job) if m.get("iteration") == 1] and time.time() < deadline:
            time.sleep(0.2)
        assert run.poll() is None, run.communicate()
        save_file(ToyDiffusionModel().state_dict(), str(base_file))  # other random weights: other bytes
        assert base_file.read_bytes() != original
        (job / "release").touch()
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 0, err[-3000:]
    reference = json.loads((ckpt(job, 2) / "frozen_base.json").read_text())
    from cosmos_transfer.trainer.safe_dcp import file_checksum

    assert reference["crc32"] != file_checksum(str(base_file))["crc32"]  # not the rewritten file's
    result = run_toy({**LEAN, "job_dir": str(job), "max_iter": 4, "load_path": str(base_file)}, nproc=1)
    assert result.returncode == 2 and "which has changed since" in result.stderr, result.stderr[-3000:]
    base_file.write_bytes(original)  # the bytes it was trained on: resumes
    check(run_toy({**LEAN, "job_dir": str(job), "max_iter": 4, "load_path": str(base_file)}, nproc=1))


def test_retention_keeps_the_checkpoint_another_jobs_lean_base_points_to(tmp_path):
    job_a, job_b = tmp_path / "a", tmp_path / "b"
    check(run_toy({"job_dir": str(job_a), "max_iter": 2, "save_iter": 2, "keep_last_k": 1}, nproc=1))
    base = ckpt(job_a, 2)
    check(run_toy({**LEAN, "job_dir": str(job_b), "load_path": str(base)}, nproc=1))
    assert json.loads((ckpt(job_b, 2) / "frozen_base.json").read_text())["path"] == str(base)
    result = check(run_toy({"job_dir": str(job_a), "max_iter": 6, "save_iter": 2, "keep_last_k": 1}, nproc=1))
    assert base.is_dir(), "job A's retention pruned the frozen base of job B's lean checkpoints"
    assert latest(job_a) == "iter_000000006" and not ckpt(job_a, 4).exists()  # the rest is pruned as usual
    text = result.stdout + result.stderr
    assert f"keeping {base.name}" in text and str(job_b / "checkpoints") in text
    check(run_toy({**LEAN, "job_dir": str(job_b), "max_iter": 4, "load_path": str(base)}, nproc=1))  # B resumes
    # Once job B is gone, its reference no longer holds the checkpoint.
    import shutil

    shutil.rmtree(job_b)
    check(run_toy({"job_dir": str(job_a), "max_iter": 8, "save_iter": 2, "keep_last_k": 1}, nproc=1))
    assert not base.exists() and latest(job_a) == "iter_000000008"
