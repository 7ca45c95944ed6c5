"""VideoDataset: clips from a folder in our layout (or Cosmos-Transfer1's, or Transfer2.5's), as training samples.

Layout (files matched by stem; see docs/DATASETS.md):

    root/videos/<stem>.mp4                    the clips
    root/metas/<stem>.txt                     one caption per clip ... or Transfer2.5's captions/<stem>.json
    root/t5_xxl/<stem>.safetensors            text embeddings [n_tokens, D] (ours) ... or <stem>.pickle (Cosmos)
    root/depth/<stem>.mp4                     optional, for hint key `depth` (the clip's frame count and size)
    root/seg/<stem>.npz | <stem>.pickle       optional, for `seg`: label maps [T, H, W] (ours) or SAM2 RLE (Cosmos)
             | <stem>.mp4                     ... or Transfer2.5's colour-coded segmentation video
    root/keypoint/<stem>.npz | <stem>.pickle  optional, for `keypoint`: [T, P, 133, 3] (ours) or Cosmos' dict
    root/latents/<stem>.safetensors           optional cached tokenizer latents of one fixed window

A sample is a dict in the batch contract of docs/ARCHITECTURE.md. Keys given by the sampler are (epoch, index)
pairs (a plain int means epoch 0), and every random choice of a sample (window, thresholds, blur, colours) comes
from a generator seeded with (seed, epoch, index): the same sample whichever worker builds it.

Bad clips: the constructor checks every clip's files and video header and leaves out, with one warning each, clips
with a missing caption, embedding or control file, an unreadable video, too few frames for the window, a frame
size that cannot be padded to the resolution, or a depth video of another frame count or size than the clip (a
control is never stretched). Problems found only while loading (a video corrupt mid-stream, a damaged picture the
decoder concealed, a seg or keypoint file of another shape than the clip, an unreadable embedding) skip the clip when
it comes up, with one warning, and a replacement clip is drawn deterministically; each sample reports in
`num_skipped` how many bad clips it replaced (the trainer adds them up as `skipped_samples`). When more than
`max_bad_fraction` of the clips are bad, the dataset raises.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from typing import Sequence

import cv2
import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from cosmos_transfer.config.errors import DataError
from cosmos_transfer.data import controls as C
from cosmos_transfer.data.captions import find_caption, missing_caption_message, read_caption
from cosmos_transfer.data.safe_pickle import safe_load
from cosmos_transfer.data.text_embeddings import (
    find_text_embedding,
    load_text_embedding,
    pad_text_embedding,
    text_embedding_dim as embedding_file_dim,
    text_embedding_metadata,
)
from cosmos_transfer.data.video import (
    BadSampleError,
    Fit,
    check_same_shape,
    decode_padded,
    fit_frame,
    frame_stride,
    padding_mask,
    reflect_pad,
    resolve_resolution,
    window_indices,
    window_start_range,
)
from cosmos_transfer.hints import batch_key, normalize_hint_key
from cosmos_transfer.video_io import VideoReadError, probe_video, read_frames

log = logging.getLogger(__name__)

# Control inputs read from files, and the file suffixes each accepts (ours first; a seg .mp4 is Transfer2.5's
# colour-coded segmentation video, used as it is).
_CONTROL_FILES = {"depth": (".mp4",), "seg": (".npz", ".pickle", ".pkl", ".mp4"),
                  "keypoint": (".npz", ".pickle", ".pkl")}
# Controls that are videos of the clip's frame count and size, checked from their header when the dataset is built.
_CONTROL_VIDEOS = {"depth": "depth video", "seg": "segmentation video"}
_MAX_REPLACEMENTS = 16
# What loading a bad clip can raise (a corrupt file, a refused pickle, a missing key in one); anything else is a bug.
LOAD_ERRORS = (BadSampleError, VideoReadError, ValueError, OSError, KeyError, EOFError, pickle.UnpicklingError)


@dataclasses.dataclass(frozen=True)
class Clip:
    stem: str
    video: str
    caption: str  # path of the caption file
    embedding: str
    num_frames: int
    fps: float
    height: int
    width: int
    controls: dict  # hint key -> file path, for file-based controls
    latent: str | None


def scan_clips(
    root: str,
    num_frames: int,
    resolution: tuple[int, int],
    fps: float | None,
    hint_keys: Sequence[str],
    text_embedding_folder: str = "t5_xxl",
    use_latents: bool = False,
) -> tuple[list[Clip], list[tuple[str, str]]]:
    """Check every clip of root/videos: its files, its video header, its window and its padding.

    Returns the usable clips and (video path, reason) for each bad one. Reads only headers: fast (about 0.3 ms per
    clip on local disk). Decoding problems are found later, when a clip is loaded.
    """
    video_dir = os.path.join(root, "videos")
    if not os.path.isdir(video_dir):
        raise DataError(f"no videos/ folder in the dataset folder {root} (layout: docs/DATASETS.md)")
    stems = sorted(os.path.splitext(name)[0] for name in os.listdir(video_dir) if name.endswith(".mp4"))
    if not stems:
        raise DataError(f"no .mp4 files in {video_dir}")
    hint_keys = [normalize_hint_key(key) for key in hint_keys]
    clips, bad = [], []
    for stem in stems:
        video = os.path.join(video_dir, stem + ".mp4")
        try:
            clips.append(
                _check_clip(root, stem, video, num_frames, resolution, fps, hint_keys, text_embedding_folder, use_latents)
            )
        except (BadSampleError, VideoReadError) as error:
            bad.append((video, str(error)))
    return clips, bad


def _find(root: str, folder: str, stem: str, suffixes: Sequence[str]) -> str | None:
    for suffix in suffixes:
        path = os.path.join(root, folder, stem + suffix)
        if os.path.isfile(path):
            return path
    return None


def _check_clip(root, stem, video, num_frames, resolution, fps, hint_keys, text_embedding_folder, use_latents) -> Clip:
    caption = find_caption(root, stem)
    if caption is None:
        raise BadSampleError(missing_caption_message(root, stem))
    read_caption(caption)  # an empty caption, or a .json one that is not {"caption": "..."}, is a bad clip
    embedding = find_text_embedding(os.path.join(root, text_embedding_folder), stem)
    if embedding is None:
        raise BadSampleError(
            f"missing text embedding {os.path.join(root, text_embedding_folder, stem)}.safetensors "
            f"(run scripts/prepare_dataset.py)"
        )
    control_files = {}
    for key in hint_keys:
        if key in _CONTROL_FILES:
            path = _find(root, key, stem, _CONTROL_FILES[key])
            if path is None:
                raise BadSampleError(
                    f"missing {key} control file {os.path.join(root, key, stem)}{'|'.join(_CONTROL_FILES[key])}"
                )
            control_files[key] = path
    latent = None
    if use_latents:
        latent = _find(root, "latents", stem, (".safetensors",))
        if latent is None:
            raise BadSampleError(f"missing cached latent {os.path.join(root, 'latents', stem)}.safetensors")
    info = probe_video(video)
    clip = Clip(stem, video, caption, embedding, info.num_frames, info.fps, info.height, info.width,
                control_files, latent)  # fmt: skip
    fit_frame(clip.height, clip.width, resolution)  # raises if the frame cannot be padded
    for key, what in _CONTROL_VIDEOS.items():  # from the header, like the clip's; other files are checked on loading
        if control_files.get(key, "").endswith(".mp4"):
            info = probe_video(control_files[key])
            check_same_shape(what, control_files[key], (info.num_frames, info.height, info.width),
                             "its clip", video, clip_shape(clip))  # fmt: skip
    if not use_latents:
        stride = frame_stride(clip.fps, fps)
        if window_start_range(clip.num_frames, num_frames, stride) == 0:
            raise BadSampleError(
                f"clip has {clip.num_frames} frames at {clip.fps:g} fps; a window of {num_frames} frames "
                f"every {stride} needs {(num_frames - 1) * stride + 1}"
            )
    return clip


class VideoDataset(Dataset):
    """Training clips with captions, text embeddings and control inputs, in the batch contract's format.

    Args:
        root: dataset folder (layout above).
        num_frames: frames per sample (T).
        resolution: (H, W) or a name from cosmos_transfer.data.video.RESOLUTIONS ("720", "480", "256", "tiny").
        fps: target frame rate; frames are taken every round(clip_fps / fps) frames. None: every frame.
        hint_keys: control inputs to produce, e.g. ["edge"] or ["control_input_edge", "control_input_depth"].
        seed: base of every per-sample random choice.
        text_embedding_length / text_embedding_dim: L and D of `t5_text_embeddings` (512 x 1024 for T5-XXL).
        text_embedding_folder: folder under root with the embedding files.
        is_train: random windows and control parameters; otherwise the first window and the named presets.
        edge_preset / blur_preset: inference strengths of the edge / vis controls (see controls.py).
        use_latents: also return `latent` from root/latents (its window replaces the random one).
        max_bad_fraction: largest share of bad clips tolerated before raising.
    """

    def __init__(
        self,
        root: str,
        num_frames: int,
        resolution: Sequence[int] | str,
        fps: float | None = None,
        hint_keys: Sequence[str] = ("edge",),
        seed: int = 0,
        text_embedding_length: int = 512,
        text_embedding_dim: int = 1024,
        text_embedding_folder: str = "t5_xxl",
        is_train: bool = True,
        edge_preset: str = "medium",
        blur_preset: str = "medium",
        use_latents: bool = False,
        max_bad_fraction: float = 0.1,
    ):
        super().__init__()
        self.root = os.path.abspath(os.path.expanduser(str(root)))
        if not os.path.isdir(self.root):
            raise DataError(f"dataset folder not found: {self.root}")
        if num_frames <= 0:
            raise DataError(f"num_frames must be positive, got {num_frames}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise DataError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if edge_preset not in C.EDGE_PRESETS:
            raise DataError(f"unknown edge_preset {edge_preset!r}; expected one of {list(C.EDGE_PRESETS)}")
        if blur_preset not in C.BLUR_PRESETS:
            raise DataError(f"unknown blur_preset {blur_preset!r}; expected one of {list(C.BLUR_PRESETS)}")
        if isinstance(hint_keys, str):
            hint_keys = [hint_keys]
        self.hint_keys = [normalize_hint_key(key) for key in hint_keys]
        self.num_frames = int(num_frames)
        self.resolution = resolve_resolution(resolution)
        self.fps = fps
        self.seed = int(seed)
        self.text_embedding_length = int(text_embedding_length)
        self.text_embedding_dim = int(text_embedding_dim)
        self.text_embedding_folder = text_embedding_folder
        self.is_train = is_train
        self.edge_preset = edge_preset
        self.blur_preset = blur_preset
        self.use_latents = use_latents
        self.max_bad_fraction = max_bad_fraction

        self.clips, self.bad_files = scan_clips(
            self.root, self.num_frames, self.resolution, self.fps, self.hint_keys, text_embedding_folder, use_latents
        )
        for path, why in self.bad_files:
            log.warning("skipping clip %s: %s", path, why)
        self.num_files = len(self.clips) + len(self.bad_files)
        self._check_bad_share(len(self.bad_files))
        if not self.clips:
            reasons = "; ".join(f"{path}: {why}" for path, why in self.bad_files[:3])
            raise DataError(f"no usable clips in {self.root}; first problems: {reasons}")
        self._check_embedding_dim()
        self._check_one_projection()
        self._bad_at_runtime: set[int] = set()  # per process: clips found bad while decoding (each warned once)

    def _check_embedding_dim(self) -> None:
        """A wrong text_embedding_dim would make every clip bad: say so at once (from the first readable file)."""
        for clip in self.clips[:8]:
            try:
                dim = embedding_file_dim(clip.embedding)
            except LOAD_ERRORS:
                continue  # an unreadable file is one bad clip, found and counted when it is loaded
            if dim != self.text_embedding_dim:
                meta = text_embedding_metadata(clip.embedding)
                made = f" (from {meta['encoder']}" if "encoder" in meta else ""
                if "projection" in meta:  # cached after a base's crossattn_proj (scripts/prepare_dataset.py)
                    made += (f", already projected by {meta['projection']}: for a net built with "
                             "text_embeddings_projected=True")
                raise DataError(
                    f"text embeddings in {os.path.dirname(clip.embedding)} have D={dim}{made + ')' if made else ''}, "
                    f"but the dataset is configured with text_embedding_dim={self.text_embedding_dim}"
                )
            return

    def _check_one_projection(self) -> None:
        """Embeddings projected offline (text_encoders.CrossAttnProjection) must all come from one crossattn_proj, and
        not be mixed with raw ones: compared by the fingerprint each file records (a header read per file)."""
        first = None
        for clip in self.clips:
            try:
                meta = text_embedding_metadata(clip.embedding)
            except LOAD_ERRORS:
                continue  # an unreadable file is one bad clip, found and counted when it is loaded
            kind = (meta.get("projection_sha256"), meta.get("projection", "no projection (raw embeddings)"))
            if first is None:
                first = (kind, clip.embedding)
            elif kind[0] != first[0][0]:
                raise DataError(
                    f"text embeddings in {os.path.dirname(clip.embedding)} are of different kinds: {first[1]} has "
                    f"{first[0][1]} (sha256 {first[0][0]}), {clip.embedding} has {kind[1]} (sha256 {kind[0]}). Make "
                    "them all with the base you train: scripts/prepare_dataset.py --project-with <its file> --overwrite"
                )

    def _check_bad_share(self, num_bad: int) -> None:
        if num_bad > self.max_bad_fraction * self.num_files:
            examples = "; ".join(f"{path}: {why}" for path, why in self.bad_files[:3])
            raise DataError(
                f"{num_bad} of {self.num_files} clips in {self.root} are bad, more than max_bad_fraction="
                f"{self.max_bad_fraction:g} allows (run scripts/prepare_dataset.py {self.root} --check-only for the "
                f"full list). First ones: {examples}"
            )

    # ------------------------------------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key) -> dict:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (0, int(key))
        if not 0 <= index < len(self.clips):
            raise IndexError(f"sample index {index} out of range for {len(self.clips)} clips")
        candidate = index
        for attempt in range(_MAX_REPLACEMENTS):
            rng = np.random.default_rng([self.seed, epoch, index, attempt])
            if attempt > 0:  # the replacement of a bad clip is drawn from the same (seed, epoch, index) stream
                candidate = int(rng.integers(len(self.clips)))
            if candidate in self._bad_at_runtime:
                continue
            try:
                sample = self._load(self.clips[candidate], rng)
            except LOAD_ERRORS as error:
                clip = self.clips[candidate]
                log.warning("skipping clip %s: %s", clip.video, error)
                self._bad_at_runtime.add(candidate)
                self._check_bad_share(len(self.bad_files) + len(self._bad_at_runtime))
                continue
            sample["sample_index"] = torch.tensor(index, dtype=torch.int64)
            sample["num_skipped"] = torch.tensor(attempt, dtype=torch.int64)
            return sample
        raise DataError(f"could not load sample {index} of {self.root}: {_MAX_REPLACEMENTS} bad clips in a row (the "
                        f"warnings above name them); run scripts/prepare_dataset.py {self.root} --check-only")

    def load_clip(self, clip_index: int, epoch: int = 0) -> dict:
        """Load clip `clip_index` as sample (epoch, clip_index) would, raising on a bad clip instead of replacing it.

        For checking a dataset (scripts/prepare_dataset.py); training goes through __getitem__.
        """
        sample = self._load(self.clips[clip_index], np.random.default_rng([self.seed, epoch, clip_index, 0]))
        sample["sample_index"] = torch.tensor(clip_index, dtype=torch.int64)
        sample["num_skipped"] = torch.tensor(0, dtype=torch.int64)
        return sample

    def _window(self, clip: Clip, rng: np.random.Generator) -> tuple[list[int], int]:
        stride = frame_stride(clip.fps, self.fps)
        starts = window_start_range(clip.num_frames, self.num_frames, stride)
        start = int(rng.integers(starts)) if self.is_train else 0
        return window_indices(start, self.num_frames, stride), stride

    def _load(self, clip: Clip, rng: np.random.Generator) -> dict:
        latent = None
        if self.use_latents:
            latent, indices, stride = self._load_latent(clip)
        else:
            indices, stride = self._window(clip, rng)
        fit = fit_frame(clip.height, clip.width, self.resolution)
        video = decode_padded(clip.video, indices, fit)  # [T, H, W, 3], reflection-padded

        sample = {
            "video": _to_cthw(video),
            "padding_mask": torch.from_numpy(padding_mask(fit)),
            "fps": torch.tensor(clip.fps / stride, dtype=torch.float32),
            "image_size": torch.tensor([fit.height, fit.width, fit.valid_height, fit.valid_width], dtype=torch.float32),
            "num_frames": torch.tensor(self.num_frames, dtype=torch.int64),
        }
        embeddings, mask = pad_text_embedding(load_text_embedding(clip.embedding), self.text_embedding_length)
        if embeddings.shape[1] != self.text_embedding_dim:
            raise BadSampleError(f"text embedding {clip.embedding} has D={embeddings.shape[1]}, expected "
                                 f"{self.text_embedding_dim}")
        sample["t5_text_embeddings"] = embeddings
        sample["t5_text_mask"] = mask
        sample["caption"] = read_caption(clip.caption)
        for key in self.hint_keys:
            sample[batch_key(key)] = _to_cthw(self._control(key, clip, video, indices, fit, rng))
        if latent is not None:
            sample["latent"] = latent
        return sample

    # ----------------------------------------------------------------------------------------------- controls
    def _control(self, key, clip: Clip, video, indices, fit: Fit, rng: np.random.Generator) -> np.ndarray:
        """The control video of the window, padded like the video: uint8 [T, H, W, 3] (edge: [T, H, W, 1]).

        Edge and blur are computed on the padded video itself, so the control matches exactly what the model sees
        (the mirrored padding has mirrored edges and no seam: reflection without edge repeat is smooth).
        Controls from files are read at the video's inside size and padded the same way.
        """
        if key == "edge":
            lower, upper = C.random_edge_thresholds(rng) if self.is_train else C.EDGE_PRESETS[self.edge_preset]
            return C.edge_control(video, lower, upper)
        if key == "vis":
            return C.blur_control(video, rng) if self.is_train else C.blur_control(video, preset=self.blur_preset)
        path = clip.controls[key]
        if key == "depth":  # the clip's shape (checked by scan_clips): read the same frames, fitted the same way
            return decode_padded(path, indices, fit)
        if key == "seg" and path.endswith(".mp4"):  # Transfer2.5: colours are object ids, so resized nearest
            frames = read_frames(path, indices)
            size = (fit.valid_width, fit.valid_height)
            return reflect_pad(np.stack([cv2.resize(f, size, interpolation=cv2.INTER_NEAREST) for f in frames]), fit)
        if key == "seg":
            masks = self._seg_masks(path, clip, indices, fit)
            if self.is_train:
                masks = C.sample_masks(masks, rng)
            return reflect_pad(C.colorize_masks(masks, rng), fit)
        if key == "keypoint":
            keypoints = self._keypoints(path, clip, indices)
            return reflect_pad(C.render_keypoints(keypoints, fit.valid_height, fit.valid_width), fit)
        raise ValueError(f"no control named {key!r}")

    def _seg_masks(self, path: str, clip: Clip, indices: list[int], fit: Fit) -> np.ndarray:
        """Binary masks of the window [N, T, h, w] from our label maps or Cosmos' SAM2 RLE pickle (the clip's shape)."""
        size = (fit.valid_width, fit.valid_height)
        if path.endswith(".npz"):
            labels = _npz_array(path, "labels", 3, "segmentation", "labels [T, H, W]")
            check_same_shape("segmentation", path, labels.shape, "its clip", clip.video, clip_shape(clip))
            window = np.stack([cv2.resize(labels[i].astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
                               for i in indices])  # fmt: skip
            ids = [int(i) for i in np.unique(window) if i != 0]
            return np.stack([window == i for i in ids]) if ids else np.zeros((0,) + window.shape, bool)
        masks = []
        for item in _as_list(safe_load(path), path):
            rle = item["segmentation_mask_rle"]
            num_frames, height, width = (int(v) for v in rle["mask_shape"])
            check_same_shape("segmentation", path, (num_frames, height, width), "its clip", clip.video,
                             clip_shape(clip))  # fmt: skip
            runs = C.decode_coco_rle_counts(rle["data"]["counts"])
            frame_size = height * width
            frames = [C.rle_slice(runs, i * frame_size, (i + 1) * frame_size).reshape(height, width) for i in indices]
            masks.append(np.stack([cv2.resize(f, size, interpolation=cv2.INTER_NEAREST) for f in frames]))
        if not masks:
            return np.zeros((0, len(indices), fit.valid_height, fit.valid_width), bool)
        return np.stack(masks)

    def _keypoints(self, path: str, clip: Clip, indices: list[int]) -> np.ndarray:
        if path.endswith(".npz"):
            keypoints = _npz_array(path, "keypoints", 4, "keypoint", "keypoints [T, P, 133, 3]")
            check_same_shape("keypoints", path, keypoints.shape[:1], "its clip", clip.video, (clip.num_frames,))
            return keypoints[indices].astype(np.float32)
        annotations = safe_load(path)
        if not isinstance(annotations, dict):
            raise BadSampleError(f"keypoint pickle {path} holds a {type(annotations).__name__}, expected a dict")
        # Frames nobody is in have no entry, so only a frame past the clip's end shows that the length is wrong.
        last = max((key for key in annotations if isinstance(key, int)), default=-1)
        if last >= clip.num_frames:
            raise BadSampleError(f"keypoint pickle {path} has people in frame {last}, but its clip {clip.video} has "
                                 f"{clip.num_frames} frames: a control needs exactly its video's frame count")  # fmt: skip
        return C.cosmos_keypoints_to_array(annotations, indices, path)

    def _load_latent(self, clip: Clip) -> tuple[torch.Tensor, list[int], int]:
        with safe_open(clip.latent, framework="pt") as file:
            meta = file.metadata() or {}
            latent = file.get_tensor("latent").float()
        try:
            start, stride, count = int(meta["frame_start"]), int(meta["frame_stride"]), int(meta["num_frames"])
            height, width = int(meta["height"]), int(meta["width"])
        except (KeyError, ValueError):
            raise BadSampleError(f"latent {clip.latent} lacks frame_start/frame_stride/num_frames/height/width "
                                 f"metadata") from None
        if count != self.num_frames or (height, width) != self.resolution:
            raise BadSampleError(f"latent {clip.latent} was made for {count} frames at {height}x{width}, the dataset "
                                 f"wants {self.num_frames} at {self.resolution[0]}x{self.resolution[1]}")
        return latent, window_indices(start, count, stride), stride


def clip_shape(clip: Clip) -> tuple[int, int, int]:
    return clip.num_frames, clip.height, clip.width


def _to_cthw(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, C] -> uint8 [3, T, H, W] as a view (C = 1 is repeated): collate makes the one copy needed."""
    tensor = torch.from_numpy(frames).permute(3, 0, 1, 2)
    return tensor.expand(3, -1, -1, -1) if tensor.shape[0] == 1 else tensor


def _npz_array(path: str, name: str, ndim: int, what: str, expected: str) -> np.ndarray:
    """The array `name` of an .npz control file, with `ndim` dimensions (BadSampleError naming the file otherwise)."""
    with np.load(path, allow_pickle=False) as data:
        if name not in data:
            raise BadSampleError(f"{what} file {path} has no '{name}' array")
        array = data[name]
    if array.ndim != ndim:
        raise BadSampleError(f"{what} file {path}: expected {expected}, got shape {array.shape}")
    return array


def _as_list(data, path: str) -> list:
    if not isinstance(data, (list, tuple)):
        raise BadSampleError(f"segmentation pickle {path} holds a {type(data).__name__}, expected a list of masks")
    return list(data)
