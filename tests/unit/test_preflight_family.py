"""Preflight hints name the model family's own files and tools (cosmos_transfer/preflight.py): on the 2.5 path the
missing Wan2.1 VAE tokenizer.pth, Cosmos-Reason1 text (and its extra) and the released Transfer2.5 load path; on
Transfer1's its base_model.pt conversion and T5-XXL. Before, the 2.5 checks named no tokenizer.pth and pointed to
Transfer1's step 1 and T5. Messages about the GPU name it."""

import pytest
import torch

from configs.train import make_config
from cosmos_transfer import preflight
from cosmos_transfer.config.compose import override
from cosmos_transfer.memory import GIB, MemoryReport


def _problems(tmp_path, monkeypatch, experiment: str) -> list[str]:
    monkeypatch.setenv("COSMOS_CHECKPOINT_DIR", str(tmp_path / "no_downloads"))
    clips = tmp_path / "clips"
    (clips / "videos").mkdir(parents=True)  # clips, but no text embeddings yet
    config = override(make_config(), ["--", f"experiment={experiment}", "checkpoint.load_path=missing.pt",
                                      f"dataloader_train.dataset.root={clips}", "dataloader_val.dataset.root=gone"])
    return preflight.check_paths(config)


def test_the_2p5_checks_name_the_wan_vae_reason1_and_the_released_load_path(tmp_path, monkeypatch):
    load, tokenizer, text, val = _problems(tmp_path, monkeypatch, "transfer2p5_2b_edge_posttrain")
    assert "Cosmos-Transfer2.5-2B/general/edge/<uuid>_ema_bf16.pt" in load and "convert_checkpoint.py" in load
    assert "Transfer1" not in load and "base_model.pt" not in load
    assert "tokenizer.pth" in tokenizer and "Cosmos-Predict2.5-2B" in tokenizer
    assert "--text_encoder checkpoints/nvidia/Cosmos-Reason1-7B" in text and "'.[reason1]'" in text
    assert "t5" not in text.lower()
    assert "captions/" in val and "Cosmos-Reason1" in val and "metas/" not in val


def test_the_transfer1_checks_name_its_base_and_t5(tmp_path, monkeypatch):
    load, tokenizer, text, val = _problems(tmp_path, monkeypatch, "ctrl_7b_edge_posttrain")
    assert "base_model.pt" in load and "--new-control" in load and "Transfer2.5" not in load
    assert "Cosmos-Tokenize1-CV8x8x8-720p" in tokenizer
    assert "--text_encoder checkpoints/google-t5/t5-11b" in text and "'.[t5]'" in text
    assert "metas/" in val


def test_memory_messages_name_the_gpu_and_the_family_s_small_experiment(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 80GB HBM3")
    assert preflight.gpu_names() == "cuda:0..1 NVIDIA H100 80GB HBM3"
    report = MemoryReport(trainable_parameters=10**9, frozen_parameters=0, trainable_parameter_bytes=4 * GIB,
                          frozen_parameter_bytes=0, gradient_bytes=4 * GIB, optimizer_state_bytes=8 * GIB,
                          buffer_bytes=0, tokenizer_bytes=0, ema_bytes=0)
    (problem,) = preflight.memory_problems(report, "", world_size=1, local_world_size=1, device_type="cuda",
                                           device_bytes=8 * GIB, host_bytes=None,
                                           device_name=f"each GPU ({preflight.gpu_names()})",
                                           smaller="transfer2p5_tiny")
    assert "each GPU (cuda:0..1 NVIDIA H100 80GB HBM3) has 8.0 GiB" in problem
    assert "experiment=transfer2p5_tiny on a CPU" in problem


@pytest.mark.parametrize("experiment, expected", [("transfer2p5_tiny", True), ("predict2p5_2b_video2world_posttrain",
                                                                             True), ("demo_edge_tiny", False)])
def test_the_family_is_told_by_the_net(experiment, expected):
    assert preflight.is_cosmos_2p5(override(make_config(), ["--", f"experiment={experiment}"])) is expected
