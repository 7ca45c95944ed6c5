"""Lean checkpoints of a control post-training (trainer/frozen_base.py) through scripts/train.py under torchrun
(2 ranks, gloo): the frozen base from checkpoint.load_path is referenced, not saved; resuming reads it again and
repeats the uninterrupted losses bitwise; a changed or vanished base is named; export still writes a full model."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from cosmos_transfer.checkpoints import files, transfer1
from cosmos_transfer.config.lazy import instantiate
from cosmos_transfer.networks.dit_ctrl import NEW_BRANCH_KEY_PATTERNS
from cosmos_transfer.trainer import frozen_base, safe_dcp
from cosmos_transfer.trainer.checkpoint import load_model_weights
from tests.helpers import ROOT, subprocess_env
from tests.tiny_datasets import make_tiny_dataset

JOB = os.path.join("cosmos_transfer", "ctrl_tiny", "ctrl_tiny")


def train(tmp_path, output: str, max_iter: int, base: str) -> subprocess.CompletedProcess:
    data = tmp_path / "data"
    overrides = ["experiment=ctrl_tiny", "trainer.logging_iter=1", "trainer.validation_iter=0",
                 "trainer.progress_bar=false", "checkpoint.save_iter=2", f"trainer.max_iter={max_iter}",
                 f"checkpoint.load_path={base}",
                 "checkpoint.allowed_missing_keys=[" + ",".join(NEW_BRANCH_KEY_PATTERNS) + "]"]
    for loader in ("dataloader_train", "dataloader_val"):
        overrides += [f"{loader}.dataset.root={data}", f"{loader}.dataset.text_embedding_folder=t5_xxl",
                      f"{loader}.dataset.num_frames=5"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "scripts" / "train.py"), "--config=configs/train.py", "--", *overrides]
    env = {**subprocess_env(), "OUTPUT_ROOT": str(tmp_path / output)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)


def losses(job) -> dict:
    return {m["iteration"]: (m["loss"], m["grad_norm"])
            for m in map(json.loads, (job / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_lean_checkpoint_resumes_bitwise_from_the_referenced_base(tmp_path):
    from configs.train import make_config
    from cosmos_transfer.config.compose import override

    make_tiny_dataset(tmp_path / "data", stems=("a", "b"), num_frames=5, size=(64, 64), text_dim=384)
    torch.manual_seed(3)
    state = instantiate(override(make_config(), ["experiment=ctrl_tiny"]).model).state_dict()
    base = {k: v for k, v in state.items() if not k.startswith("net_ctrl.")}
    base_file = tmp_path / "base_model.pt"  # NVIDIA's layout
    files.save_weights_file(transfer1.to_official(base).files["base_model.pt"], str(base_file))

    run = train(tmp_path, "a", 4, base_file)  # uninterrupted: checkpoints at 2 and 4
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    job_a = tmp_path / "a" / JOB
    checkpoint = job_a / "checkpoints" / "iter_000000002"
    stored = safe_dcp.read_metadata(str(checkpoint)).state_dict_metadata
    reference = frozen_base.read(str(checkpoint))
    assert reference is not None and reference.path == str(base_file) and reference.keys
    assert reference.size == os.path.getsize(base_file)
    assert not any(f"model.{k}" in stored for k in reference.keys)  # the frozen base is not in the checkpoint
    assert not any(k.startswith("model.net.") and "blocks" in k for k in stored)
    assert any(k.startswith("model.net_ctrl.edge.zero_blocks.") for k in stored)  # the trainable branch is
    assert "frozen_base.json" in json.loads((checkpoint / "manifest.json").read_text())["files"]

    # The same job stopped at iteration 2: resume it from the lean checkpoint to 4.
    job_b = tmp_path / "b" / JOB
    (job_b / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoint, job_b / "checkpoints" / "iter_000000002")
    (job_b / "checkpoints" / "latest_checkpoint.txt").write_text("iter_000000002\n")
    run = train(tmp_path, "b", 4, base_file)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "read the frozen base" in run.stdout
    resumed, uninterrupted = losses(job_b), losses(job_a)
    assert sorted(resumed) == [3, 4] and all(resumed[i] == uninterrupted[i] for i in (3, 4))  # bitwise

    # Export: a full model, the base read from its source (or left out when asked).
    sys.path.insert(0, str(ROOT / "scripts"))
    from export_checkpoint import export

    exported = export(str(checkpoint), str(tmp_path / "full.safetensors"))
    # (the branch's frozen final layer started from the base's: branch_from_base)
    assert all(torch.equal(exported[k], base[k.replace("net_ctrl.edge.", "net.")]) for k in reference.keys)
    lean = export(str(checkpoint), str(tmp_path / "lean.safetensors"), base=False)
    assert not set(reference.keys) & set(lean) and set(lean) | set(reference.keys) == set(exported)
    # checkpoint.load_path / inference's --checkpoint = the lean folder: the base from its source, the rest from it
    model = instantiate(override(make_config(), ["experiment=ctrl_tiny"]).model)
    load_model_weights(model, str(checkpoint))
    assert all(torch.equal(v, exported[k]) for k, v in model.state_dict().items())

    # The base changed since: resuming names it and stops (exit 2, one message), before any step.
    data = bytearray(base_file.read_bytes())
    data[-100] ^= 0xFF
    base_file.write_bytes(bytes(data))
    run = train(tmp_path, "b", 6, base_file)
    assert run.returncode != 0
    assert f"they are read from {base_file}, which has changed since" in run.stdout + run.stderr
    with pytest.raises(frozen_base.FrozenBaseError, match="has changed since"):
        export(str(checkpoint), str(tmp_path / "again.safetensors"))
