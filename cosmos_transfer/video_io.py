"""Reading and writing video files: mp4 (H.264 through PyAV) and GIF (through Pillow).

Frames are always uint8 RGB arrays shaped [T, H, W, 3] (numpy, or a torch tensor on input).

    write_video("clip.mp4", frames, fps=24)
    frames, fps = read_video("clip.mp4")
    info = probe_video("clip.mp4")                        # frame count, fps, size without decoding
    window = read_frames("clip.mp4", [10, 12, 14], size=(352, 640))   # only these frames, resized while decoding
    write_gif("clip.gif", frames, fps=8)

Every problem with a file (missing, not a video, corrupt, truncated) raises VideoReadError naming the file. That
includes damage the decoder hides: FFmpeg conceals errors in a damaged H.264 picture (it patches it from its
neighbours) and decodes on; we refuse any frame it marks as concealed (frame.is_corrupt) instead of returning it.

Frames are returned as they are shown, not as they are coded: a clip whose display matrix turns its pictures (phones
store a portrait clip as landscape pictures and a 90-degree rotation) is read turned, and its size is the shown one
(probe_video reads the rotation from the mp4 track header, the decoder gives it with every frame). Frame i is the
i-th picture in display order, also in a variable-frame-rate clip (its timestamps are not evenly spaced); `fps` is
the average frame rate.
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from typing import Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from cosmos_transfer.config.errors import UserError

try:  # torch is optional here so that the module stays usable from light scripts
    import torch
except ImportError:  # pragma: no cover
    torch = None


class VideoReadError(UserError, RuntimeError):
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


def _rotation_quarters(degrees: float, path) -> int:
    """A display rotation (degrees counter-clockwise) as quarter turns; VideoReadError for other angles."""
    quarters = int(round(degrees / 90))
    if abs(degrees - 90 * quarters) > 0.5:
        raise VideoReadError(f"video {path} asks to be shown rotated by {degrees:g} degrees; only multiples of 90 are "
                             "applied: re-encode it upright (e.g. ffmpeg -i in.mp4 out.mp4 applies the rotation)")
    return quarters % 4


def _box_payloads(file, start: int, end: int):
    """(type, payload start, payload end) of the ISO-BMFF (mp4/mov) boxes between start and end."""
    position = start
    while position + 8 <= end:
        file.seek(position)
        header = file.read(16)
        if len(header) < 8:
            return
        size, kind = int.from_bytes(header[:4], "big"), header[4:8]
        offset = 8
        if size == 1 and len(header) == 16:  # a 64-bit size follows
            size, offset = int.from_bytes(header[8:16], "big"), 16
        elif size == 0:  # to the end of the file
            size = end - position
        if size < offset:
            return
        yield kind, position + offset, min(position + size, end)
        position += size


def _mp4_rotation(path) -> float:
    """The display rotation (degrees counter-clockwise, as FFmpeg's av_display_rotation_get) of the first video
    track of an mp4/mov file, from its track header's matrix: FFmpeg gives it only with decoded frames, and probing
    must not decode. 0 for other containers or when there is none."""
    import math
    import struct

    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        size = file.tell()
        for kind, start, end in _box_payloads(file, 0, size):
            if kind != b"moov":
                continue
            for kind, trak_start, trak_end in _box_payloads(file, start, end):
                if kind != b"trak":
                    continue
                matrix, handler = None, None
                for kind, box_start, box_end in _box_payloads(file, trak_start, trak_end):
                    if kind == b"tkhd":
                        file.seek(box_start)
                        version = file.read(1)
                        file.seek(box_start + (52 if version == b"\x01" else 40))  # past the times, ids and volume
                        raw = file.read(36)
                        matrix = struct.unpack(">9i", raw) if len(raw) == 36 else None  # None: a truncated header
                    elif kind == b"mdia":
                        for kind, hdlr_start, _ in _box_payloads(file, box_start, box_end):
                            if kind == b"hdlr":
                                file.seek(hdlr_start + 8)  # version/flags, pre_defined
                                handler = file.read(4)
                if handler == b"vide" and matrix is not None:
                    a, b = matrix[0] / 65536, matrix[1] / 65536
                    return -math.degrees(math.atan2(b, a)) if (a or b) else 0.0
    return 0.0


def _shown_size(stream, path) -> tuple[int, int]:
    """(height, width) of a video stream's frames as shown (after its display rotation)."""
    height, width = stream.codec_context.height, stream.codec_context.width
    return (width, height) if _rotation_quarters(_mp4_rotation(path), path) % 2 else (height, width)


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
        height, width = _shown_size(stream, path)
        if num_frames <= 0 or height <= 0 or width <= 0:
            raise VideoReadError(f"empty or unreadable video {path} ({num_frames} frames, {height}x{width})")
        return VideoInfo(num_frames=num_frames, fps=fps, height=height, width=width)


def _decode_in_one_thread(stream) -> None:
    """Decode without threads, the one mode in which FFmpeg reports concealed errors reliably.

    Under slice threads (PyAV's default) FFmpeg's H.264 decoder turns error resilience off, and with it the flag that
    marks a damaged frame; under frame threads the flag is sometimes missed, and closing the decoder of a damaged clip
    early (as a window read does) can hang for good (benchmarks/corrupt_video.py: 2 of 30 decodes missed the flag, 12
    of 30 early closes hung). The CPU time per frame is the same either way, and data-loader workers decode several
    clips in parallel.
    """
    stream.thread_type = "NONE"
    stream.thread_count = 1


def _check_intact(frame: av.VideoFrame, path, index: int) -> None:
    if frame.is_corrupt:
        raise VideoReadError(
            f"corrupt video {path}: frame {index} is damaged (the decoder found errors in it and concealed them, "
            f"so it and the frames predicted from it would be garbage); re-encode the clip from its source or "
            f"remove it"
        )


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None, reformatter: VideoReformatter, path) -> np.ndarray:
    """The frame as shown (turned by its display rotation), in RGB, at `size` (the shown frame's (H, W)) if given."""
    quarters = _rotation_quarters(frame.rotation, path) if frame.rotation else 0
    if size is not None and quarters % 2:
        size = (size[1], size[0])  # resized as coded, turned after
    # One reformatter per video keeps its swscale context between frames; frame.to_ndarray(format=...) builds a new
    # one for every frame, which costs more than the conversion itself on small frames.
    if size is None or size == (frame.height, frame.width):
        rgb = reformatter.reformat(frame, format="rgb24").to_ndarray()
    else:
        height, width = size
        # Resizing inside swscale, during the colour conversion, costs about half of converting and then resizing
        # with cv2's INTER_AREA.
        rgb = reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                   interpolation="AREA").to_ndarray()
    return np.rot90(rgb, k=quarters) if quarters else rgb  # counter-clockwise, as the display matrix means


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    size: tuple[int, int] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode only the frames at `indices` (increasing, 0-based) -> uint8 [len(indices), H, W, 3].

    Seeks to the key frame before the first index, so a window late in a long clip costs little more than one near
    its start. `size=(H, W)` resizes while decoding. `out`, a uint8 array [len(indices), H, W, 3] (it may be a view
    into a larger one, such as the inside of a padded video), receives the frames and is returned. Raises
    VideoReadError on any damaged frame the window depends on (every picture decoded from the key frame on).
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError(f"read_frames({path}): no frame indices given")
    if any(b <= a for a, b in zip(indices, indices[1:])) or indices[0] < 0:
        raise ValueError(f"read_frames({path}): indices must be non-negative and increasing, got {indices[:8]}...")
    with _open(path) as container:
        stream = container.streams.video[0]
        if out is None:
            height, width = size or _shown_size(stream, path)
            out = np.empty((len(indices), height, width, 3), np.uint8)
        if out.shape[0] != len(indices) or out.shape[3] != 3 or (size is not None and out.shape[1:3] != tuple(size)):
            raise ValueError(f"read_frames({path}): out has shape {out.shape}, expected [{len(indices)}, H, W, 3]")
        _decode_in_one_thread(stream)
        fps = _stream_fps(stream, path)
        time_base = stream.time_base
        start_pts = stream.start_time or 0

        def frame_index(pts) -> int:
            if pts is None:
                return -1
            return int(round(float((pts - start_pts) * time_base) * fps))

        def decode_from(first_index: int, by_count: bool = False) -> int:
            """Decode into `out` from the key frame before first_index; returns how many frames were stored.

            Frames are numbered by their timestamps (so that a seek can start near the window); `by_count`: by
            counting them from the start of the clip, for a clip whose timestamps are not evenly spaced."""
            container.seek(start_pts + int(first_index / fps / time_base), stream=stream, backward=True,
                           any_frame=False)  # fmt: skip
            reformatter = VideoReformatter()
            stored, position, key_position = 0, None, None
            # Pictures are decoded in file order but come out in display order, a few later. A damaged picture is
            # flagged only on itself, not on the frames predicted from it, so decoding goes on until every picture
            # sent to the decoder before the window's last frame came out has come out and been checked.
            sent, received, must_receive = 0, 0, None
            for packet in container.demux(stream):
                if packet.size:
                    sent += 1
                    if key_position is None and packet.is_keyframe:
                        key_position = frame_index(packet.pts)
                for frame in packet.decode():
                    received += 1
                    current = -1 if by_count else frame_index(frame.pts)
                    if current >= 0 and position is not None and current != position + 1:
                        raise _UnevenTimestamps  # variable frame rate: timestamps do not number the frames
                    # Frames without timestamps are counted from the previous one.
                    position = current if current >= 0 else (0 if position is None else position + 1)
                    if key_position is not None and 0 <= position < key_position:
                        continue  # a leading picture of an open GOP: it needs frames before the seek; never wanted
                    _check_intact(frame, path, position)
                    if stored == 0 and position > indices[0]:
                        return 0  # the seek landed past the window: the caller retries from the start
                    if stored < len(indices) and position == indices[stored]:
                        rgb = _to_rgb(frame, size, reformatter, path)
                        if rgb.shape != out.shape[1:]:
                            raise VideoReadError(f"video {path} changes frame size mid-stream: {rgb.shape[:2]}")
                        out[stored] = rgb
                        stored += 1
                        if stored == len(indices):
                            must_receive = sent
                    if must_receive is not None and received >= must_receive:
                        return stored
            return stored

        try:
            try:
                stored = decode_from(indices[0])
                if stored == 0 and indices[0] > 0:
                    stored = decode_from(0)
            except _UnevenTimestamps:  # a variable frame rate: count the frames from the start (slower, exact)
                stored = decode_from(0, by_count=True)
        except av.FFmpegError as error:
            raise VideoReadError(f"corrupt video {path}: {error}") from error
    if stored != len(indices):
        raise VideoReadError(
            f"video {path} is shorter than expected or truncated: decoded {stored} of {len(indices)} "
            f"requested frames (indices {indices[0]}..{indices[-1]})"
        )
    return out


class _UnevenTimestamps(Exception):
    """Raised inside read_frames when a clip's timestamps do not number its frames (a variable frame rate)."""


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a whole video -> (uint8 frames [T, H, W, 3], fps); raises VideoReadError on any damaged frame."""
    with _open(path) as container:
        stream = container.streams.video[0]
        _decode_in_one_thread(stream)
        fps = _stream_fps(stream, path)
        try:
            reformatter = VideoReformatter()
            frames = []
            for frame in container.decode(stream):
                _check_intact(frame, path, len(frames))
                frames.append(np.ascontiguousarray(_to_rgb(frame, None, reformatter, path)))
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
