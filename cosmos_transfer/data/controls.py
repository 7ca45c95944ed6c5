"""Control inputs (the `hint_key` group): each turns a clip window into a uint8 video [T, h, w, 3] (edge: [T, h, w, 1]).

- `edge`: Canny edges of the frames. Training draws random thresholds (Cosmos: lower in [20, 100), upper = lower +
  [50, 150), at most 255); inference uses a named preset (EDGE_PRESETS).
- `vis`: a blurred copy. Training draws a bilateral and/or Gaussian blur (probabilities 0.5 / 0.3 / 0.2 for
  bilateral / Gaussian / both, after an optional 1-4x downscale) and then a bicubic down-up resampling by 4-16x;
  inference uses a named preset strength (BLUR_PRESETS). Kernel sizes are Cosmos' 720p values scaled with the frame;
  the bilateral filter runs at a resolution where it is at most 9 pixels wide (same footprint, bounded cost).
- `depth`: a precomputed depth video aligned frame by frame with the clip (decoded by the dataset).
- `seg`: precomputed masks, each painted in its own colour (colours drawn per sample), largest first; training keeps
  a random subset of the objects, as Cosmos does.
- `keypoint`: precomputed COCO-WholeBody keypoints (133 per person) drawn on black in the OpenPose style that
  Cosmos-Transfer1 uses.

Every random choice comes from the numpy Generator passed in, which the dataset derives from (seed, epoch, index),
so a sample's control is the same whichever worker makes it and whenever.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from cosmos_transfer.data.video import BadSampleError

# (lower, upper) Canny thresholds, as Cosmos-Transfer1 names them for inference.
EDGE_PRESETS: dict[str, tuple[int, int]] = {
    "very_low": (20, 50),
    "low": (50, 100),
    "medium": (100, 200),
    "high": (200, 300),
    "very_high": (300, 400),
}
# Down-up resampling factor of the `vis` control at inference (Cosmos: min 4, max 16, medium their mean).
BLUR_PRESETS: dict[str, int] = {"none": 1, "very_low": 4, "low": 4, "medium": 10, "high": 16, "very_high": 16}

# Cosmos' blur parameters are chosen for 704-pixel-high frames; smaller frames get proportionally smaller kernels.
_REFERENCE_SIZE = 704.0
_MAX_BILATERAL_DIAMETER = 9


# ----------------------------------------------------------------------------------------------------------- edge
def random_edge_thresholds(rng: np.random.Generator) -> tuple[int, int]:
    lower = int(rng.integers(20, 100))
    upper = min(255, lower + int(rng.integers(50, 150)))
    return lower, upper


def edge_control(frames: np.ndarray, lower: int, upper: int) -> np.ndarray:
    """Canny edges of uint8 RGB frames [T, h, w, 3] -> uint8 [T, h, w, 1], 0 or 255.

    One channel: the dataset pads it and then shows it as RGB without copying (all three channels equal).
    """
    edges = np.empty(frames.shape[:3], np.uint8)
    for frame, out in zip(frames, edges):
        cv2.Canny(frame, lower, upper, edges=out)  # written in place: no per-frame arrays to stack
    return edges[..., None]


# ------------------------------------------------------------------------------------------------------------ vis
def _odd(value: float, minimum: int = 3) -> int:
    value = max(minimum, int(round(value)))
    return value if value % 2 == 1 else value + 1


def _resize_all(frames: np.ndarray, width: int, height: int, interpolation: int) -> np.ndarray:
    return np.stack([cv2.resize(frame, (width, height), interpolation=interpolation) for frame in frames])


def _down_up(frames: np.ndarray, factor: int) -> np.ndarray:
    """Bicubic resampling down by `factor` and back, keeping at least 4 pixels per side."""
    _, height, width, _ = frames.shape
    factor = min(factor, max(1, min(height, width) // 4))
    if factor <= 1:
        return frames
    small = _resize_all(frames, max(1, width // factor), max(1, height // factor), cv2.INTER_AREA)
    return _resize_all(small, width, height, cv2.INTER_CUBIC)


def _gaussian(frames: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(frame, (ksize, ksize), sigmaX=sigma) for frame in frames])


def _bilateral(frames: np.ndarray, diameter: int, sigma_color: float, sigma_space: float, iterations: int) -> np.ndarray:
    out = []
    for frame in frames:
        for _ in range(iterations):
            frame = cv2.bilateralFilter(frame, diameter, sigma_color, sigma_space)
        out.append(frame)
    return np.stack(out)


def blur_control(frames: np.ndarray, rng: np.random.Generator | None = None, preset: str = "medium") -> np.ndarray:
    """Blurred copy of uint8 RGB frames [T, h, w, 3]; random parameters when `rng` is given, else `preset`."""
    _, height, width, _ = frames.shape
    scale = min(height, width) / _REFERENCE_SIZE
    if rng is None:
        if preset not in BLUR_PRESETS:
            raise ValueError(f"unknown blur preset {preset!r}; expected one of {list(BLUR_PRESETS)}")
        blurred = _gaussian(frames, _odd(25 * scale), max(0.5, 12.5 * scale))
        return _down_up(blurred, BLUR_PRESETS[preset])

    combination = rng.choice(3, p=[0.5, 0.3, 0.2])  # bilateral, gaussian, both
    prescale = int(rng.integers(1, 5))  # blur at 1/1 .. 1/4 size, then back: a wider blur for the same cost
    work = frames
    if prescale > 1:
        work = _resize_all(frames, max(4, width // prescale), max(4, height // prescale), cv2.INTER_AREA)
    work_scale = scale * work.shape[1] / height
    if combination in (0, 2):
        diameter = float(rng.integers(15, 51)) * work_scale
        sigma_color = float(rng.integers(100, 301))
        sigma_space = float(rng.integers(50, 151)) * work_scale
        iterations = int(rng.integers(1, 5))
        # A bilateral filter costs diameter^2 per pixel: 50 pixels wide at 720p is seconds per frame. Run it where its
        # diameter is at most _MAX_BILATERAL_DIAMETER pixels instead; its footprint on the frame stays the same.
        shrink = max(1.0, diameter / _MAX_BILATERAL_DIAMETER)
        work_h, work_w = work.shape[1:3]
        small = work
        if shrink > 1:
            small = _resize_all(work, max(4, int(work_w / shrink)), max(4, int(work_h / shrink)), cv2.INTER_AREA)
        small = _bilateral(small, _odd(diameter / shrink), sigma_color, max(1.0, sigma_space / shrink), iterations)
        work = small if shrink == 1 else _resize_all(small, work_w, work_h, cv2.INTER_LINEAR)
    if combination in (1, 2):
        work = _gaussian(work, _odd(rng.integers(21, 30) * work_scale), max(0.5, rng.uniform(10.5, 14.5) * work_scale))
    if prescale > 1:
        work = _resize_all(work, width, height, cv2.INTER_LINEAR)
    return _down_up(work, int(rng.integers(4, 17)))


# ------------------------------------------------------------------------------------------------------------ seg
def _random_colors(count: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct-enough random colours: random hue, saturation 0.1-1, value 0.2-1 (never black, the background)."""
    colors = np.zeros((count, 3), np.uint8)
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.1, 1.0), rng.uniform(0.2, 1.0))
        colors[i] = (int(r * 255), int(g * 255), int(b * 255))
    return colors


def colorize_masks(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Binary masks [N, T, h, w] -> uint8 [T, h, w, 3]; larger masks are painted first so small ones stay visible."""
    if masks.ndim != 4:
        raise ValueError(f"expected masks shaped [N, T, h, w], got {masks.shape}")
    _, num_frames, height, width = masks.shape
    out = np.zeros((num_frames, height, width, 3), np.uint8)
    order = np.argsort([-int(np.count_nonzero(mask)) for mask in masks], kind="stable")
    colors = _random_colors(len(masks), rng)
    for color, i in zip(colors, order):
        out[masks[i] > 0] = color
    return out


def sample_masks(masks: np.ndarray, rng: np.random.Generator, max_masks: int = 100) -> np.ndarray:
    """Training augmentation (as Cosmos): keep a random subset of the objects, 0 to min(N, max_masks) of them."""
    count = int(rng.integers(0, min(len(masks), max_masks) + 1))
    keep = np.sort(rng.choice(len(masks), size=count, replace=False))
    return masks[keep]


def decode_coco_rle_counts(counts) -> np.ndarray:
    """COCO run lengths from a compressed RLE string/bytes (pycocotools' format) or a plain list -> int64 [R]."""
    if isinstance(counts, (list, tuple, np.ndarray)):
        return np.asarray(counts, np.int64)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, (bytes, bytearray)):
        raise BadSampleError(f"RLE counts must be a string, bytes or a list of ints, got {type(counts).__name__}")
    runs: list[int] = []
    i = 0
    while i < len(counts):
        value, shift, more = 0, 0, True
        while more:
            chunk = counts[i] - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            i += 1
            shift += 1
            if not more and (chunk & 0x10):
                value |= -1 << (5 * shift)
        if len(runs) > 2:  # after the first two, runs are stored as differences to the run two back
            value += runs[-2]
        runs.append(value)
    return np.asarray(runs, np.int64)


def rle_slice(runs: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Values [start, stop) of a flat binary mask given its alternating 0/1 run lengths (first run is zeros)."""
    ends = np.cumsum(runs)
    begins = ends - runs
    out = np.zeros(stop - start, np.uint8)
    for run in np.nonzero((begins < stop) & (ends > start))[0]:
        if run % 2 == 1:
            out[max(begins[run], start) - start : min(ends[run], stop) - start] = 1
    return out


# ------------------------------------------------------------------------------------------------------- keypoint
# Input: COCO-WholeBody, 133 points per person: body 0-16 (nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
# ankles; left before right), feet 17-22, face 23-90, left hand 91-111, right hand 112-132.
# Drawing: the OpenPose style Cosmos-Transfer1 renders by default (its released keypoint checkpoint saw this): a neck
# between the shoulders, 17 coloured body links, the 20 links of each hand, white face points, blue hand points.
NUM_WHOLEBODY_KEYPOINTS = 133
# OpenPose body order (nose, neck, right arm, left arm, right leg, left leg, right eye, left eye, right ear, left ear)
# as COCO indices; -1 is the neck, made from the two shoulders.
_OPENPOSE_BODY = [0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
_OPENPOSE_BODY_LINKS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                        (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]  # fmt: skip
_OPENPOSE_BODY_COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                         (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                         (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]  # fmt: skip
_OPENPOSE_LINK_COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                         (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 225), (0, 170, 255), (0, 85, 255),
                         (0, 0, 255), (255, 0, 170), (170, 0, 255), (255, 0, 255), (255, 0, 170)]  # fmt: skip


def _hand_links(root: int) -> list[tuple[int, int]]:
    """The 20 links of a hand whose root (wrist) is COCO point `root`: root to each finger, then along it."""
    links = []
    for finger in range(5):
        joints = [root] + [root + 1 + 4 * finger + j for j in range(4)]
        links += list(zip(joints[:-1], joints[1:]))
    return links


# Hand links are coloured along the hue circle, the same for both hands (OpenPose's hand palette).
_HAND_LINK_COLORS = [tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(i / 20, 1.0, 1.0)) for i in range(20)]
HAND_LINKS = _hand_links(91) + _hand_links(112)


def render_keypoints(keypoints: np.ndarray, height: int, width: int, threshold: float = 0.6) -> np.ndarray:
    """COCO-WholeBody keypoints [T, P, 133, 3] (x, y normalized to 0..1, score) -> uint8 skeleton video [T, h, w, 3].

    A point is drawn when its score is at least `threshold`, a link when both ends are. Cosmos draws 4-pixel links and
    2-pixel points at 720p; both follow the frame size here.
    """
    if keypoints.ndim != 4 or keypoints.shape[2:] != (NUM_WHOLEBODY_KEYPOINTS, 3):
        raise ValueError(f"expected keypoints shaped [T, persons, 133, 3], got {keypoints.shape}")
    line_width = max(1, int(round(4 * min(height, width) / _REFERENCE_SIZE)))
    radius = max(1, line_width // 2)
    out = np.zeros((keypoints.shape[0], height, width, 3), np.uint8)
    for t, people in enumerate(keypoints):
        canvas = out[t]
        for person in people:
            xy = np.stack([person[:, 0] * width, person[:, 1] * height], axis=1).round().astype(np.int32)
            visible = person[:, 2] >= threshold
            point = lambda i: (int(xy[i, 0]), int(xy[i, 1]))  # noqa: E731
            # Body in OpenPose order; the neck exists when both shoulders do.
            body_xy = [((xy[5] + xy[6]) // 2) if i < 0 else xy[i] for i in _OPENPOSE_BODY]
            body_visible = [bool(visible[5] and visible[6]) if i < 0 else bool(visible[i]) for i in _OPENPOSE_BODY]
            for j, color in enumerate(_OPENPOSE_BODY_COLORS):
                if body_visible[j]:
                    cv2.circle(canvas, (int(body_xy[j][0]), int(body_xy[j][1])), radius, color, -1)
            for i in range(23, 91):  # face: points only
                if visible[i]:
                    cv2.circle(canvas, point(i), radius, (255, 255, 255), -1)
            for i in range(91, 133):  # hands
                if visible[i]:
                    cv2.circle(canvas, point(i), radius, (0, 0, 255), -1)
            for (a, b), color in zip(_OPENPOSE_BODY_LINKS, _OPENPOSE_LINK_COLORS):
                if body_visible[a] and body_visible[b]:
                    start, end = body_xy[a], body_xy[b]
                    cv2.line(canvas, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), color, line_width)
            for k, (a, b) in enumerate(HAND_LINKS):
                if visible[a] and visible[b]:
                    cv2.line(canvas, point(a), point(b), _HAND_LINK_COLORS[k % 20], line_width)
    return out


def cosmos_keypoints_to_array(annotations: dict, frame_indices: list[int], source: str) -> np.ndarray:
    """Cosmos' keypoint pickle ({frame: [{'body-keypoints': [91, 3], 'hand-keypoints': [42, 3]}, ...]}) for the given
    frames -> [T, P, 133, 3], persons padded with zero scores. Frames without an entry have nobody in them."""
    per_frame = []
    for index in frame_indices:
        people = []
        for person in annotations.get(index, []) or []:
            body, hands = person.get("body-keypoints"), person.get("hand-keypoints")
            if body is None or hands is None:
                raise BadSampleError(f"{source}: frame {index}: a person lacks 'body-keypoints' or 'hand-keypoints'")
            points = np.concatenate([np.asarray(body, np.float32), np.asarray(hands, np.float32)], axis=0)
            if points.shape != (NUM_WHOLEBODY_KEYPOINTS, 3):
                raise BadSampleError(f"{source}: frame {index}: expected 133 keypoints x 3, got {points.shape}")
            people.append(points)
        per_frame.append(people)
    max_people = max([len(p) for p in per_frame] + [1])
    out = np.zeros((len(frame_indices), max_people, NUM_WHOLEBODY_KEYPOINTS, 3), np.float32)
    for t, people in enumerate(per_frame):
        for p, points in enumerate(people):
            out[t, p] = points
    return out
