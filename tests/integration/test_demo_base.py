"""The shipped demo base (assets/demo/base_model.pt, made by scripts/pretrain_demo_base.py) stays usable: it is laid
out as NVIDIA's Cosmos-Transfer1 base_model.pt, loads through the official-layout loader into the demo's base, and
still draws clean shapes, so that a change to the network, the tokenizer or the loader cannot leave `make demo`
post-training on a broken base unnoticed.

Drawing is checked with Edge F1, the demo's metric: a validation clip is noised to sigma 0.3 (the last third of
sampling) and the base denoises it in one step; the F1 of the result against the clip's own edge control must beat a
random net's and noise's by far. A base that has learned the shapes puts their outlines back; noise does not.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from configs.train import make_config
from cosmos_transfer.checkpoints import transfer1
from cosmos_transfer.data.demo import DEMO_TEXT_EMBEDDING_LENGTH, write_demo_split
from cosmos_transfer.data.text_encoders import TextEncoder, demo_text_encoder_dir
from cosmos_transfer.inference import loading
from cosmos_transfer.metrics import canny_edges, f1_score
from cosmos_transfer.trainer.trainer import instantiate
from tests.helpers import REPO_DIR as ROOT

BASE = os.path.join(ROOT, "assets", "demo", "base_model.pt")


def test_shipped_demo_base_is_an_official_base_model_file():
    size = os.path.getsize(BASE)
    assert size < 8 * 2**20, f"{BASE}: {size:,} bytes; the shipped file should stay small"
    weights = transfer1.read_weights(BASE)
    assert weights.layout == "base_model", weights.describe()
    raw = torch.load(BASE, weights_only=True)
    assert raw and all(k.startswith(("base_model.net.", "base_model.logvar.")) for k in raw)
    assert {v.dtype for v in raw.values() if v.is_floating_point()} == {torch.bfloat16}
    # It fits the demo's base exactly (strict: every key, every shape).
    model = loading.build_model(loading.compose_config("demo_base_tiny", make_config=make_config))
    loaded = loading.load_weights(model, BASE)
    assert set(loaded) == set(model.state_dict())


def _frames(video: torch.Tensor) -> np.ndarray:
    """[1, 3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    return ((video[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


@torch.no_grad()
def _denoised_f1(model, batch: dict, sigma: float, edges: np.ndarray) -> float:
    """Edge F1, against `edges`, of the one-step denoising of the batch's clip noised to `sigma` (fixed noise)."""
    x0 = model.latent_from_batch(batch)
    condition = model._extend_condition(batch, model.conditioner(batch))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    return f1_score(canny_edges(_frames(model.decode(model.denoise(x0 + sigma * noise, sigma, condition)))), edges)


@pytest.mark.slow
def test_shipped_demo_base_denoises_the_shapes_of_a_validation_clip(tmp_path):
    torch.set_num_threads(1)
    # The demo's first validation clip with its MiniLM caption embedding (datasets/ need not exist here).
    write_demo_split(str(tmp_path / "val"), 1, 50_000, text_encoder=TextEncoder(
        demo_text_encoder_dir(), max_length=DEMO_TEXT_EMBEDDING_LENGTH, name="all-MiniLM-L6-v2"))
    config = loading.compose_config("demo_base_tiny", [f"dataloader_val.dataset.root={tmp_path / 'val'}"],
                                    make_config=make_config)
    batch = default_collate([instantiate(config.dataloader_val["dataset"])[0]])
    edges = canny_edges(batch["video"][0].permute(1, 2, 3, 0).numpy())  # the clip's own edge control
    base = loading.build_model(config).eval()
    loading.load_weights(base, BASE)
    untrained = loading.build_model(config).eval()
    trained_f1 = _denoised_f1(base, batch, 0.3, edges)
    untrained_f1 = _denoised_f1(untrained, batch, 0.3, edges)  # the same net with random weights
    noise = np.random.default_rng(0).integers(0, 256, (17, 32, 32, 3), dtype=np.uint8)
    noise_f1 = f1_score(canny_edges(noise), edges)
    # Measured on the shipped file (8,000 steps, per-channel DCT latents; 2026-12-01): 0.67 against 0.09 untrained.
    assert trained_f1 > 0.2, (trained_f1, untrained_f1, noise_f1)
    assert trained_f1 > 3 * max(untrained_f1, noise_f1), (trained_f1, untrained_f1, noise_f1)
