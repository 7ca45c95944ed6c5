"""cosmos_transfer.video_io: mp4 and GIF round trips, windowed decoding, clear errors on bad files."""

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
