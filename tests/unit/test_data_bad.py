"""Bad data: each kind of bad clip is skipped with one warning naming it; too many bad clips stop the run."""

import logging
import os
from fractions import Fraction

import av
import numpy as np
import pytest

from cosmos_transfer.config.errors import DataError
from cosmos_transfer.data.dataset import VideoDataset
from tests.tiny_datasets import make_tiny_dataset
from cosmos_transfer.video_io import write_video

STEMS = [f"c{i}" for i in range(10)]


def _dataset(root, **kwargs):
    args = dict(num_frames=5, resolution=(32, 48), text_embedding_length=16, text_embedding_dim=8)
    args.update(kwargs)
    return VideoDataset(root, **args)


def _write_faststart(path, frames, fps=10):
    """An mp4 with its index (moov) before the data, as web-ready files are: truncating it keeps the header."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "0", "g": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _break(root, how, stem):
    video = os.path.join(root, "videos", stem + ".mp4")
    if how == "missing caption":
        os.remove(os.path.join(root, "metas", stem + ".txt"))
    elif how == "empty caption":
        open(os.path.join(root, "metas", stem + ".txt"), "w").close()
    elif how == "missing embedding":
        os.remove(os.path.join(root, "t5_xxl", stem + ".safetensors"))
    elif how == "too short":
        write_video(video, np.zeros((3, 32, 48, 3), np.uint8), 10)
    elif how == "cannot be padded":
        write_video(video, np.zeros((12, 48, 8, 3), np.uint8), 10)  # a sliver: 32x5 in a 32x48 frame
    elif how == "not a video":
        with open(video, "wb") as file:
            file.write(os.urandom(3000))
    elif how == "truncated header":
        data = open(video, "rb").read()
        with open(video, "wb") as file:
            file.write(data[: len(data) // 2])
    return video


CASES = {
    "missing caption": "missing or empty caption",
    "empty caption": "missing or empty caption",
    "missing embedding": "missing text embedding",
    "too short": "clip has 3 frames",
    "cannot be padded": "cannot be reflection-padded",
    "not a video": "c3.mp4",
    "truncated header": "c3.mp4",
}


@pytest.mark.parametrize("how", list(CASES))
def test_bad_clip_is_skipped_with_one_warning(tmp_path, caplog, how):
    root = make_tiny_dataset(tmp_path, stems=STEMS)
    video = _break(root, how, "c3")
    with caplog.at_level(logging.WARNING, logger="cosmos_transfer.data"):
        ds = _dataset(root)
    assert len(ds) == 9 and ds.num_files == 10
    assert [path for path, _ in ds.bad_files] == [video]
    assert CASES[how] in ds.bad_files[0][1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and video in warnings[0] and CASES[how] in warnings[0]
    assert all(ds[i]["num_skipped"] == 0 for i in range(len(ds)))


def test_clip_corrupt_past_its_header_is_skipped_when_loaded(tmp_path, caplog):
    root = make_tiny_dataset(tmp_path, stems=STEMS)
    video = os.path.join(root, "videos", "c3.mp4")
    frames = np.random.default_rng(0).integers(0, 255, (12, 32, 48, 3), dtype=np.uint8)
    _write_faststart(video, frames)
    data = open(video, "rb").read()
    with open(video, "wb") as file:
        file.write(data[: len(data) // 3])  # the header still promises 12 frames
    ds = _dataset(root, max_bad_fraction=0.2)
    assert len(ds) == 10  # the header looks fine
    index = ds.clips.index(next(c for c in ds.clips if c.stem == "c3"))
    with caplog.at_level(logging.WARNING, logger="cosmos_transfer.data"):
        first = ds[(0, index)]
        second = ds[(1, index)]
    assert first["num_skipped"] == 1 and second["num_skipped"] >= 1
    assert first["sample_index"] == index  # the sample keeps its index; another clip stands in for it
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and video in warnings[0]
    assert "corrupt" in warnings[0] or "truncated" in warnings[0]
    assert ds[(0, index)]["video"].shape == (3, 5, 32, 48)


def test_too_many_bad_clips_stop_the_run(tmp_path):
    root = make_tiny_dataset(tmp_path, stems=STEMS)
    for stem in ("c1", "c2"):
        _break(root, "missing caption", stem)
    assert len(_dataset(root, max_bad_fraction=0.2)) == 8  # 2 of 10 is allowed
    with pytest.raises(DataError, match=r"2 of 10 clips .* are bad, more than max_bad_fraction=0.1.*c1.mp4"):
        _dataset(root, max_bad_fraction=0.1)


def test_too_many_bad_clips_found_while_loading_stop_the_run(tmp_path):
    root = make_tiny_dataset(tmp_path, stems=STEMS)
    for stem in ("c0", "c1"):
        with open(os.path.join(root, "t5_xxl", stem + ".safetensors"), "wb") as file:
            file.write(b"garbage that is not safetensors")
    ds = _dataset(root, max_bad_fraction=0.1)  # the header check cannot see broken embeddings
    with pytest.raises(DataError, match="2 of 10 clips"):
        for i in range(len(ds)):
            ds[i]


def test_missing_folders_fail_at_construction(tmp_path):
    with pytest.raises(DataError, match=f"dataset folder not found: {tmp_path / 'nowhere'}"):
        _dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no videos/ folder"):
        _dataset(tmp_path)
