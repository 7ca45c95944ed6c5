"""Splitting a long video into model-sized windows (Cosmos' video2world continuation).

Window i covers pixel frames [start, start + window_frames). Every window after the first starts `overlap_frames`
before the previous one ends: those first frames are not generated again but given to the model as conditioning
(the previous window's output, encoded into its first latent frames), so consecutive windows join without a seam.
The last window may run past the end of the video; its inputs are padded by repeating the last frame and its extra
output frames are dropped.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Window:
    index: int
    start: int  # first pixel frame of the window (conditioning frames included)
    stop: int  # start + window_frames (may exceed the video's length)
    conditioning_frames: int  # pixel frames at the start taken from the previous window's output (0 for the first)
    keep_stop: int  # frames [start + conditioning_frames, keep_stop) of the output are new frames of the video


def plan_windows(num_frames: int, window_frames: int, overlap_frames: int) -> list[Window]:
    """Windows covering `num_frames` frames, each `window_frames` long, overlapping by `overlap_frames`."""
    if num_frames < 1:
        raise ValueError(f"plan_windows: the video has no frames (num_frames={num_frames})")
    if window_frames < 1:
        raise ValueError(f"plan_windows: window_frames must be >= 1, got {window_frames}")
    if not 0 <= overlap_frames < window_frames:
        raise ValueError(
            f"plan_windows: overlap_frames must be in [0, window_frames={window_frames}), got {overlap_frames}"
        )
    step = window_frames - overlap_frames
    windows = [Window(0, 0, window_frames, 0, min(window_frames, num_frames))]
    while windows[-1].keep_stop < num_frames:
        start = windows[-1].start + step
        stop = start + window_frames
        windows.append(Window(len(windows), start, stop, overlap_frames, min(stop, num_frames)))
    return windows


def window_slice(frames: np.ndarray, window: Window) -> np.ndarray:
    """Frames [start, stop) of a [T, ...] array, the last frame repeated past the end."""
    index = np.minimum(np.arange(window.start, window.stop), frames.shape[0] - 1)
    return frames[index]
