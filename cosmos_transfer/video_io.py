"""Reading and writing video files: mp4 (H.264 through PyAV) and GIF (through Pillow).

Frames are always uint8 RGB arrays shaped [T, H, W, 3] (numpy, or a torch tensor on input).

    write_video("clip.mp4", frames, fps=24)
    frames, fps = read_video("clip.mp4")
    info = probe_video("clip.mp4")                        # frame count, fps, size without decoding
    window = read_frames("clip.mp4", [10, 12, 14], size=(352, 640))   # only these frames, resized while decoding
    write_gif("clip.gif", frames, fps=8)

Every problem with a file (missing, not a video, corrupt, truncated) raises VideoReadError naming the file.
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from typing import Sequence

import av
import numpy as np

try:  # torch is optional here so that the module stays usable from light scripts
    import torch
except ImportError:  # pragma: no cover
    torch = None


class VideoReadError(RuntimeError):
    """A video file could not be read (missing, corrupt, truncated or too short)."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


def _as_uint8_frames(frames, what: str) -> np.ndarray:
    if torch is not None and isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what}: expected frames shaped [T, H, W, 3], got {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 frames (0..255), got {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError(f"{what}: no frames to write")
    return np.ascontiguousarray(frames)


def write_video(path: str | os.PathLike, frames, fps: float, crf: int = 18, pix_fmt: str | None = None) -> None:
    """Write uint8 frames [T, H, W, 3] to an H.264 mp4.

    By default even sizes use yuv420p (plays everywhere); odd sizes, which 4:2:0 cannot hold, use yuv444p. Pass
    pix_fmt="yuv444p" to keep sharp colour edges in small frames. `crf` is x264's quality (0 = lossless,
    18 = visually lossless, 23 = x264's default).
    """
    frames = _as_uint8_frames(frames, f"write_video({path})")
    if not fps > 0:
        raise ValueError(f"write_video({path}): fps must be positive, got {fps}")
    _, height, width, _ = frames.shape
    if pix_fmt is None:
        pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)


def _open(path: str | os.PathLike):
    if not os.path.isfile(path):
        raise VideoReadError(f"video file not found: {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoReadError(f"cannot open video {path}: {error}") from error
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"no video stream in {path} (not a video, or corrupt/truncated)")
    return container


def _stream_fps(stream, path) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoReadError(f"cannot determine the frame rate of {path}")
    return float(rate)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and size of a video, read from its header (counting packets when the header has no count)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = _stream_fps(stream, path)
        num_frames = stream.frames
        if num_frames <= 0:  # some containers (webm, some mkv) have no frame count: count packets, no decoding
            try:
                num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
            except av.FFmpegError as error:
                raise VideoReadError(f"corrupt video {path}: {error}") from error
        height, width = stream.codec_context.height, stream.codec_context.width
        if num_frames <= 0 or height <= 0 or width <= 0:
            raise VideoReadError(f"empty or unreadable video {path} ({num_frames} frames, {height}x{width})")
        return VideoInfo(num_frames=num_frames, fps=fps, height=height, width=width)


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    height, width = size
    # Resizing inside swscale, during the colour conversion, is much cheaper than converting then resizing.
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    size: tuple[int, int] | None = None,
    num_threads: int = 0,
) -> np.ndarray:
    """Decode only the frames at `indices` (increasing, 0-based) -> uint8 [len(indices), H, W, 3].

    Seeks to the key frame before the first index, so a window late in a long clip costs little more than one near
    its start. `size=(H, W)` resizes while decoding. `num_threads=0` lets FFmpeg choose; data-loader workers that
    already run in parallel are better served by 1 or 2.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError(f"read_frames({path}): no frame indices given")
    if any(b <= a for a, b in zip(indices, indices[1:])) or indices[0] < 0:
        raise ValueError(f"read_frames({path}): indices must be non-negative and increasing, got {indices[:8]}...")
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = num_threads
        fps = _stream_fps(stream, path)
        time_base = stream.time_base
        start_pts = stream.start_time or 0

        def frame_index(frame) -> int:
            if frame.pts is None:
                return -1
            return int(round(float((frame.pts - start_pts) * time_base) * fps))

        def decode_from(first_index: int) -> list[np.ndarray]:
            if first_index > 0:
                target = start_pts + int(first_index / fps / time_base)
                container.seek(target, stream=stream, backward=True, any_frame=False)
            else:
                container.seek(start_pts, stream=stream, backward=True, any_frame=False)
            wanted = iter(indices)
            next_wanted = next(wanted)
            out: list[np.ndarray] = []
            position = None
            for frame in container.decode(stream):
                current = frame_index(frame)
                # Frames without timestamps are counted from the previous one.
                position = current if current >= 0 else (0 if position is None else position + 1)
                if not out and position > next_wanted:
                    return []  # the seek landed past the window: caller retries from the start
                if position == next_wanted:
                    out.append(_to_rgb(frame, size))
                    next_wanted = next(wanted, None)
                    if next_wanted is None:
                        break
            return out

        try:
            frames = decode_from(indices[0])
            if not frames and indices[0] > 0:
                frames = decode_from(0)
        except av.FFmpegError as error:
            raise VideoReadError(f"corrupt video {path}: {error}") from error
    if len(frames) != len(indices):
        raise VideoReadError(
            f"video {path} is shorter than expected or truncated: decoded {len(frames)} of {len(indices)} "
            f"requested frames (indices {indices[0]}..{indices[-1]})"
        )
    return np.stack(frames)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a whole video -> (uint8 frames [T, H, W, 3], fps)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream, path)
        try:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        except av.FFmpegError as error:
            raise VideoReadError(f"corrupt video {path}: {error}") from error
    if not frames:
        raise VideoReadError(f"no frames could be decoded from {path}")
    return np.stack(frames), fps


def write_gif(path: str | os.PathLike, frames, fps: float) -> None:
    """Write uint8 frames [T, H, W, 3] as a looping GIF (GIF stores delays in 1/100 s, so fps is rounded)."""
    from PIL import Image

    frames = _as_uint8_frames(frames, f"write_gif({path})")
    if not fps > 0:
        raise ValueError(f"write_gif({path}): fps must be positive, got {fps}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    duration_ms = max(20, int(round(1000.0 / fps / 10.0)) * 10)
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0, optimize=False)
