"""Text encoders (the T5 path with a tiny random T5, the demo's all-MiniLM-L6-v2), prepare_dataset, demo data."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.data.text_embeddings import load_text_embedding
from cosmos_transfer.data.text_encoders import TextEncoder
from tests.tiny_datasets import make_tiny_dataset, make_tiny_t5
from tests.helpers import REPO_DIR as REPO

def test_t5_encoder_path_with_a_tiny_random_t5(tmp_path):
    folder = make_tiny_t5(tmp_path / "t5")
    encoder = TextEncoder(folder, max_length=6)
    assert encoder.dim == 16
    short, long = encoder.encode(["a red square", "a red square moves left over the background"])
    assert short.shape == (4, 16)  # 3 words + </s>
    assert long.shape == (6, 16)  # truncated to max_length
    # The same numbers as running the model by hand on the real tokens (padding is masked out).
    from transformers import T5EncoderModel

    model = T5EncoderModel.from_pretrained(folder).eval()
    with torch.no_grad():
        reference = model(input_ids=torch.tensor([[3, 4, 7, 1]])).last_hidden_state[0].numpy()
    np.testing.assert_allclose(short, reference, atol=1e-5)


def test_demo_text_encoder_is_minilm_from_its_package():
    from cosmos_transfer.data.text_encoders import demo_text_encoder_dir

    encoder = TextEncoder(demo_text_encoder_dir(), max_length=40)
    red, blue, other = encoder.encode(["a red circle moves left", "a blue circle moves left", "the weather is nice"])
    assert red.shape[1] == 384
    mean = lambda x: x.mean(0) / np.linalg.norm(x.mean(0))  # noqa: E731
    assert mean(red) @ mean(blue) > mean(red) @ mean(other)  # a real sentence encoder, not noise


def _run(script, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.slow
def test_prepare_dataset_embeds_and_checks(tmp_path):
    root = make_tiny_dataset(tmp_path / "data", stems=["a", "b", "c", "d"])
    os.remove(os.path.join(root, "metas", "d.txt"))  # one bad clip
    for name in os.listdir(os.path.join(root, "t5_xxl")):
        os.remove(os.path.join(root, "t5_xxl", name))
    t5 = make_tiny_t5(tmp_path / "t5")
    result = _run("prepare_dataset.py", root, "--encoder", t5, "--max-length", 12, "--num-frames", 5,
                  "--resolution", "32x48")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"BAD {os.path.join(root, 'videos', 'd.mp4')}: missing or empty caption" in result.stdout
    assert "3 of 4 clips usable" in result.stdout
    embedding = load_text_embedding(os.path.join(root, "t5_xxl", "a.safetensors"))
    assert embedding.shape == (8, 16)  # "clip a: a red square moves right": 7 words + </s>
    # Fixed: the check passes once the caption is back; the dataset then yields contract batches from the folder.
    with open(os.path.join(root, "metas", "d.txt"), "w") as file:
        file.write("a blue circle moves left\n")
    main = _prepare_dataset_main()  # in this process this time: quicker
    assert main([root, "--encoder", t5, "--max-length", "12", "--num-frames", "5", "--resolution", "32x48"]) == 0
    ds = VideoDataset(root, num_frames=5, resolution=(32, 48), text_embedding_length=12, text_embedding_dim=16)
    sample = ds[3]
    assert sample["t5_text_embeddings"].shape == (12, 16) and sample["t5_text_mask"].sum() == 6  # 5 words + </s>


def test_prepare_dataset_missing_folder(tmp_path, capsys):
    assert _prepare_dataset_main()([str(tmp_path / "nowhere"), "--check-only"]) == 2
    assert f"dataset folder not found: {tmp_path / 'nowhere'}" in capsys.readouterr().err


def _prepare_dataset_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_dataset", os.path.join(REPO, "scripts", "prepare_dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_demo_dataset_has_learnable_edges(tmp_path):
    import cv2

    from cosmos_transfer.data.controls import EDGE_PRESETS, edge_control
    from cosmos_transfer.data.demo import DEMO_EMBEDDING_FOLDER, make_clip, write_demo_split

    frames, caption = make_clip(seed=7, size=64, num_frames=17)
    assert frames.shape == (17, 64, 64, 3) and " moves " in caption and caption.endswith("background.")
    # Nearly every Canny edge, even at the lowest training thresholds, lies on a shape's outline.
    shapes = np.abs(frames.astype(int) - np.median(frames, axis=(0,), keepdims=True)).max(-1) > 40
    shapes |= np.abs(frames.astype(int) - frames.mean(axis=(1, 2), keepdims=True)).max(-1) > 80
    outline = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) for m in shapes]) > 0
    edges = edge_control(frames, 20, 70)[..., 0] > 0
    assert edges.sum() > 17 * 20
    assert (edges & outline).sum() >= 0.9 * edges.sum()

    # A split written with an encoder is a dataset in our layout.
    encoder = TextEncoder(make_tiny_t5(tmp_path / "t5"), max_length=40)
    captions = write_demo_split(str(tmp_path / "demo"), num_clips=3, first_seed=0, num_frames=17, text_encoder=encoder)
    ds = VideoDataset(str(tmp_path / "demo"), num_frames=17, resolution="tiny", text_embedding_length=40,
                      text_embedding_dim=16, text_embedding_folder=DEMO_EMBEDDING_FOLDER)  # fmt: skip
    sample = ds[0]
    assert sample["caption"] == captions[0]
    assert sample["video"].shape == (3, 17, 64, 64) and sample["padding_mask"].sum() == 0
