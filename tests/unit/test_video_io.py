"""cosmos_transfer.video_io: mp4 and GIF round trips, windowed decoding, clear errors on bad files."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from cosmos_transfer.video_io import VideoReadError, probe_video, read_frames, read_video, write_gif, write_video


def _ramp(num_frames: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Frame t is a flat colour whose red channel is 4 * t, so a decoded frame tells its own index."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = 4 * t
        frames[t, ..., 1] = 200 - 2 * t
        frames[t, ..., 2] = 60
    return frames


def test_mp4_round_trip(tmp_path):
    frames = _ramp(20)
    path = tmp_path / "clip.mp4"
    write_video(path, torch.from_numpy(frames), fps=12)  # torch input is accepted too
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert fps == pytest.approx(12.0)
    assert np.abs(decoded.astype(int) - frames).mean() < 3.0
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (20, 32, 48)


def test_read_frames_picks_the_requested_frames_after_a_seek(tmp_path):
    path = tmp_path / "long.mp4"
    # 60 frames with a key frame every 8, so a window late in the clip needs a real seek.
    frames = _ramp(60)
    import av
    from fractions import Fraction

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.options = {"crf": "10", "g": "8", "keyint_min": "8"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    indices = [3, 25, 27, 41, 59]
    window = read_frames(path, indices)
    np.testing.assert_allclose(window[:, 0, 0, 0].astype(int), [4 * i for i in indices], atol=3)
    resized = read_frames(path, indices, size=(16, 24))
    assert resized.shape == (5, 16, 24, 3)


def test_odd_size_and_fractional_fps(tmp_path):
    path = tmp_path / "odd.mp4"
    write_video(path, _ramp(6, 31, 45), fps=29.97)
    info = probe_video(path)
    assert (info.height, info.width, info.num_frames) == (31, 45, 6)
    assert info.fps == pytest.approx(29.97, abs=1e-3)


def test_gif(tmp_path):
    path = tmp_path / "clip.gif"
    write_gif(path, _ramp(5), fps=10)
    with Image.open(path) as image:
        assert image.n_frames == 5
        assert image.size == (48, 32)
        assert image.info["duration"] == 100


def test_bad_inputs_raise_clear_errors(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, _ramp(10), fps=10)
    with pytest.raises(VideoReadError, match="truncated"):
        read_frames(path, [8, 9, 10])  # frame 10 does not exist
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(VideoReadError, match="truncated.mp4"):
        probe_video(truncated)
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("hello")
    with pytest.raises(VideoReadError, match="notes.mp4"):
        read_video(not_a_video)
    with pytest.raises(VideoReadError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=10)
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        write_gif(tmp_path / "x.gif", np.zeros((8, 8, 3), np.uint8), fps=10)


# ------------------------------------------------------------------ issue 25: rotation metadata, variable frame rate
def _marked_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """Grey frames with a white top-left corner block, so that a test can tell how a frame was turned."""
    frames = np.full((num_frames, height, width, 3), 60, np.uint8)
    frames[:, :8, :8] = 255
    return frames


def _write_rotated(path, frames, degrees: int) -> None:
    """An mp4 whose display matrix says: turn the coded frames `degrees` counter-clockwise to show them (what a
    phone writes for a portrait clip: landscape pictures and a rotation)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        stream.options = {"crf": "0"}
        stream.set_display_rotation(degrees)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_rotation_metadata_is_applied_when_reading(tmp_path, degrees):
    import av

    coded = _marked_frames(6, 32, 48)
    path = tmp_path / f"phone_{degrees}.mp4"
    _write_rotated(path, coded, degrees)
    with av.open(str(path)) as container:  # the file says so, as FFmpeg reads it
        assert next(container.decode(video=0)).rotation % 360 == degrees % 360
    shown = np.rot90(coded, k=degrees // 90, axes=(1, 2))  # counter-clockwise, as the display matrix means
    info = probe_video(path)
    assert (info.height, info.width) == shown.shape[1:3]
    frames, _ = read_video(path)
    assert frames.shape == shown.shape
    assert np.abs(frames.astype(int) - shown).max() <= 3  # the white corner where the display puts it
    window = read_frames(path, [1, 3], size=(shown.shape[1] // 2, shown.shape[2] // 2))
    assert window.shape == (2, shown.shape[1] // 2, shown.shape[2] // 2, 3)
    corner = np.unravel_index(np.argmax(window[0, ..., 0]), window.shape[1:3])
    expected = np.unravel_index(np.argmax(shown[0, ..., 0]), shown.shape[1:3])
    assert (corner[0] < window.shape[1] // 2) == (expected[0] < shown.shape[1] // 2)
    assert (corner[1] < window.shape[2] // 2) == (expected[1] < shown.shape[2] // 2)


def test_a_portrait_phone_clip_trains_upright(tmp_path):
    """The dataset sees the clip as shown (portrait), not as coded (landscape, read sideways)."""
    from cosmos_transfer.data.dataset import VideoDataset
    from tests.tiny_datasets import make_tiny_dataset

    root = make_tiny_dataset(tmp_path / "data", stems=["phone"], num_frames=8, size=(32, 48))
    _write_rotated(os.path.join(root, "videos", "phone.mp4"), _marked_frames(8, 32, 48), -90)
    dataset = VideoDataset(root, num_frames=4, resolution=(48, 32), text_embedding_length=16, text_embedding_dim=8)
    assert (dataset.clips[0].height, dataset.clips[0].width) == (48, 32)
    video = dataset[0]["video"]  # [3, T, 48, 32]: no padding needed for the upright clip
    assert float(dataset[0]["padding_mask"].sum()) == 0
    shown = np.rot90(_marked_frames(1, 32, 48), k=-1, axes=(1, 2))[0]
    assert np.abs(video[:, 0].permute(1, 2, 0).numpy().astype(int) - shown).max() <= 3


def _write_vfr(path, steps_ms) -> np.ndarray:
    """An mp4 whose frames are `steps_ms` apart (variable frame rate); frame t is all 20 t."""
    import av
    from fractions import Fraction

    frames = np.stack([np.full((32, 48, 3), 20 * t, np.uint8) for t in range(len(steps_ms))])
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv444p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for frame, step in zip(frames, steps_ms):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = pts, Fraction(1, 1000)
            pts += step
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return frames


def test_a_variable_frame_rate_clip_is_read_frame_by_frame_not_refused_as_truncated(tmp_path):
    path = tmp_path / "vfr.mp4"
    frames = _write_vfr(path, [100, 50, 150, 100, 80, 120, 100, 100, 40, 160, 100, 100])
    assert probe_video(path).num_frames == 12
    levels = lambda video: [int(round(f.mean() / 20)) for f in video]  # noqa: E731
    assert levels(read_frames(path, list(range(12)))) == list(range(12))
    assert levels(read_frames(path, [3, 5, 9, 11])) == [3, 5, 9, 11]
    assert levels(read_video(path)[0]) == levels(frames)
