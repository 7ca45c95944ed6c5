"""Inputs of a generation, made from a spec: the input video, the control videos and the control weight maps.

Frames are fitted to the model's resolution exactly as in training (cosmos_transfer/data/video.py: resized with the
aspect ratio kept, reflection-padded, a padding mask marking the padding), and the `edge` / `vis` controls are
computed by the training code (cosmos_transfer/data/controls.py) with a named preset instead of random parameters.
Every control video and weight video must have the input video's frame count and frame size: each is fitted with the
input's geometry, so one of another size or aspect would be stretched; it is refused instead, naming both files.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from cosmos_transfer.data import controls as control_ops
from cosmos_transfer.data.video import BadSampleError, Fit, check_same_shape, fit_frame, padding_mask, reflect_pad
from cosmos_transfer.inference.spec import InferenceSpec, SpecError
from cosmos_transfer.video_io import VideoReadError, read_video


@dataclasses.dataclass
class GenerationInputs:
    """Everything a generation needs besides the model and the text, at the model's resolution."""

    fit: Fit  # where the video sits in the padded frame
    fps: float
    input_video: np.ndarray | None  # uint8 [T, H, W, 3] (padded), None when the spec has no input video
    controls: dict[str, np.ndarray]  # hint key -> uint8 [T, H, W, 3] (padded)
    weights: dict[str, float | np.ndarray]  # hint key -> a number, or float32 [T, H, W] in [0, 1] (padded)
    padding_mask: np.ndarray  # float32 [1, H, W], 1 on padding

    @property
    def num_frames(self) -> int:
        return next(iter(self.controls.values())).shape[0]

    def crop(self, frames: np.ndarray) -> np.ndarray:
        """[T, H, W, C] at the model's resolution -> the video region [T, h, w, C] (padding removed)."""
        fit = self.fit
        return frames[:, fit.top : fit.top + fit.valid_height, fit.left : fit.left + fit.valid_width]


def _read(path: str, what: str) -> tuple[np.ndarray, float]:
    try:
        return read_video(path)
    except VideoReadError as error:
        raise SpecError(f"{what}: {error}") from error


def _fit_frames(frames: np.ndarray, fit: Fit, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Resize [T, h0, w0, C] frames to the fit's valid size and reflection-pad them to the full frame."""
    size = (fit.valid_width, fit.valid_height)
    resized = np.stack([cv2.resize(frame, size, interpolation=interpolation) for frame in frames])
    if resized.ndim == 3:  # cv2 drops a single channel
        resized = resized[..., None]
    return reflect_pad(resized, fit)


def _rgb(frames: np.ndarray) -> np.ndarray:
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def computed_control(key: str, frames: np.ndarray, canny_threshold: str, blur_strength: str) -> np.ndarray:
    """The `edge` or `vis` control of uint8 frames [T, h, w, 3] with inference presets -> uint8 [T, h, w, 3]."""
    if key == "edge":
        if canny_threshold not in control_ops.EDGE_PRESETS:
            raise SpecError(
                f"unknown canny_threshold {canny_threshold!r}; expected one of {list(control_ops.EDGE_PRESETS)}"
            )
        lower, upper = control_ops.EDGE_PRESETS[canny_threshold]
        return _rgb(control_ops.edge_control(np.ascontiguousarray(frames), lower, upper))
    if key == "vis":
        if blur_strength not in control_ops.BLUR_PRESETS:
            raise SpecError(
                f"unknown blur_strength {blur_strength!r}; expected one of {list(control_ops.BLUR_PRESETS)}"
            )
        return control_ops.blur_control(frames, preset=blur_strength)
    raise SpecError(f"the {key} control cannot be computed from the input video; give its 'input_control'")


@dataclasses.dataclass(frozen=True)
class _Reference:
    """The video every other one must match: the input video, or the first control video when there is none."""

    what: str  # as the spec names it, e.g. "input_video_path"
    path: str
    shape: tuple[int, int, int]  # frames, height, width

    def check(self, what: str, path: str, frames: np.ndarray, source: str) -> None:
        try:
            check_same_shape(what, path, frames.shape[:3], self.what, self.path, self.shape)
        except BadSampleError as error:
            raise SpecError(f"{source}: {error}") from None


def weight_map(path: str, reference: _Reference, fit: Fit, key: str, source: str) -> np.ndarray:
    """A weight video of the reference's shape -> float32 [T, H, W] in [0, 1] (brightness / 255), fitted likewise."""
    frames, _ = _read(path, f"{source}: '{key}' control_weight")
    reference.check(f"'{key}' control_weight", path, frames, source)
    gray = frames.astype(np.float32).mean(axis=-1, keepdims=True) / 255.0
    return _fit_frames(gray, fit, cv2.INTER_LINEAR)[..., 0]


def prepare_inputs(
    spec: InferenceSpec,
    resolution: tuple[int, int],
    *,
    canny_threshold: str = "medium",
    blur_strength: str = "medium",
    max_frames: int | None = None,
) -> GenerationInputs:
    """Read the spec's videos and build the padded controls and weight maps at `resolution` (H, W).

    All videos (input, control videos, weight videos) must have the same number of frames and the same frame size;
    `max_frames` then keeps the first frames only.
    """
    source = spec.source
    input_frames, fps, reference = None, None, None
    if spec.input_video is not None:
        input_frames, fps = _read(spec.input_video, f"{source}: input_video_path")
        reference = _Reference("input_video_path", spec.input_video, input_frames.shape[:3])
    raw_controls: dict[str, np.ndarray] = {}
    for key, control in spec.controls.items():
        if control.input_control is not None:
            frames, control_fps = _read(control.input_control, f"{source}: '{key}' input_control")
            if reference is None:
                reference = _Reference(f"'{key}' input_control", control.input_control, frames.shape[:3])
            reference.check(f"'{key}' input_control", control.input_control, frames, source)
            raw_controls[key] = _rgb(frames)
            fps = fps if fps is not None else control_fps
    full_length, height, width = reference.shape
    num_frames = full_length if max_frames is None else min(full_length, max_frames)

    try:
        fit = fit_frame(height, width, resolution)
    except ValueError as error:
        raise SpecError(f"{source}: {error}") from error

    padded_input = _fit_frames(input_frames[:num_frames], fit) if input_frames is not None else None
    controls: dict[str, np.ndarray] = {}
    for key in spec.controls:
        if key in raw_controls:
            controls[key] = _fit_frames(raw_controls[key][:num_frames], fit)
        else:  # computed on the padded video, as the training dataset does
            controls[key] = computed_control(key, padded_input, canny_threshold, blur_strength)
    # A weight video has one frame per frame of the full input (before max_frames cuts it).
    weights: dict[str, float | np.ndarray] = {}
    for key, control in spec.controls.items():
        if control.weight_is_map:
            weights[key] = weight_map(control.control_weight, reference, fit, key, source)[:num_frames]
        else:
            weights[key] = float(control.control_weight)
    return GenerationInputs(
        fit=fit,
        fps=float(fps) if fps else 24.0,
        input_video=padded_input,
        controls=controls,
        weights=weights,
        padding_mask=padding_mask(fit),
    )
