"""Transfer2.5's post-training layout read as it is: videos/*.mp4, captions/*.json ({"caption": ...}), optional
depth/*.mp4 and seg/*.mp4 (a colour-coded segmentation video), edge and blur computed on the fly."""

import json
import logging
import os

import numpy as np
import pytest

from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.data.text_embeddings import save_text_embedding
from cosmos_transfer.video_io import write_video
from tests.tiny_datasets import make_tiny_dataset, to_transfer2_5_layout

STEMS = [f"c{i}" for i in range(5)]


def _layout(tmp_path, stems=STEMS):
    """Transfer2.5's layout plus 8-wide embeddings in reason1/ (what prepare_dataset.py would write)."""
    root = to_transfer2_5_layout(make_tiny_dataset(tmp_path / "clips", stems=stems))
    for n, stem in enumerate(stems):
        save_text_embedding(os.path.join(root, "reason1", stem + ".safetensors"),
                            np.full((4, 8), n, np.float32), encoder="test", max_length=4, caption=stem)
    return root


def _dataset(root, **kwargs):
    kwargs = dict(num_frames=5, resolution=(32, 48), text_embedding_folder="reason1", text_embedding_length=4,
                  text_embedding_dim=8, max_bad_fraction=0.5, **kwargs)
    return VideoDataset(root, **kwargs)


def test_captions_json_with_edge_and_blur_on_the_fly(tmp_path):
    root = _layout(tmp_path)
    ds = _dataset(root, hint_keys=["edge", "vis"])
    assert len(ds) == 5 and not ds.bad_files
    sample = ds[0]
    assert sample["caption"] == "clip c0: a red square moves right"  # the "caption" field; others ignored
    assert sample["video"].shape == (3, 5, 32, 48)
    assert sample["control_input_edge"].shape == sample["control_input_vis"].shape == (3, 5, 32, 48)
    assert sample["control_input_edge"].max() == 255  # the square's outline


BAD_CAPTIONS = {
    "not json": ("{caption: oops", "is not valid JSON"),
    "no caption field": (json.dumps({"text": "a clip"}), 'has no "caption" field (found an object with keys'),
    "not a string": (json.dumps({"caption": ["a", "clip"]}), '"caption" must be a string, got list'),
    "empty caption": (json.dumps({"caption": "  "}), "missing or empty caption"),
    "a list": (json.dumps(["a clip"]), 'has no "caption" field (found list)'),
}


@pytest.mark.parametrize("how", list(BAD_CAPTIONS))
def test_bad_caption_json_is_named(tmp_path, caplog, how):
    root = _layout(tmp_path)
    content, message = BAD_CAPTIONS[how]
    path = os.path.join(root, "captions", "c3.json")
    with open(path, "w", encoding="utf-8") as file:
        file.write(content)
    with caplog.at_level(logging.WARNING, logger="cosmos_transfer.data"):
        ds = _dataset(root)
    assert len(ds) == 4
    (video, why), = ds.bad_files
    assert video.endswith(os.path.join("videos", "c3.mp4")) and path in why and message in why


def test_missing_caption_names_both_layouts(tmp_path):
    root = _layout(tmp_path)
    os.remove(os.path.join(root, "captions", "c1.json"))
    (video, why), = _dataset(root).bad_files
    assert os.path.join(root, "metas", "c1") + ".txt" in why and os.path.join(root, "captions", "c1") + ".json" in why


def _seg_video(num_frames=12, size=(32, 48)):
    """A colour-coded segmentation video: background black, the square in one flat colour (as SAM2's output)."""
    frames = np.zeros((num_frames, *size, 3), np.uint8)
    for t in range(num_frames):
        frames[t, 8:20, 4 + 2 * t : 16 + 2 * t] = (0, 255, 0)
    return frames


def test_seg_and_depth_videos(tmp_path):
    root = _layout(tmp_path, stems=["a", "b"])
    for stem in ("a", "b"):
        write_video(os.path.join(root, "seg", stem + ".mp4"), _seg_video(), 10)
        write_video(os.path.join(root, "depth", stem + ".mp4"), np.full((12, 32, 48, 3), 128, np.uint8), 10)
    ds = _dataset(root, hint_keys=["seg", "depth"], is_train=True)
    sample = ds[0]
    seg = sample["control_input_seg"].numpy()
    assert seg.shape == (3, 5, 32, 48) and sample["control_input_depth"].shape == (3, 5, 32, 48)
    green = (seg[0] < 64) & (seg[1] > 192) & (seg[2] < 64)
    black = seg.max(axis=0) < 64
    assert green.any() and (green | black).mean() > 0.9  # the colours of the video, not colours of our own


def test_seg_video_of_another_length_is_left_out(tmp_path):
    root = _layout(tmp_path, stems=["a", "b"])
    write_video(os.path.join(root, "seg", "a.mp4"), _seg_video(), 10)
    write_video(os.path.join(root, "seg", "b.mp4"), _seg_video(num_frames=9), 10)
    ds = _dataset(root, hint_keys=["seg"])
    (video, why), = ds.bad_files
    assert video.endswith("b.mp4") and "segmentation video" in why and "9 frames" in why and "12 frames" in why


def test_embeddings_of_two_projections_are_not_mixed(tmp_path):
    """Text projected by two different crossattn_proj (two bases), or projected and raw, in one folder: refused."""
    root = _layout(tmp_path, stems=["a", "b", "c"])
    projected = {"projection": "crossattn_proj of edge.pt", "projection_sha256": "1111"}
    for stem, extra in (("a", projected), ("b", projected), ("c", {**projected, "projection_sha256": "2222"})):
        save_text_embedding(os.path.join(root, "reason1", stem + ".safetensors"), np.zeros((4, 8), np.float32),
                            encoder="test", max_length=4, caption=stem, extra_metadata=extra)
    with pytest.raises(ValueError, match=r"are of different kinds: .*a.safetensors has crossattn_proj of edge.pt "
                                         r"\(sha256 1111\), .*c.safetensors has crossattn_proj of edge.pt "
                                         r"\(sha256 2222\)"):
        _dataset(root)
    save_text_embedding(os.path.join(root, "reason1", "c.safetensors"), np.zeros((4, 8), np.float32),
                        encoder="test", max_length=4, caption="c")
    with pytest.raises(ValueError, match=r"c.safetensors has no projection \(raw embeddings\)"):
        _dataset(root)
    os.remove(os.path.join(root, "reason1", "c.safetensors"))
    assert len(_dataset(root)) == 2
