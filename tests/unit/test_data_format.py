"""Dataset format: our layout and Cosmos' (t5_xxl pickles), the restricted unpickler, the batch contract."""

import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.data.safe_pickle import UnsafePickleError, safe_load, safe_loads
from tests.tiny_datasets import make_tiny_dataset
from cosmos_transfer.data.text_embeddings import load_text_embedding, pad_text_embedding, save_text_embedding

DIM = 8


def make_clip_folder(root, **kwargs):
    return make_tiny_dataset(root, text_dim=DIM, **kwargs)


def dataset(root, **kwargs):
    args = dict(num_frames=5, resolution=(32, 64), hint_keys=["edge"], text_embedding_length=16,
                text_embedding_dim=DIM)  # fmt: skip
    args.update(kwargs)
    return VideoDataset(root, **args)


def test_batch_follows_the_contract(tmp_path):
    ds = dataset(make_clip_folder(tmp_path), hint_keys=["control_input_edge", "vis"])
    batch = next(iter(DataLoader(ds, batch_size=2)))
    B, T, H, W = 2, 5, 32, 64
    expected = {
        "video": (torch.uint8, (B, 3, T, H, W)),
        "padding_mask": (torch.float32, (B, 1, H, W)),
        "fps": (torch.float32, (B,)),
        "image_size": (torch.float32, (B, 4)),
        "num_frames": (torch.int64, (B,)),
        "t5_text_embeddings": (torch.float32, (B, 16, DIM)),
        "t5_text_mask": (torch.float32, (B, 16)),
        "control_input_edge": (torch.uint8, (B, 3, T, H, W)),
        "control_input_vis": (torch.uint8, (B, 3, T, H, W)),
        "sample_index": (torch.int64, (B,)),
        "num_skipped": (torch.int64, (B,)),
    }
    for key, (dtype, shape) in expected.items():
        assert batch[key].dtype == dtype, key
        assert tuple(batch[key].shape) == shape, key
    assert batch["caption"] == ["clip a: a red square moves right", "clip b: a red square moves right"]
    # 32x48 frames fit a 32x64 target unscaled (height is the limiting side), centred, 8 columns of padding a side.
    assert batch["image_size"][0].tolist() == [32, 64, 32, 48]
    mask = batch["padding_mask"][0, 0]
    assert mask[:, :8].eq(1).all() and mask[:, 8:56].eq(0).all() and mask[:, 56:].eq(1).all()
    # Reflection: column 8 - k of the padded frame mirrors column 8 + k.
    video = batch["video"][0]
    assert torch.equal(video[..., 7], video[..., 9]) and torch.equal(video[..., 0], video[..., 16])
    assert batch["t5_text_mask"][0].sum() == 3 and batch["t5_text_mask"][1].sum() == 4
    assert batch["t5_text_embeddings"][0, 3:].abs().sum() == 0
    assert batch["fps"].tolist() == [10.0, 10.0] and batch["num_frames"].tolist() == [5, 5]


def test_cosmos_layout_with_t5_pickles(tmp_path):
    root = make_clip_folder(tmp_path, cosmos_pickles=True)
    ds = dataset(root)
    sample = ds[0]
    reference = safe_load(os.path.join(root, "t5_xxl", "a.pickle"))[0]
    np.testing.assert_array_equal(sample["t5_text_embeddings"][:3].numpy(), reference.astype(np.float32))
    assert sample["t5_text_mask"].sum() == 3


def test_target_fps_sets_the_frame_stride(tmp_path):
    ds = dataset(make_clip_folder(tmp_path, num_frames=12, fps=10.0), fps=5.0, num_frames=4)
    sample = ds[0]
    assert sample["fps"].item() == 5.0
    # The square moves 2 pixels a frame; with stride 2 it moves 4 pixels per sampled frame.
    video = sample["video"][0].float()  # red channel [T, H, W]
    left_edges = [int(np.nonzero(video[t, 14].numpy() > 150)[0][0]) for t in range(4)]
    steps = np.diff(left_edges)
    assert np.all(np.abs(steps - 4) <= 1), left_edges


def test_embedding_round_trip_and_padding(tmp_path):
    path = tmp_path / "e.safetensors"
    save_text_embedding(path, np.ones((5, 4), np.float32), encoder="x", max_length=8, caption="hello")
    loaded = load_text_embedding(path)
    assert loaded.shape == (5, 4) and loaded.dtype == np.float32
    padded, mask = pad_text_embedding(loaded, 3)  # longer than L: truncated
    assert padded.shape == (3, 4) and mask.tolist() == [1, 1, 1]


def test_wrong_embedding_dim_is_a_clear_error(tmp_path):
    root = make_clip_folder(tmp_path)
    with pytest.raises(ValueError, match="text_embedding_dim=1024"):
        dataset(root, text_embedding_dim=1024)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_safe_unpickler_admits_numpy_and_plain_containers():
    data = {"list": [1, 2.5, "x", None, b"raw"], "array": np.arange(6, dtype=np.float16).reshape(2, 3),
            "scalar": np.float32(1.5), "nested": ({"a": (1, 2)}, {3, 4})}  # fmt: skip
    for protocol in (2, 4, 5):
        loaded = safe_loads(pickle.dumps(data, protocol=protocol))
        np.testing.assert_array_equal(loaded["array"], data["array"])
        assert loaded["list"] == data["list"] and loaded["nested"] == data["nested"]


def test_safe_unpickler_refuses_a_pickle_that_runs_code(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps([_RunsCode()]))
    with pytest.raises(UnsafePickleError, match=r"evil\.pickle.*(posix|os|nt)\.system"):
        safe_load(path)
    for payload in (pickle.dumps(eval), pickle.dumps(_RunsCode), pickle.dumps(torch.zeros(2))):
        with pytest.raises(UnsafePickleError):
            safe_loads(payload)


def test_malicious_embedding_pickle_is_a_skipped_clip(tmp_path):
    root = make_clip_folder(tmp_path, cosmos_pickles=True)
    with open(os.path.join(root, "t5_xxl", "b.pickle"), "wb") as file:
        pickle.dump([_RunsCode()], file)
    ds = dataset(root, max_bad_fraction=0.5)
    sample = ds[1]  # clip b is refused at load time and replaced by another clip
    assert sample["num_skipped"].item() >= 1
    assert 1 in ds._bad_at_runtime


def test_cached_latents_fix_the_window(tmp_path):
    from safetensors.torch import save_file

    root = make_clip_folder(tmp_path, num_frames=12)
    os.makedirs(os.path.join(root, "latents"))
    for stem in ("a", "b", "c"):
        meta = {"frame_start": "4", "frame_stride": "2", "num_frames": "3", "height": "32", "width": "64"}
        latent = torch.full((4, 1, 4, 8), float(ord(stem)))
        save_file({"latent": latent}, os.path.join(root, "latents", stem + ".safetensors"), metadata=meta)
    ds = dataset(root, num_frames=3, use_latents=True)
    sample = ds[(7, 1)]
    assert sample["latent"].shape == (4, 1, 4, 8) and sample["latent"][0, 0, 0, 0] == ord("b")
    # Frames 4, 6, 8: the square's left edge is at column 4 + 2t (+ 8 columns of padding).
    red = sample["video"][0, :, 14].numpy()
    assert [int(np.nonzero(row > 150)[0][0]) for row in red] == [8 + 4 + 2 * t for t in (4, 6, 8)]
    assert sample["fps"].item() == 5.0
    wrong = dataset(root, num_frames=4, use_latents=True, max_bad_fraction=1.0)
    with pytest.raises(ValueError, match="made for 3 frames"):
        wrong.load_clip(0)
