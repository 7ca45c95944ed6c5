"""The control model with a frozen base through the real trainer: FSDP2 over 2 processes (torchrun, gloo).

The demo test trains the base too; this one covers the post-training setting: a frozen base sharded beside the
trainable branch, and a checkpoint whose optimizer and EMA state hold nothing of the base.
"""

import glob
import json
import os
import subprocess
import sys

import torch.distributed.checkpoint as dcp

from tests.tiny_datasets import make_tiny_dataset
from tests.helpers import ROOT



def test_frozen_base_control_training_under_fsdp2(tmp_path):
    make_tiny_dataset(tmp_path / "data", stems=("a", "b"), num_frames=5, size=(64, 64), text_dim=384)
    overrides = [
        "experiment=ctrl_tiny",
        f"dataloader_train.dataset.root={tmp_path / 'data'}",
        "dataloader_train.dataset.text_embedding_folder=t5_xxl",
        "dataloader_train.dataset.num_frames=5",
        # the validation loader is built even when validation is off: point it at the tiny clips too (a fresh
        # clone has no datasets/demo)
        f"dataloader_val.dataset.root={tmp_path / 'data'}",
        "dataloader_val.dataset.text_embedding_folder=t5_xxl",
        "dataloader_val.dataset.num_frames=5",
        "trainer.max_iter=2",
        "trainer.logging_iter=1",
        "trainer.validation_iter=0",
        "trainer.progress_bar=false",
        "checkpoint.save_iter=2",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "scripts" / "train.py"), "--config=configs/train.py", "--", *overrides]
    env = {**os.environ, "OUTPUT_ROOT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    job = tmp_path / "out" / "cosmos_transfer" / "ctrl_tiny" / "ctrl_tiny"
    metrics = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2]
    assert all(m["grad_norm"] > 0 and m["mse"] > 0 for m in metrics)
    checkpoint = glob.glob(str(job / "checkpoints" / "iter_000000002"))[0]
    keys = list(dcp.FileSystemReader(checkpoint).read_metadata().state_dict_metadata)
    assert any(k.startswith("model.net.blocks.") for k in keys)  # the model's weights include the base
    assert any(k.startswith("optimizer.state.net_ctrl.edge.zero_blocks.") for k in keys)
    assert not any(k.startswith(("optimizer.state.net.", "ema.shadow.net.")) for k in keys)  # nothing for the base
