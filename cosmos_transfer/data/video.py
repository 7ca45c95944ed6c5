"""Frame-window and padding arithmetic for training clips, plus the decode step that applies both.

A training sample is a window of `num_frames` frames taken every `stride` frames from a clip, where the stride is
chosen from the clip's fps so that the window plays at (about) the target fps. Each frame is resized so that it fits
the target (H, W) with its aspect ratio kept (its longest side, relative to the target's shape, fills the target),
then reflection-padded, centred, to exactly (H, W). A padding mask marks the padded pixels with 1.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from cosmos_transfer.config.errors import DataError
from cosmos_transfer.video_io import read_frames

# Named training resolutions as (H, W). Both sides are multiples of 16: the tokenizer compresses 8x spatially and the
# DiT patches 2x2 latents. "720" and "480" are Cosmos' 16:9 sizes; the small ones are for CPU runs and tests.
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "720": (704, 1280),
    "480": (432, 768),
    "256": (192, 320),
    "tiny": (64, 64),
}


def resolve_resolution(resolution) -> tuple[int, int]:
    """A resolution name from RESOLUTIONS or an (H, W) pair -> (H, W)."""
    if isinstance(resolution, str):
        if resolution not in RESOLUTIONS:
            raise DataError(f"unknown resolution {resolution!r}; expected one of {sorted(RESOLUTIONS)} or (H, W)")
        return RESOLUTIONS[resolution]
    try:
        height, width = (int(v) for v in resolution)
    except (TypeError, ValueError):
        raise DataError(f"resolution must be a name or an (H, W) pair, got {resolution!r}") from None
    if height <= 0 or width <= 0:
        raise DataError(f"resolution must be positive, got {(height, width)}")
    return height, width


class BadSampleError(DataError):
    """A sample cannot be used (too short, unpaddable, missing files...). The message names the file and why."""


def describe_shape(shape: Sequence[int]) -> str:
    """(frames,) or (frames, height, width) -> '12 frames' or '12 frames of 32x48'."""
    return f"{shape[0]} frames" + (f" of {shape[1]}x{shape[2]}" if len(shape) == 3 else "")


def check_same_shape(what: str, path: str, shape: Sequence[int], reference: str, reference_path: str,
                     reference_shape: Sequence[int]) -> None:  # fmt: skip
    """Raise BadSampleError unless a control file's (frames, height, width) equals its clip's.

    A control is read frame for frame and resized exactly like its clip: one of another length would be out of step
    with it, one of another size or aspect would be stretched. Neither is ever done, so the shapes must be equal.
    """
    if tuple(shape) != tuple(reference_shape):
        raise BadSampleError(
            f"{what} {path} has {describe_shape(shape)}, but {reference} {reference_path} has "
            f"{describe_shape(reference_shape)}: a control needs exactly its video's frame count and frame size (it is "
            f"never stretched, cut or padded); make it again from that video, at its size"
        )


def frame_stride(clip_fps: float, target_fps: float | None) -> int:
    """Take every `stride`-th frame so that the window plays at about target_fps (never faster than the clip)."""
    if target_fps is None or target_fps <= 0:
        return 1
    return max(1, int(round(clip_fps / target_fps)))


def window_start_range(num_clip_frames: int, num_frames: int, stride: int) -> int:
    """How many start positions a window of num_frames at `stride` has in the clip (0 when the clip is too short)."""
    span = (num_frames - 1) * stride + 1
    return max(0, num_clip_frames - span + 1)


def window_indices(start: int, num_frames: int, stride: int) -> list[int]:
    return [start + i * stride for i in range(num_frames)]


@dataclasses.dataclass(frozen=True)
class Fit:
    """Where a frame sits inside the padded target: its resized size and the padding on each side."""

    height: int  # target H
    width: int  # target W
    valid_height: int  # the resized frame
    valid_width: int
    top: int
    left: int

    @property
    def bottom(self) -> int:
        return self.height - self.valid_height - self.top

    @property
    def right(self) -> int:
        return self.width - self.valid_width - self.left


def fit_frame(frame_height: int, frame_width: int, target: tuple[int, int]) -> Fit:
    """Resize (aspect kept) to fit inside target, centred; raises BadSampleError if reflection cannot fill the rest.

    Reflection padding mirrors the frame once, so each side's padding must be smaller than the resized frame. A clip
    whose aspect ratio is far from the target's (e.g. portrait video into a landscape resolution) fails this.
    """
    height, width = target
    if frame_height <= 0 or frame_width <= 0:
        raise BadSampleError(f"frame size {frame_height}x{frame_width} is empty")
    scale = min(height / frame_height, width / frame_width)
    valid_height = min(height, max(1, int(round(frame_height * scale))))
    valid_width = min(width, max(1, int(round(frame_width * scale))))
    top = (height - valid_height) // 2
    left = (width - valid_width) // 2
    fit = Fit(height, width, valid_height, valid_width, top, left)
    if max(fit.top, fit.bottom) >= valid_height or max(fit.left, fit.right) >= valid_width:
        raise BadSampleError(
            f"frame size {frame_height}x{frame_width} cannot be reflection-padded to {height}x{width}: resized to "
            f"{valid_height}x{valid_width}, its padding would exceed the frame; use a resolution closer to the clip's "
            f"aspect ratio"
        )
    return fit


def reflect_pad(frames: np.ndarray, fit: Fit) -> np.ndarray:
    """Pad [T, h, w, C] frames (h, w = the fit's valid size) to [T, H, W, C] by mirroring (without repeating the edge).

    The same result as np.pad(mode="reflect"), written with slices into one preallocated array: several times
    faster on 720p clips, where this runs for every sample.
    """
    num_frames, valid_h, valid_w, channels = frames.shape
    if (valid_h, valid_w) != (fit.valid_height, fit.valid_width):
        raise ValueError(f"frames of size {frames.shape[1:3]} do not match the fit {fit.valid_height}x{fit.valid_width}")
    if (valid_h, valid_w) == (fit.height, fit.width):
        return frames
    out = np.empty((num_frames, fit.height, fit.width, channels), frames.dtype)
    inside(out, fit)[:] = frames
    fill_reflection(out, fit)
    return out


def inside(padded: np.ndarray, fit: Fit) -> np.ndarray:
    """The view of the video inside padded frames [T, H, W, C]."""
    return padded[:, fit.top : fit.top + fit.valid_height, fit.left : fit.left + fit.valid_width]


def fill_reflection(padded: np.ndarray, fit: Fit) -> None:
    """Fill the padding of [T, H, W, C] frames, in place, by mirroring the inside (as np.pad's "reflect")."""
    top, bottom, left, right = fit.top, fit.bottom, fit.left, fit.right
    valid_h, valid_w = fit.valid_height, fit.valid_width
    cols = slice(left, left + valid_w)
    if top:
        padded[:, top - 1 :: -1][:, :top, cols] = padded[:, top + 1 : 2 * top + 1, cols]
    if bottom:
        end = top + valid_h
        padded[:, end:, cols] = padded[:, _backward(end - 2, end - 2 - bottom), cols]
    if left:  # columns last, over the full height, so that corners mirror the padded rows as np.pad does
        padded[:, :, :left] = padded[:, :, _backward(2 * left, left)]
    if right:
        end = left + valid_w
        padded[:, :, end:] = padded[:, :, _backward(end - 2, end - 2 - right)]


def decode_padded(path, indices: list[int], fit: Fit) -> np.ndarray:
    """Decode frames at `indices`, resized into the inside of a padded array, then mirror -> uint8 [T, H, W, 3].

    Decoding straight into the padded array saves a copy of the whole window (300 MB for 121 frames at 720p).
    """
    padded = np.empty((len(indices), fit.height, fit.width, 3), np.uint8)
    read_frames(path, indices, size=(fit.valid_height, fit.valid_width), out=inside(padded, fit))
    fill_reflection(padded, fit)
    return padded


def _backward(start: int, stop: int) -> slice:
    """start, start - 1, ..., stop + 1 (a stop of -1 must be None, or Python reads it as the last element)."""
    return slice(start, stop if stop >= 0 else None, -1)


def padding_mask(fit: Fit) -> np.ndarray:
    """float32 [1, H, W]: 1 on padding, 0 on the video."""
    mask = np.ones((1, fit.height, fit.width), np.float32)
    mask[:, fit.top : fit.top + fit.valid_height, fit.left : fit.left + fit.valid_width] = 0.0
    return mask
