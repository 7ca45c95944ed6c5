"""Checkpoints that cannot run code, that say when they are damaged, and the smaller failure cases of resuming.

Hostile files are built the way an attacker would: a `.metadata` (or a non-tensor item of a shard) whose pickle
calls os.system to create a marker file; where the checkpoint has a manifest, the attacker rewrites it to match.
Each entry point that reads a training checkpoint is tried: resuming a job, checkpoint.load_path=<folder>,
scripts/export_checkpoint.py and scripts/inference.py --checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from tests.helpers import ROOT, check, latest, losses, run_python
from tests.helpers import run_toy as _run_toy

# One process, checkpoints at 2 and 4 (both kept).
BASE = {"max_iter": 4, "save_iter": 2, "keep_last_k": 3}


class RunsShell:
    """Pickles to a call of os.system(command): what a hostile checkpoint file contains."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def hostile_pickle(marker: Path) -> bytes:
    return pickle.dumps(RunsShell(f"touch {marker}"))


def forge_manifest(folder: Path) -> None:
    """What an attacker who replaced a file does next: make the checkpoint's manifest agree with it."""
    if (folder / "manifest.json").exists():
        from cosmos_transfer.trainer.safe_dcp import write_manifest

        write_manifest(str(folder), [n for n in os.listdir(folder) if n != "manifest.json"])


def plant_hostile_metadata(folder: Path, marker: Path) -> None:
    (folder / ".metadata").write_bytes(hostile_pickle(marker))
    forge_manifest(folder)


def run_toy(options: dict, nproc: int = 1) -> subprocess.CompletedProcess:
    return _run_toy(options, nproc)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def export(source: Path, out: Path) -> subprocess.CompletedProcess:
    return run_python([str(ROOT / "scripts/export_checkpoint.py"), str(source), "--out", str(out)], timeout=120)


@pytest.fixture(scope="module")
def base_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    job = root / "base"
    check(run_toy({**BASE, "job_dir": str(job)}))
    return job


@pytest.fixture
def job(base_job, tmp_path):
    """A fresh copy of the base job (checkpoints iter 2 and 4, latest 4) for one test to damage."""
    copy = tmp_path / "job"
    shutil.copytree(base_job, copy)
    return copy


def ckpt(job: Path, iteration: int) -> Path:
    return job / "checkpoints" / f"iter_{iteration:09d}"


# ----------------------------------------------------------------------------------------------------------------------
# 1. Reading a checkpoint never runs code


def test_the_hostile_metadata_does_run_code_through_plain_dcp(tmp_path):
    """The control experiment: the file built here is a working attack on DCP's own reader."""
    folder = tmp_path / "ckpt"
    dcp.save({"w": torch.ones(2)}, checkpoint_id=str(folder), no_dist=True)
    marker = tmp_path / "pwned"
    (folder / ".metadata").write_bytes(hostile_pickle(marker))
    try:
        dcp.FileSystemReader(str(folder)).read_metadata()
    except Exception:
        pass  # os.system returned an int, not a Metadata: DCP fails only after running the command
    assert marker.exists()


def test_safe_reader_refuses_hostile_metadata_and_names_the_file(tmp_path):
    from cosmos_transfer.trainer.safe_dcp import UnsafeCheckpointError, read_metadata

    folder = tmp_path / "ckpt"
    dcp.save({"w": torch.ones(2)}, checkpoint_id=str(folder), no_dist=True)
    marker = tmp_path / "pwned"
    (folder / ".metadata").write_bytes(hostile_pickle(marker))
    with pytest.raises(UnsafeCheckpointError, match=r"\.metadata.*posix\.system|\.metadata.*os\.system"):
        read_metadata(str(folder))
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match=str(folder / ".metadata")):
        read_metadata(str(folder))


def test_safe_reader_reads_real_metadata_exactly(base_job):
    from cosmos_transfer.trainer.safe_dcp import read_metadata

    folder = ckpt(base_job, 4)
    with open(folder / ".metadata", "rb") as file:
        expected = pickle.load(file)  # our own file, written by the test run above
    got = read_metadata(str(folder))
    assert got.state_dict_metadata == expected.state_dict_metadata
    assert got.storage_data == expected.storage_data and got.planner_data == expected.planner_data


def test_non_tensor_items_are_loaded_weights_only(tmp_path):
    from cosmos_transfer.trainer.safe_dcp import UnsafeCheckpointError, load

    marker = tmp_path / "pwned"
    folder = tmp_path / "ckpt"
    dcp.save({"w": torch.ones(2), "extra": RunsShell(f"touch {marker}")}, checkpoint_id=str(folder), no_dist=True)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match="extra"):
        load({"w": torch.zeros(2), "extra": None}, str(folder), no_dist=True)
    assert not marker.exists()
    # ... which plain DCP would have run:
    try:
        dcp.load({"w": torch.zeros(2), "extra": None}, checkpoint_id=str(folder), no_dist=True)
    except BaseException:
        pass
    assert marker.exists()
    # plain values (what an optimizer's param_groups hold) still load
    good = tmp_path / "good"
    dcp.save({"w": torch.ones(2), "extra": {"lr": 0.1, "betas": (0.9, 0.99), "params": ["a", "b"], "fused": None}},
             checkpoint_id=str(good), no_dist=True)
    state = {"w": torch.zeros(2), "extra": {"lr": 0.0, "betas": (0.0, 0.0), "params": [], "fused": True}}
    load(state, str(good), no_dist=True)
    assert state["extra"] == {"lr": 0.1, "betas": (0.9, 0.99), "params": ["a", "b"], "fused": None}
    assert torch.equal(state["w"], torch.ones(2))


def test_resume_refuses_a_hostile_metadata(job, tmp_path):
    marker = tmp_path / "pwned"
    plant_hostile_metadata(ckpt(job, 4), marker)
    result = run_toy({**BASE, "job_dir": str(job), "max_iter": 6})
    assert result.returncode != 0
    assert not marker.exists()
    assert str(ckpt(job, 4) / ".metadata") in output(result) and "refus" in output(result)
    assert latest(job) == "iter_000000004"


def test_load_path_refuses_a_hostile_metadata(job, tmp_path):
    marker = tmp_path / "pwned"
    plant_hostile_metadata(ckpt(job, 4), marker)
    result = run_toy({"job_dir": str(tmp_path / "finetune"), "max_iter": 1, "load_path": str(ckpt(job, 4))})
    assert result.returncode != 0
    assert not marker.exists()
    assert str(ckpt(job, 4) / ".metadata") in output(result) and "refus" in output(result)


def test_export_refuses_a_hostile_metadata(job, tmp_path):
    marker = tmp_path / "pwned"
    plant_hostile_metadata(ckpt(job, 4), marker)
    result = export(job / "checkpoints", tmp_path / "out.safetensors")
    assert result.returncode == 2, result.stderr
    assert not marker.exists()
    assert str(ckpt(job, 4) / ".metadata") in result.stderr and "refus" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_inference_refuses_a_hostile_metadata(tmp_path, capsys):
    import importlib.util

    from cosmos_transfer.data.demo import make_clip
    from cosmos_transfer.data.text_embeddings import save_text_embedding
    from cosmos_transfer.video_io import write_video

    spec = importlib.util.spec_from_file_location("inference_script", ROOT / "scripts" / "inference.py")
    inference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inference)
    frames, caption = make_clip(1, 64, 9)
    write_video(str(tmp_path / "input.mp4"), frames, fps=16)
    save_text_embedding(tmp_path / "prompt.safetensors", torch.randn(4, 384), encoder="all-MiniLM-L6-v2",
                        max_length=40, caption=caption)
    (tmp_path / "spec.json").write_text(json.dumps({"prompt_embedding": str(tmp_path / "prompt.safetensors"),
                                                    "input_video_path": str(tmp_path / "input.mp4"), "edge": {}}))
    folder = tmp_path / "job" / "checkpoints" / "iter_000000010"
    dcp.save({"model": {"w": torch.ones(2)}}, checkpoint_id=str(folder), no_dist=True)
    (folder.parent / "latest_checkpoint.txt").write_text("iter_000000010\n")
    marker = tmp_path / "pwned"
    plant_hostile_metadata(folder, marker)
    code = inference.main(["--experiment", "demo_edge_tiny", "--spec", str(tmp_path / "spec.json"), "--out",
                           str(tmp_path / "out.mp4"), "--num_steps", "1", "--max_frames", "9",
                           "--checkpoint", str(tmp_path / "job")])
    error = capsys.readouterr().err
    assert code == 2, error
    assert not marker.exists()
    assert str(folder / ".metadata") in error and "refus" in error


def test_no_unsafe_loading_left_in_the_code():
    offenders = []
    for folder in ("cosmos_transfer", "scripts", "configs", "experiments", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for needle in ("weights_only=False", "pickle.load(", "pickle.loads("):
                if needle in text:
                    offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []


# ----------------------------------------------------------------------------------------------------------------------
# 2. Integrity: a manifest written before publishing, checked when reading


def flip_byte(path: Path, offset: int = -200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_every_published_checkpoint_has_a_manifest_of_all_its_files(base_job):
    from cosmos_transfer.trainer.safe_dcp import file_checksum

    for iteration in (2, 4):
        folder = ckpt(base_job, iteration)
        manifest = json.loads((folder / "manifest.json").read_text())
        names = sorted(n for n in os.listdir(folder) if n != "manifest.json")
        assert sorted(manifest["files"]) == names
        assert ".metadata" in names and "trainer_state_rank0.json" in names
        for name in names:
            assert manifest["files"][name] == file_checksum(str(folder / name))


def test_two_ranks_and_async_saves_write_complete_manifests_and_fall_back_together(tmp_path):
    job = tmp_path / "job"
    check(run_toy({**BASE, "job_dir": str(job), "async_save": True}, nproc=2))
    for iteration in (2, 4):
        folder = ckpt(job, iteration)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert sorted(manifest["files"]) == sorted(n for n in os.listdir(folder) if n != "manifest.json")
        assert {"trainer_state_rank1.json", "__1_0.distcp", "__0_0.distcp"} <= set(manifest["files"])
    # Both ranks agree on the damage rank 1's share of the check finds, and fall back together.
    flip_byte(ckpt(job, 4) / "__1_0.distcp")
    result = check(run_toy({**BASE, "job_dir": str(job), "max_iter": 6}, nproc=2))
    assert "__1_0.distcp has CRC-32" in output(result)
    assert f"resuming from the newest intact checkpoint {ckpt(job, 2)}" in output(result)
    assert latest(job) == "iter_000000006"


def test_resume_falls_back_from_a_flipped_byte_to_the_newest_intact_checkpoint(job, base_job):
    shard = ckpt(job, 4) / "__0_0.distcp"
    flip_byte(shard)
    result = check(run_toy({**BASE, "job_dir": str(job), "max_iter": 6}))
    text = output(result)
    assert "__0_0.distcp" in text and "CRC-32" in text
    assert f"resuming from the newest intact checkpoint {ckpt(job, 2)}" in text
    assert (job / "checkpoints" / "iter_000000004.damaged").is_dir()  # kept for inspection, out of the way
    assert latest(job) == "iter_000000006"
    reference = losses(base_job)
    assert {i: losses(job)[i] for i in (3, 4)} == {i: reference[i] for i in (3, 4)}  # redone from iteration 2


def test_resume_falls_back_from_a_truncated_shard(job):
    truncate(ckpt(job, 4) / "__0_0.distcp", 1000)
    result = check(run_toy({**BASE, "job_dir": str(job), "max_iter": 6}))
    assert "__0_0.distcp has 1000 bytes" in output(result) and "truncated" in output(result)
    assert f"resuming from the newest intact checkpoint {ckpt(job, 2)}" in output(result)


def test_resume_says_so_when_no_checkpoint_is_intact(job):
    flip_byte(ckpt(job, 4) / "__0_0.distcp")
    (ckpt(job, 2) / "trainer_state_rank0.json").unlink()
    result = run_toy({**BASE, "job_dir": str(job), "max_iter": 6})
    assert result.returncode != 0
    text = output(result)
    assert "no intact checkpoint" in text and "trainer_state_rank0.json is missing" in text
    assert latest(job) == "iter_000000004"


def test_a_truncated_shard_without_manifest_is_named_damaged_not_a_config_change(job, tmp_path):
    """Checkpoints written before manifests existed: the structural check still names a truncated file."""
    for iteration in (2, 4):
        make_pre_manifest(ckpt(job, iteration))
    truncate(ckpt(job, 4) / "__0_0.distcp", 1000)
    shutil.rmtree(ckpt(job, 2))
    result = run_toy({**BASE, "job_dir": str(job), "max_iter": 6})
    assert result.returncode != 0
    text = output(result)
    assert "__0_0.distcp has 1000 bytes" in text and "truncated" in text
    assert "the experiment or an override changed" not in text


def test_export_and_load_path_name_a_damaged_file(job, tmp_path):
    flip_byte(ckpt(job, 4) / "__0_0.distcp")
    result = export(ckpt(job, 4), tmp_path / "out.safetensors")
    assert result.returncode == 2 and "__0_0.distcp has CRC-32" in result.stderr, result.stderr[-2000:]
    result = run_toy({"job_dir": str(tmp_path / "finetune"), "max_iter": 1, "load_path": str(ckpt(job, 4))})
    assert result.returncode != 0 and "__0_0.distcp has CRC-32" in output(result)


def test_missing_or_truncated_trainer_state_is_named(job):
    for iteration in (2, 4):
        make_pre_manifest(ckpt(job, iteration))  # an older checkpoint: nothing to compare with
    shutil.rmtree(ckpt(job, 2))
    state = ckpt(job, 4) / "trainer_state_rank0.json"
    truncate(state, 100)
    result = run_toy({**BASE, "job_dir": str(job), "max_iter": 6})
    assert result.returncode != 0
    assert f"{state} is damaged" in output(result) and "not valid JSON" in output(result)
    state.unlink()
    result = run_toy({**BASE, "job_dir": str(job), "max_iter": 6})
    assert result.returncode != 0
    assert f"checkpoint {ckpt(job, 4)} is damaged: trainer_state_rank0.json is missing" in output(result)
    assert "FileNotFoundError" not in result.stderr and "JSONDecodeError" not in result.stderr


# ----------------------------------------------------------------------------------------------------------------------
# 4. The NaN stop keeps the last good checkpoint


def test_nan_stop_never_publishes_the_diverged_state_and_the_rerun_starts_from_the_last_good(tmp_path):
    job = tmp_path / "nan"
    # Good steps 1-4, non-finite from step 5: the regular save at 6 falls inside the streak, the stop comes at 7.
    options = {"job_dir": str(job), "max_iter": 20, "save_iter": 2, "keep_last_k": 1, "nan_after_steps": 4,
               "max_nan_steps": 3}
    first = run_toy(options)
    assert first.returncode != 0
    assert "3 consecutive iterations had a NaN/Inf loss" in first.stderr
    assert latest(job) == "iter_000000004"
    assert sorted(n for n in os.listdir(job / "checkpoints") if n.startswith("iter_")) == ["iter_000000004"]
    assert f"the last good checkpoint {ckpt(job, 4)}" in output(first)
    # The rerun (the toy model's NaNs start 4 steps after each start) resumes at 4, trains 5-8, stops at 11.
    second = run_toy(options)
    assert second.returncode != 0
    text = output(second)
    assert f"resuming from the last good checkpoint {ckpt(job, 4)}" in text
    assert "stopped at iteration 7" in text
    assert latest(job) == "iter_000000008"
    assert os.listdir(job / "checkpoints").count("iter_000000008") == 1
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_step"] for r in rows if "event" not in r][4:8] == [False] * 4  # 5-8 trained again


# ----------------------------------------------------------------------------------------------------------------------
# 7. Smaller cases


def test_resume_with_another_learning_rate_is_refused_naming_both(job):
    result = run_toy({**BASE, "job_dir": str(job), "max_iter": 6, "lr": 1e-3})
    assert result.returncode != 0
    text = output(result)
    assert "optimizer.lr is 0.001" in text and "was saved with 0.003" in text
    assert latest(job) == "iter_000000004"


def test_latest_file_cannot_name_a_checkpoint_outside_the_folder(job, tmp_path):
    other = tmp_path / "otherjob"
    shutil.copytree(job, other)
    (job / "checkpoints" / "latest_checkpoint.txt").write_text("../../otherjob/checkpoints/iter_000000004\n")
    result = run_toy({**BASE, "job_dir": str(job), "max_iter": 6})
    assert result.returncode != 0
    assert "../../otherjob/checkpoints/iter_000000004" in output(result)
    assert "inside" in output(result)
    result = export(job / "checkpoints", tmp_path / "x.safetensors")
    assert result.returncode == 2 and "inside" in result.stderr
    from cosmos_transfer.inference.loading import resolve_checkpoint  # scripts/inference.py --checkpoint <job>

    with pytest.raises(ValueError, match="not a checkpoint folder inside"):
        resolve_checkpoint(str(job))


DISK_FULL = """
import errno, json, os, sys
sys.path.insert(0, "tests")
from torch.distributed.checkpoint import FileSystemWriter
original = FileSystemWriter.write_data
def full(self, plan, planner):
    if "iter_000000006" in str(self.path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(str(self.path), "__0_0.distcp"))
    return original(self, plan, planner)
FileSystemWriter.write_data = full
import trainer_toy_run
sys.argv = ["trainer_toy_run.py", sys.argv[1]]
trainer_toy_run.main()
"""


@pytest.mark.parametrize("async_save", [False, True])
def test_a_full_disk_during_a_save_is_named_with_the_path(job, async_save):
    options = {**BASE, "job_dir": str(job), "max_iter": 6, "async_save": async_save}
    result = run_python(["-c", DISK_FULL, json.dumps(options)])
    assert result.returncode != 0
    text = output(result)
    assert f"cannot write checkpoint {ckpt(job, 6)}.partial" in text
    assert "No space left on device" in text and "disk" in text
    assert latest(job) == "iter_000000004"


def test_metadata_that_changes_an_allowed_class_is_refused(tmp_path):
    """BUILD with slot state on a class object would set class attributes (e.g. Metadata.__eq__): refused."""
    from cosmos_transfer.trainer.safe_dcp import UnsafeCheckpointError, read_metadata

    folder = tmp_path / "ckpt"
    dcp.save({"w": torch.ones(2)}, checkpoint_id=str(folder), no_dist=True)
    # GLOBAL Metadata; (None, {"__doc__": "changed"}); BUILD; STOP
    payload = (b"\x80\x04" + b"c" + b"torch.distributed.checkpoint.metadata\nMetadata\n"
               + b"N}\x8c\x07__doc__\x8c\x07changed" + b"s\x86b.")
    (folder / ".metadata").write_bytes(payload)
    from torch.distributed.checkpoint.metadata import Metadata

    before = Metadata.__doc__
    try:  # the control: plain pickle changes the class
        pickle.loads(payload)
        assert Metadata.__doc__ == "changed"
    finally:
        Metadata.__doc__ = before
    with pytest.raises(UnsafeCheckpointError, match="change the class Metadata"):
        read_metadata(str(folder))
    assert Metadata.__doc__ == before


def test_a_manifest_naming_files_outside_the_checkpoint_is_refused(tmp_path):
    from cosmos_transfer.trainer.safe_dcp import UnsafeCheckpointError, verify_checkpoint

    folder = tmp_path / "ckpt"
    dcp.save({"w": torch.ones(2)}, checkpoint_id=str(folder), no_dist=True)
    (folder / "manifest.json").write_text(json.dumps({"files": {"/dev/zero": {"size": 1, "crc32": "0"}}}))
    with pytest.raises(UnsafeCheckpointError, match="/dev/zero"):
        verify_checkpoint(str(folder))  # (reading /dev/zero would never end)


def test_a_manifest_that_lists_nothing_does_not_hide_a_truncated_shard(tmp_path):
    from cosmos_transfer.trainer.safe_dcp import DamagedCheckpointError, load, verify_checkpoint

    folder = tmp_path / "ckpt"
    dcp.save({"w": torch.ones(1000)}, checkpoint_id=str(folder), no_dist=True)
    (folder / "manifest.json").write_text(json.dumps({"files": {}}))
    truncate(folder / "__0_0.distcp", 100)
    with pytest.raises(DamagedCheckpointError, match="manifest.json has no entry for .metadata.*no entry for __0_0"):
        verify_checkpoint(str(folder))  # a manifest whose entries were removed is damage
    with pytest.raises(DamagedCheckpointError, match="__0_0.distcp has 100 bytes"):
        load({"w": torch.zeros(1000)}, str(folder), no_dist=True)


@pytest.mark.parametrize("where", ["start", "middle"])
def test_damaged_bytes_without_a_manifest_are_named_damaged(job, where):
    """An older checkpoint (no manifest) whose shard is overwritten in place: same size, unreadable bytes."""
    for iteration in (2, 4):
        make_pre_manifest(ckpt(job, iteration))
    shutil.rmtree(ckpt(job, 2))
    shard = ckpt(job, 4) / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    start = 0 if where == "start" else len(data) // 2
    data[start:start + 4096] = bytes(4096)
    shard.write_bytes(bytes(data))
    result = run_toy({**BASE, "job_dir": str(job), "max_iter": 6})
    assert result.returncode != 0
    text = output(result)
    assert f"checkpoint {ckpt(job, 4)}" in text and "is damaged" in text and "__0_0.distcp" in text
    assert "the experiment or an override changed" not in text and "could run code" not in text


def test_a_checkpoint_an_older_version_saved_inside_a_nan_streak_is_passed_over(job):
    """The old NaN stop published its diverged state: resuming skips such a checkpoint for the last good one."""
    state_file = ckpt(job, 4) / "trainer_state_rank0.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "nan_streak": 3}))
    forge_manifest(ckpt(job, 4))  # as that version wrote it (its manifest agrees)
    result = check(run_toy({**BASE, "job_dir": str(job), "max_iter": 6}))
    text = output(result)
    assert f"checkpoint {ckpt(job, 4)} was saved after 3 non-finite steps" in text
    assert f"resuming from the newest intact checkpoint {ckpt(job, 2)}" in text
    assert latest(job) == "iter_000000006"


# A disk that fills up in the middle of a shard, as a real one does: the write that crosses the limit stores what fits
# and fails with ENOSPC, inside torch.save's zip writer, which then reports only "unexpected pos ..." (its own
# RuntimeError, the OSError kept as its __context__). Measured on a real 8 KiB tmpfs: the same chain.
REAL_DISK_FULL = """
import contextlib, errno, io, json, os, sys
sys.path.insert(0, "tests")
from torch.distributed.checkpoint.filesystem import FileSystem
create_stream = FileSystem.create_stream
limit = int(sys.argv[2])

class FullDisk(io.FileIO):
    def write(self, data):
        room = limit - self.tell()
        if len(data) > room:
            super().write(bytes(data)[:max(room, 0)])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)

@contextlib.contextmanager
def full(self, path, mode):
    if "iter_000000006" in str(path) and str(path).endswith(".distcp"):
        with FullDisk(path, "w") as stream:
            yield stream
    else:
        with create_stream(self, path, mode) as stream:
            yield stream

FileSystem.create_stream = full
import trainer_toy_run
sys.argv = ["trainer_toy_run.py", sys.argv[1]]
sys.exit(trainer_toy_run.run())
"""


@pytest.mark.parametrize("async_save", [False, True])
def test_a_disk_filling_up_inside_torch_save_is_named_not_unexpected_pos(job, async_save):
    shard = ckpt(job, 4) / "__0_0.distcp"
    options = {**BASE, "job_dir": str(job), "max_iter": 6, "async_save": async_save}
    result = run_python(["-c", REAL_DISK_FULL, json.dumps(options), str(shard.stat().st_size // 2)])
    assert result.returncode == 2, output(result)[-3000:]
    text = output(result)
    assert "Traceback" not in result.stderr and "unexpected pos" not in text, text[-3000:]
    assert f"cannot write checkpoint {ckpt(job, 6)}.partial" in text
    assert "No space left on device" in text and f"The disk holding {job / 'checkpoints'} is full" in text
    assert "The previous checkpoint is still the latest" in text
    assert latest(job) == "iter_000000004"


# ----------------------------------------------------------------------------------------------------------------------
# Integrity that cannot be switched off: a checkpoint of this version without its manifest, or with entries removed
# from it, is damaged (as a flipped byte is), not "written by an older version".


def make_pre_manifest(folder: Path) -> None:
    """Turn one of our checkpoints into what a version before manifests wrote: no manifest.json and no mark of this
    version in the DCP metadata (our own file, rewritten here with plain pickle)."""
    from cosmos_transfer.trainer.safe_dcp import MANIFEST_MARK

    (folder / "manifest.json").unlink()
    with open(folder / ".metadata", "rb") as file:
        metadata = pickle.load(file)
    del metadata.state_dict_metadata[MANIFEST_MARK]
    metadata.storage_data = {k: v for k, v in metadata.storage_data.items() if k.fqn != MANIFEST_MARK}
    with open(folder / ".metadata", "wb") as file:
        pickle.dump(metadata, file)


def test_a_deleted_manifest_is_damage_and_resume_falls_back(job, base_job):
    (ckpt(job, 4) / "manifest.json").unlink()
    shard = ckpt(job, 4) / "__0_0.distcp"
    flip_byte(shard, shard.stat().st_size // 2)  # inside the weights: what the manifest would have caught
    result = check(run_toy({**BASE, "job_dir": str(job), "max_iter": 6}))
    text = output(result)
    assert f"checkpoint {ckpt(job, 4)} is damaged: its manifest.json is missing" in text
    assert "older version" not in text
    assert f"resuming from the newest intact checkpoint {ckpt(job, 2)}" in text
    assert (job / "checkpoints" / "iter_000000004.damaged").is_dir()
    reference = losses(base_job)
    assert {i: losses(job)[i] for i in (3, 4)} == {i: reference[i] for i in (3, 4)}  # redone from iteration 2


def change_trainer_state(path: Path) -> None:
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "skipped_steps": 7}))


@pytest.mark.parametrize("removed, tamper", [
    ("__0_0.distcp", lambda path: flip_byte(path, path.stat().st_size // 2)),  # inside the weights: loads silently
    ("trainer_state_rank0.json", change_trainer_state),
    (".metadata", lambda path: None),  # an entry removed is damage by itself
])
def test_a_manifest_with_entries_removed_is_damage(job, removed, tamper):
    folder = ckpt(job, 4)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"][removed]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    tamper(folder / removed)
    result = check(run_toy({**BASE, "job_dir": str(job), "max_iter": 6}))
    text = output(result)
    assert f"checkpoint {folder} is damaged" in text and f"manifest.json has no entry for {removed}" in text, text
    assert f"resuming from the newest intact checkpoint {ckpt(job, 2)}" in text


def test_export_and_load_path_refuse_a_checkpoint_without_its_manifest(job, tmp_path):
    (ckpt(job, 4) / "manifest.json").unlink()
    result = export(ckpt(job, 4), tmp_path / "out.safetensors")
    assert result.returncode == 2 and "manifest.json is missing" in result.stderr, result.stderr[-2000:]
    result = run_toy({"job_dir": str(tmp_path / "finetune"), "max_iter": 1, "load_path": str(ckpt(job, 4))})
    assert result.returncode == 2 and "manifest.json is missing" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_a_checkpoint_that_predates_manifests_still_resumes(job, base_job):
    for iteration in (2, 4):
        make_pre_manifest(ckpt(job, iteration))
    result = check(run_toy({**BASE, "job_dir": str(job), "max_iter": 6}))
    assert f"{ckpt(job, 4)} predates manifests" in output(result)
    assert f"resumed from {ckpt(job, 4)} at iteration 4" in output(result)
