"""LoRA started from a released base (`checkpoint.load_path` + `lora=control|base`), both families, through the
Trainer in this process (one gloo rank): it builds, loads, trains a step and writes its lean checkpoint, whose
frozen-base reference names the model's own (`.base_layer.`) names, then resumes from it. Before, the loaded names were
mapped a second time (KeyError '...to_k.0.base_layer.weight'), so LoRA only ever started from scratch; and the demo's
lr_multipliers stopped `lora=control` on it ("match no trainable parameter").

The Transfer1 base is assets/demo/base_model.pt converted as `make demo` does (NVIDIA's layout, a new edge branch);
the 2.5 base is a transfer2p5_tiny network written as NVIDIA releases its files (net.*, bf16).
peft's import is slow here (it imports transformers): one module of four cases, ~25 s in all.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from configs.train import make_config
from cosmos_transfer import lora
from cosmos_transfer.config.compose import override
from cosmos_transfer.config.lazy import instantiate
from cosmos_transfer.trainer import frozen_base
from tests.helpers import ROOT
from tests.tiny_datasets import make_tiny_dataset

pytest.importorskip("peft", reason="LoRA needs peft (the `lora` / `dev` extra)")


def _data_overrides(root: str, num_frames: int) -> list[str]:
    options = [f"dataset.root={root}", "dataset.text_embedding_folder=t5_xxl", f"dataset.num_frames={num_frames}",
               "dataset.text_embedding_length=16"]
    return [f"{loader}.{o}" for loader in ("dataloader_train", "dataloader_val") for o in options]


def _transfer1_base(tmp_path) -> str:
    """The demo base converted with a new edge branch, as `make demo` does (NVIDIA's released layout in)."""
    out = str(tmp_path / "demo_edge_init.safetensors")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_checkpoint.py"), "to-ours",
                             str(ROOT / "assets" / "demo" / "base_model.pt"), out, "--new-control", "edge",
                             "--num-control-blocks", "2"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _transfer2p5_base(tmp_path) -> str:
    """A transfer2p5_tiny network as NVIDIA releases a Transfer2.5 file: one state dict of net.*, in bf16."""
    torch.manual_seed(3)
    model = instantiate(override(make_config(), ["--", "experiment=transfer2p5_tiny"]).model)
    path = str(tmp_path / "edge_ema_bf16.pt")
    torch.save({"net." + k: v.to(torch.bfloat16) for k, v in model.net.state_dict().items()}, path)
    return path


def _train(config, monkeypatch) -> "Trainer":  # noqa: F821
    """A Trainer on one gloo rank in this process, run to its max_iter; returns it for inspection."""
    from cosmos_transfer.trainer import distributed
    from cosmos_transfer.trainer.trainer import Trainer

    for name, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(distributed._free_port()))
    device = distributed.init_distributed(timeout_s=120)
    try:
        trainer = Trainer(config, device)
        trainer.run()
    finally:
        distributed.destroy_distributed()
    return trainer


@pytest.mark.parametrize("family", ["transfer1", "transfer2p5"])
@pytest.mark.parametrize("target", ["control", "base"])
def test_lora_starts_from_a_released_base(tmp_path, monkeypatch, capsys, family, target):
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "out"))
    if family == "transfer1":
        experiment, num_frames, load_path = "demo_edge_tiny", 17, _transfer1_base(tmp_path)
    else:
        experiment, num_frames, load_path = "transfer2p5_tiny", 9, _transfer2p5_base(tmp_path)
    data = make_tiny_dataset(tmp_path / "data", stems=("a", "b"), num_frames=num_frames, size=(32, 32),
                             text_dim=384)
    overrides = [
        "--", f"experiment={experiment}", f"lora={target}", "lora.rank=4", "lora.alpha=8",
        f"checkpoint.load_path={load_path}", *_data_overrides(data, num_frames), "dataloader_train.batch_size=1",
        "trainer.validation_iter=0", "trainer.progress_bar=false", "trainer.tensorboard=false",
        "checkpoint.save_iter=1", "ema=null",
    ]
    trainer = _train(override(make_config(), [*overrides, "trainer.max_iter=1"]), monkeypatch)
    # The demo's multipliers of the AdaLN modulation name layers lora=control freezes: dropped, and said so.
    dropped = "trainer.lr_multipliers ['*adaLN_modulation*', '*t_embedder*'] name only layers LoRA freezes"
    assert (dropped in capsys.readouterr().out) == (experiment == "demo_edge_tiny" and target == "control")

    adapters = [n for n, p in trainer.model.named_parameters() if lora.is_adapter_key(n)]
    assert adapters and all(("net_ctrl." in n or ".control_blocks" in n) == (target == "control") for n in adapters)
    # The lean checkpoint references the released file for the frozen tensors it read, under the model's names.
    checkpoint = os.path.join(trainer.job_dir, "checkpoints", "iter_000000001")
    base = frozen_base.read(checkpoint)
    assert base is not None and base.path == os.path.abspath(load_path)
    frozen = {n for n, p in trainer.model.named_parameters() if not p.requires_grad}
    assert set(base.keys) <= frozen and any(".base_layer." in k for k in base.keys)

    # The job goes on: the frozen base read again from the released file under the adapted layers' names.
    resumed = _train(override(make_config(), [*overrides, "trainer.max_iter=2"]), monkeypatch)
    assert resumed.resumed_from == checkpoint and resumed.iteration == 2
    written = frozen_base.read(os.path.join(trainer.job_dir, "checkpoints", "iter_000000002"))
    assert written is not None and written.keys == base.keys
