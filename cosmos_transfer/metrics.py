"""Video quality and control-adherence metrics (the Cosmos-Transfer1 paper's metrics that need no extra model).

All functions take uint8 RGB videos shaped [T, H, W, 3] (numpy arrays or torch tensors) of equal shape.

- `edge_f1`: F1 of the generated video's Canny edges against the control edge map, counted over every pixel of every
  frame (edge pixels are the positives). 1.0 = the same edges.
- `blur_ssim`: SSIM between the blurred generated video and the blurred input video, with the same blur the `vis`
  control uses (so that it measures adherence to the coarse layout/colour the control gives, not to fine detail).
- `psnr`: mean over frames of 10 log10(255^2 / MSE); a frame identical to its reference counts as PSNR_CAP dB so that
  the mean stays finite.
- `ssim`: Wang et al. 2004 SSIM (Gaussian window 11 / sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255) computed per
  channel and averaged over channels, pixels and frames.
"""

from __future__ import annotations

import cv2
import numpy as np

from cosmos_transfer.data.controls import EDGE_PRESETS, blur_control, edge_control

PSNR_CAP = 100.0
_SSIM_K1, _SSIM_K2, _SSIM_WINDOW, _SSIM_SIGMA = 0.01, 0.03, 11, 1.5


def as_video(video, name: str = "video") -> np.ndarray:
    """uint8 [T, H, W, 3] numpy view of a numpy array or torch tensor, with a clear error for anything else."""
    if hasattr(video, "detach"):
        video = video.detach().cpu().numpy()
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] == 0:
        raise ValueError(f"{name}: expected a video shaped [T, H, W, 3] with T >= 1, got {video.shape}")
    if video.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 frames (0..255), got {video.dtype}")
    return video


def _check_pair(a, b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_video(a, names[0]), as_video(b, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape [T, H, W, 3], got {a.shape} and {b.shape}"
        )
    return a, b


def psnr(video, reference) -> float:
    video, reference = _check_pair(video, reference, ("video", "reference"))
    diff = video.astype(np.float64) - reference.astype(np.float64)
    mse = (diff**2).reshape(len(diff), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        per_frame = np.where(mse > 0, 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-300)), PSNR_CAP)
    return float(np.minimum(per_frame, PSNR_CAP).mean())


def _ssim_image(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two float64 single-channel images: the mean of the SSIM map over the valid (unpadded) region."""
    c1, c2 = (_SSIM_K1 * 255.0) ** 2, (_SSIM_K2 * 255.0) ** 2

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (_SSIM_WINDOW, _SSIM_WINDOW), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(video, reference) -> float:
    video, reference = _check_pair(video, reference, ("video", "reference"))
    scores = [
        _ssim_image(frame[..., c].astype(np.float64), ref[..., c].astype(np.float64))
        for frame, ref in zip(video, reference)
        for c in range(3)
    ]
    return float(np.mean(scores))


def blur_ssim(video, reference, strength: str = "medium") -> float:
    """SSIM between blurred copies of `video` and `reference`, blurred like the `vis` control at `strength`."""
    video, reference = _check_pair(video, reference, ("video", "reference"))
    return ssim(blur_control(video, preset=strength), blur_control(reference, preset=strength))


def canny_edges(video, threshold: str | tuple[int, int] = "medium") -> np.ndarray:
    """Boolean edge maps [T, H, W] of a video, with a named Cosmos preset or explicit (lower, upper) thresholds."""
    video = as_video(video)
    if isinstance(threshold, str):
        if threshold not in EDGE_PRESETS:
            raise ValueError(f"unknown Canny threshold preset {threshold!r}; expected one of {list(EDGE_PRESETS)}")
        threshold = EDGE_PRESETS[threshold]
    lower, upper = threshold
    return edge_control(video, lower, upper)[..., 0] > 0


def edge_map(control_video) -> np.ndarray:
    """Boolean edge maps [T, H, W] from an edge control video (white edges on black; lossy codecs tolerated)."""
    return as_video(control_video, "edge control").max(axis=-1) >= 128


def f1_score(predicted: np.ndarray, target: np.ndarray) -> float:
    """F1 of boolean predictions against boolean targets of the same shape; 1.0 when both are empty."""
    if predicted.shape != target.shape:
        raise ValueError(f"f1_score: shapes differ: {predicted.shape} vs {target.shape}")
    true_pos = int(np.count_nonzero(predicted & target))
    false_pos = int(np.count_nonzero(predicted & ~target))
    false_neg = int(np.count_nonzero(~predicted & target))
    if true_pos + false_pos + false_neg == 0:
        return 1.0
    return 2.0 * true_pos / (2.0 * true_pos + false_pos + false_neg)


def edge_f1(video, control_edges, threshold: str | tuple[int, int] = "medium") -> float:
    """F1 of the Canny edges of `video` against an edge control video (uint8 [T, H, W, 3], edges white)."""
    video, control_edges = _check_pair(video, control_edges, ("video", "edge control"))
    return f1_score(canny_edges(video, threshold), edge_map(control_edges))


def _match_size(reference: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    if reference.shape[1:3] == (height, width):
        return reference
    return np.stack([cv2.resize(frame, (width, height), interpolation=interpolation) for frame in reference])


def evaluate_video(
    video,
    *,
    input_video=None,
    edge_video=None,
    ground_truth=None,
    canny_threshold: str = "medium",
    blur_strength: str = "medium",
) -> dict[str, float]:
    """Every metric the given references allow, as a flat dict (what scripts/evaluate.py writes as JSON).

    edge_f1 against `edge_video` when given, else against the Canny edges of `input_video`; blur_ssim against
    `input_video`; psnr and ssim against `ground_truth`. References of another frame size are resized to the
    video's (area interpolation; nearest for edge maps); a different frame count is an error.
    """
    video = as_video(video, "generated video")
    num_frames, height, width, _ = video.shape
    references = {"input video": input_video, "edge video": edge_video, "ground truth": ground_truth}
    for name, reference in references.items():
        if reference is not None and as_video(reference, name).shape[0] != num_frames:
            raise ValueError(
                f"{name} has {as_video(reference, name).shape[0]} frames but the generated video has {num_frames}: "
                "compare videos of the same length"
            )
    if input_video is None and edge_video is None and ground_truth is None:
        raise ValueError("nothing to compare against: give an input video, an edge control video or a ground truth")
    results: dict[str, float] = {}
    if input_video is not None:
        input_video = _match_size(as_video(input_video), height, width, cv2.INTER_AREA)
    if edge_video is not None:
        edges = _match_size(as_video(edge_video), height, width, cv2.INTER_NEAREST)
        results["edge_f1"] = edge_f1(video, edges, canny_threshold)
    elif input_video is not None:
        results["edge_f1"] = f1_score(canny_edges(video, canny_threshold), canny_edges(input_video, canny_threshold))
    if input_video is not None:
        results["blur_ssim"] = blur_ssim(video, input_video, blur_strength)
    if ground_truth is not None:
        ground_truth = _match_size(as_video(ground_truth), height, width, cv2.INTER_AREA)
        results["psnr"] = psnr(video, ground_truth)
        results["ssim"] = ssim(video, ground_truth)
    return results
