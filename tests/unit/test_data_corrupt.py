"""Damaged H.264: frames the decoder conceals are caught, the clip is skipped and counted, prepare_dataset lists it.

The damage is made the way a bad disk or a broken copy makes it: bytes flipped inside one coded picture of the mp4's
data (the container's header stays intact), so that FFmpeg still decodes every frame, concealing the errors.
"""

import importlib.util
import logging
import os
from fractions import Fraction

import av
import numpy as np
import pytest

from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.data.demo import make_clip
from tests.tiny_datasets import make_tiny_dataset
from cosmos_transfer.video_io import VideoReadError, probe_video, read_frames, read_video, write_video
from tests.helpers import REPO_DIR as REPO



def _textured(num_frames, height, width, seed=0):
    """Blocks of random colour drifting right: enough detail that every picture has real coded data to damage."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    return np.stack([np.roll(base, 2 * t, axis=1)[:height, :width] for t in range(num_frames)])


def _packets(path):
    """(byte offset, size, is key frame, frame index) of every coded picture, in file (decode) order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        return [(p.pos, p.size, p.is_keyframe, round(float(p.pts * stream.time_base) * fps))
                for p in container.demux(stream) if p.size]  # fmt: skip


def _decode_plainly(path):
    """Every frame and its is_corrupt flag, with PyAV's defaults except one thread (what FFmpeg reports reliably)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "NONE", 1
        return [(frame.to_ndarray(format="rgb24"), frame.is_corrupt) for frame in container.decode(stream)]


def damage_one_picture(path, first_packet=2):
    """Flip 4 bytes inside a coded picture (not a key frame) so that FFmpeg conceals the error and decodes on.

    Tries the pictures from `first_packet` on until one gives exactly that (decodes all frames without an exception,
    at least one frame flagged); returns the index of the damaged frame. The mp4 header is never touched.
    """
    intact = bytes(open(path, "rb").read())
    num_frames = probe_video(path).num_frames
    for pos, size, is_key, frame_index in _packets(path)[first_packet:]:
        if is_key or size < 24:
            continue
        damaged = bytearray(intact)
        for k in range(pos + size // 3, pos + size // 3 + 4):  # past the NAL length, NAL header and slice header
            damaged[k] ^= 0xFF
        with open(path, "wb") as file:
            file.write(damaged)
        try:
            frames = _decode_plainly(path)
        except av.FFmpegError:
            continue
        if len(frames) == num_frames and any(corrupt for _, corrupt in frames):
            return frame_index
    with open(path, "wb") as file:
        file.write(intact)
    raise AssertionError(f"no picture of {path} could be damaged into a concealed error")


@pytest.fixture
def damaged(tmp_path):
    path = tmp_path / "damaged.mp4"
    write_video(path, _textured(24, 64, 96), fps=12)
    good, _ = read_video(path)
    frame_index = damage_one_picture(path)
    return path, good, frame_index


def test_damaged_h264_still_decodes_into_garbage_that_pyav_flags(damaged):
    """The premise: the damage is silent to a plain decode (all frames come out, no exception) but visible."""
    path, good, _ = damaged
    frames = _decode_plainly(path)
    assert len(frames) == len(good)
    difference = max(np.abs(frame.astype(int) - g).mean() for (frame, _), g in zip(frames, good))
    assert difference > 3  # mean absolute error of the worst frame, in 0..255 (intact re-decodes differ by 0)
    assert probe_video(path).num_frames == 24  # the header is intact


def test_read_video_refuses_a_damaged_clip(damaged):
    path, _, frame_index = damaged
    with pytest.raises(VideoReadError, match=rf"corrupt video {path}: frame \d+ is damaged"):
        read_video(path)


def test_read_frames_refuses_windows_that_depend_on_the_damaged_picture(damaged):
    path, good, frame_index = damaged
    with pytest.raises(VideoReadError, match=f"corrupt video {path}"):
        read_frames(path, list(range(frame_index, frame_index + 3)))
    # A window ending just before the damaged picture, in decode order, never depends on it: it reads fine.
    first_packet_frames = [index for _, _, _, index in _packets(path)]
    damaged_position = first_packet_frames.index(frame_index)
    safe_end = min(first_packet_frames[damaged_position:])  # frames shown from here on may reference it
    if safe_end >= 2:
        window = read_frames(path, [0, safe_end - 1])
        np.testing.assert_array_equal(window, good[[0, safe_end - 1]])


def test_dataset_skips_and_counts_a_damaged_clip(tmp_path, caplog):
    stems = [f"c{i}" for i in range(10)]
    root = make_tiny_dataset(tmp_path, stems=stems)
    video = os.path.join(root, "videos", "c3.mp4")
    write_video(video, _textured(12, 32, 48), fps=10)
    damage_one_picture(video, first_packet=1)
    ds = VideoDataset(root, num_frames=12, resolution=(32, 48), text_embedding_length=16, text_embedding_dim=8,
                      max_bad_fraction=0.2)  # fmt: skip
    assert len(ds) == 10  # the header looks fine: only decoding finds the damage
    index = [clip.stem for clip in ds.clips].index("c3")
    with caplog.at_level(logging.WARNING, logger="cosmos_transfer.data"):
        sample = ds[(0, index)]
    assert sample["num_skipped"] == 1  # the trainer adds these up into skipped_samples
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and video in warnings[0] and "damaged" in warnings[0]
    assert all(int(ds[(0, i)]["num_skipped"]) == 0 for i in range(len(ds)) if i != index)


def _prepare_dataset_main():
    spec = importlib.util.spec_from_file_location("prepare_dataset", os.path.join(REPO, "scripts", "prepare_dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_prepare_dataset_check_only_lists_a_damaged_clip(tmp_path, capsys):
    root = make_tiny_dataset(tmp_path, stems=["a", "b", "c"])
    video = os.path.join(root, "videos", "b.mp4")
    write_video(video, _textured(12, 32, 48), fps=10)
    args = [root, "--check-only", "--num-frames", "5", "--resolution", "32x48", "--text-embedding-dim", "8"]
    main = _prepare_dataset_main()
    assert main(args) == 0
    damage_one_picture(video, first_packet=1)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"BAD {video}: corrupt video {video}: frame" in out and "2 of 3 clips usable" in out


# ------------------------------------------------------------------------------------- no false positives
def _write_open_gop(path, frames, fps=24):
    """x264 with open GOPs (key frames that leading B-frames of the previous GOP reference), as many cameras write."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"x264-params": "open-gop=1:keyint=12:min-keyint=12:scenecut=0:bframes=3"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_intact_clips_are_never_flagged(tmp_path):
    """Our own clips in every shape we write them, the demo's and an open-GOP camera-style file: all read cleanly."""
    paths = []
    for i, (num_frames, height, width, fps) in enumerate([(12, 32, 48, 10), (9, 31, 45, 29.97), (30, 64, 96, 24),
                                                          (16, 240, 320, 24), (10, 368, 640, 30)]):  # fmt: skip
        paths.append(tmp_path / f"ours{i}.mp4")
        write_video(paths[-1], _textured(num_frames, height, width, seed=i), fps=fps)
    paths.append(tmp_path / "demo.mp4")
    write_video(paths[-1], make_clip(0, 64, 33)[0], 16.0, crf=10, pix_fmt="yuv444p")  # as write_demo_split
    paths.append(tmp_path / "open_gop.mp4")
    _write_open_gop(paths[-1], _textured(60, 64, 96, seed=9))
    make_tiny_dataset(tmp_path / "tiny")
    paths += [tmp_path / "tiny" / "videos" / f"{stem}.mp4" for stem in "abc"]
    for path in paths:
        frames, _ = read_video(path)
        num_frames = len(frames)
        for start in range(num_frames):  # every window start, so every seek target and every key frame is met
            indices = list(range(start, num_frames, 3))
            np.testing.assert_array_equal(read_frames(path, indices), frames[indices], err_msg=f"{path} @ {start}")
