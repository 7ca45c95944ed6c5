"""The demo experiment (`make demo`) end to end on a few tiny clips: real GeneralDIT + ControlNet branch, pixel
tokenizer, PowerEMA, FSDP2 over 2 processes (torchrun, gloo), validation samples and checkpoints.

Then scripts/demo_report.py, `make demo`'s last step, on the trained job. It guards the demo's configuration against
changes elsewhere, and covers what the toy model cannot: a frozen or trained base sharded beside a control branch, and
a trainable parameter outside every network (the model's logvar head), whose gradients the trainer averages itself and
which fused AdamW (the default) steps in a group of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.tiny_datasets import make_tiny_dataset
from tests.helpers import ROOT



def test_demo_edge_tiny_trains_validates_and_checkpoints(tmp_path):
    for split, stems in (("train", ("a", "b", "c", "d")), ("val", ("e", "f"))):
        make_tiny_dataset(tmp_path / "data" / split, stems=stems, num_frames=17, size=(64, 64), text_dim=8)
    overrides = [
        "experiment=demo_edge_tiny",
        f"dataloader_train.dataset.root={tmp_path / 'data' / 'train'}",
        f"dataloader_val.dataset.root={tmp_path / 'data' / 'val'}",
        # the tiny clips' text embeddings: t5_xxl/ folder, D = 8
        "dataloader_train.dataset.text_embedding_folder=t5_xxl",
        "dataloader_val.dataset.text_embedding_folder=t5_xxl",
        "dataloader_train.dataset.text_embedding_dim=8",
        "dataloader_val.dataset.text_embedding_dim=8",
        "model.net.crossattn_emb_channels=8",
        "dataloader_train.batch_size=1",
        "trainer.max_iter=3",
        "trainer.validation_iter=3",
        "trainer.validation_num_batches=1",
        "trainer.sample_num_steps=2",
        "trainer.progress_bar=false",
        "checkpoint.save_iter=3",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "scripts" / "train.py"), "--config=configs/train.py", "--", *overrides]
    env = {**os.environ, "OUTPUT_ROOT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    job = tmp_path / "out" / "cosmos_transfer" / "demo" / "demo_edge_tiny"
    lines = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in lines if "event" not in m]
    assert [m["iteration"] for m in train] == [1, 2, 3]
    assert all(m["loss"] is not None and m["mse"] > 0 and m["grad_norm"] > 0 for m in train)
    assert train[0]["tflops_per_s"] > 0 and train[0]["tokens_per_s"] > 0
    assert [m["iteration"] for m in lines if m.get("event") == "val"] == [3]
    assert (job / "samples" / "iter_000000003.mp4").stat().st_size > 0
    assert (job / "samples" / "iter_000000003_grid.gif").stat().st_size > 0
    assert (job / "checkpoints" / "latest_checkpoint.txt").read_text().strip() == "iter_000000003"
    assert (job / "config.yaml").is_file()

    # make demo's last step on this job: inference.py with the edge control on and off, evaluate.py, the table. As
    # make demo runs it: no --job, the job folder is the config's job.path under this run's OUTPUT_ROOT.
    report = [sys.executable, str(ROOT / "scripts" / "demo_report.py"), "--data", str(tmp_path / "data" / "val"),
              "--num_clips", "1", "--gif_clips", "1", "--", *overrides[1:]]
    result = subprocess.run(report, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "35 res2ab steps" in result.stdout and "Edge F1 with the control on / off:" in result.stdout, result.stdout
    for state in ("on", "off"):
        metrics = json.loads((job / "demo_report" / "e" / f"edge_{state}.metrics.json").read_text())["metrics"]
        assert 0 <= metrics["edge_f1"] <= 1 and -1 <= metrics["blur_ssim"] <= 1, metrics
    assert (job / "demo_report" / "side_by_side.gif").stat().st_size > 0
