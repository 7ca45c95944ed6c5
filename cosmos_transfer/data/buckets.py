"""Buckets: clips of many resolutions, aspect ratios and lengths, batched so that each batch has one shape.

The user lists the buckets, each `HxWxT:B` (height and width in pixels, frames, batch size per rank), e.g.

    buckets: ["704x1280x121:1", "1280x704x121:1", "960x960x121:1", "480x848x57:4", "848x480x57:4"]

Which bucket a clip goes to (`choose_bucket`), among the buckets the clip can fill: a window of T frames (at the
dataset's frame rate) exists in it, and its frame, resized to fit inside HxW, can be reflection-padded to HxW:
  1. the nearest aspect ratio, |log(w/h) - log(W/H)| (symmetric in portrait and landscape);
  2. among those, the largest area H*W that does not exceed the clip's (no upscaling); when every one would
     upscale the clip, the smallest;
  3. among those, the longest T.
This is Open-Sora's rule (hpcai-tech Open-Sora `datasets/bucket.py`: closest aspect ratio, then the largest
resolution and frame count the clip reaches) and the same nearest-aspect-ratio choice NVIDIA's Cosmos data uses over
its fixed tables (`VIDEO_RES_SIZE_INFO`: 1:1, 4:3, 3:4, 16:9, 9:16 per resolution, e.g. 720: 960x960, 960x704,
704x960, 1280x704, 704x1280) and musubi-tuner's BucketSelector (the bucket of the nearest aspect ratio). A clip that
fills no bucket is left out with one warning.

Batches (`BucketBatchSampler`): each epoch, the clips are shuffled by (seed, epoch), the same on every rank, and kept
in that order within each bucket; each bucket is cut into global batches of world_size x its batch size (the rest
is dropped for the epoch), the global batches of all buckets are shuffled by (seed, epoch), and rank r takes its
slice of each. So every rank steps through the same buckets in the same order (one shape per step across ranks),
ranks never share a clip within an epoch, and each batch has one shape. The sampler yields lists of
(epoch, index, bucket) keys; the dataset loads each clip at its bucket's shape. Resume: the loader counts the batches
it hands out; `state_dict()` / `load_state_dict()` restore the position exactly (the same batches follow, bitwise).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import re
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from cosmos_transfer.config.errors import DataError
from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.data.sampler import PositionedDataLoader, data_parallel_rank_and_size, worker_options
from cosmos_transfer.data.video import BadSampleError, fit_frame, frame_stride, window_start_range

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*:\s*(\d+)\s*$")
# Bounds of one bucket, far above any Cosmos training shape (720p: 704x1280, 121 frames, batch 1-4) and far below
# what a typo makes of them (a missing "x" turns 704x1280 into 7041280): the loader allocates B x T x H x W x 3 bytes
# per batch and more, so a size nobody meant must be refused before any worker starts.
MAX_SIDE = 8192  # pixels (8K video is 4320x7680)
MAX_FRAMES = 2048
MAX_BATCH = 1024
MAX_BUCKETS = 256


@dataclasses.dataclass(frozen=True)
class Bucket:
    height: int
    width: int
    num_frames: int
    batch_size: int

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.num_frames}:{self.batch_size}"

    @property
    def log_aspect(self) -> float:
        return math.log(self.width / self.height)


def parse_buckets(spec: Sequence[Any]) -> list[Bucket]:
    """Buckets from a list of "HxWxT:B" strings (or [H, W, T, B] lists, or Bucket objects); DataError naming the
    entry for anything malformed, zero, negative or beyond the bounds above."""
    if isinstance(spec, str) or not isinstance(spec, Sequence) or not spec:
        raise DataError(f"buckets must be a non-empty list of 'HxWxT:B' strings (e.g. ['704x1280x121:1']), "
                        f"got {spec!r}")
    if len(spec) > MAX_BUCKETS:
        raise DataError(f"buckets: {len(spec)} entries, at most {MAX_BUCKETS} are taken (each bucket needs enough "
                        "clips for a batch on every rank)")
    buckets = []
    for item in spec:
        if isinstance(item, Bucket):
            values = (item.height, item.width, item.num_frames, item.batch_size)
        elif isinstance(item, str) and _SPEC.match(item):
            values = tuple(int(v) for v in _SPEC.match(item).groups())
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 4:
            values = tuple(item)
        else:
            raise DataError(f"bucket {item!r}: expected 'HxWxT:B' (height x width x frames : batch size, positive "
                            "integers), e.g. '704x1280x121:1'")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise DataError(f"bucket {item!r}: height, width, frames and batch size must be positive integers, "
                            f"e.g. '704x1280x121:1'")
        bucket = Bucket(*values)
        limits = (("height", bucket.height, MAX_SIDE), ("width", bucket.width, MAX_SIDE),
                  ("frames", bucket.num_frames, MAX_FRAMES), ("batch size", bucket.batch_size, MAX_BATCH))
        for what, value, limit in limits:
            if value > limit:
                raise DataError(f"bucket {item!r}: {what} {value:,} is over the largest taken ({limit:,}); a bucket "
                                f"is 'HxWxT:B' with H and W in pixels, e.g. '704x1280x121:1'")
        buckets.append(bucket)
    shapes = [(b.height, b.width, b.num_frames) for b in buckets]
    duplicates = sorted({s for s in shapes if shapes.count(s) > 1})
    if duplicates:
        raise DataError(f"buckets list the shape(s) {['%dx%dx%d' % s for s in duplicates]} more than once")
    return buckets


def batch_bytes(bucket: Bucket, num_hint_keys: int) -> int:
    """Host memory one batch of `bucket` takes while it is made: its uint8 video and one uint8 RGB control per hint
    key, each held twice (the samples, and the batch that collate stacks them into)."""
    frames = bucket.batch_size * bucket.num_frames * bucket.height * bucket.width * 3
    return 2 * frames * (1 + num_hint_keys)


def bucket_memory_problems(spec: Sequence[Any], num_hint_keys: int, *, num_workers: int, prefetch_factor: int | None,
                           local_world_size: int, host_bytes: int | None) -> list[str]:
    """The largest bucket's batches in flight (each worker's prefetched batches, plus the one being collated and
    the one the trainer holds, on every local rank) against the host's available memory; the bucket list's own
    problems (DataError) as one problem too. For cosmos_transfer/preflight.py."""
    try:
        buckets = parse_buckets(spec)
    except DataError as error:
        return [f"dataloader_train.dataset.buckets: {error}"]
    if host_bytes is None:
        return []
    largest = max(buckets, key=lambda b: batch_bytes(b, num_hint_keys))
    in_flight = (num_workers * (prefetch_factor or 2) if num_workers > 0 else 0) + 2
    need = local_world_size * in_flight * batch_bytes(largest, num_hint_keys)
    if need <= host_bytes:
        return []
    gib = lambda n: f"{n / 2**30:,.1f} GiB"  # noqa: E731
    return [f"dataloader_train.dataset.buckets: a batch of bucket {largest} takes about "
            f"{gib(batch_bytes(largest, num_hint_keys))} of host memory (B x T x H x W x 3 bytes for the video and "
            f"each of {num_hint_keys} control(s), twice while collated), {in_flight} batches in flight on each of "
            f"{local_world_size} local rank(s): {gib(need)}, and this machine has {gib(host_bytes)} available; lower "
            "that bucket's size, length or batch size, or dataloader_train.num_workers"]


def _can_pad(height: int, width: int, bucket: Bucket) -> bool:
    try:
        fit_frame(height, width, (bucket.height, bucket.width))
    except BadSampleError:
        return False
    return True


def choose_bucket(height: int, width: int, num_clip_frames: int, stride: int, buckets: Sequence[Bucket]) -> int | None:
    """Index of the bucket for a clip of height x width and num_clip_frames frames (taken every `stride`-th), or
    None when it fills none. The rule is in the module docstring."""
    fitting = [i for i, b in enumerate(buckets)
               if window_start_range(num_clip_frames, b.num_frames, stride) > 0 and _can_pad(height, width, b)]
    if not fitting:
        return None
    clip_aspect = math.log(width / height)
    distance = {i: abs(buckets[i].log_aspect - clip_aspect) for i in fitting}
    nearest = min(distance.values())
    same_aspect = [i for i in fitting if distance[i] <= nearest + 1e-9]
    area = {i: buckets[i].height * buckets[i].width for i in same_aspect}
    no_upscale = [i for i in same_aspect if area[i] <= height * width]
    if no_upscale:
        return max(no_upscale, key=lambda i: (area[i], buckets[i].num_frames))
    return min(same_aspect, key=lambda i: (area[i], -buckets[i].num_frames))


class BucketedVideoDataset(VideoDataset):
    """VideoDataset whose clips are each loaded at their bucket's resolution and length.

    Takes VideoDataset's arguments. `num_frames` and `resolution` are the buckets' to decide: given (an experiment's
    single shape, composed under `data_train=custom_buckets`), they are not used, and `describe()` says so. Keys are
    (epoch, index, bucket) from BucketBatchSampler; `bucket_of[index]` is each clip's bucket. A bad clip found while
    loading is replaced as in VideoDataset, by a clip loaded at the same bucket's shape. Cached latents (one fixed
    window per clip) do not go with buckets.
    """

    def __init__(self, root: str, buckets: Sequence[Any], num_frames: int | None = None,
                 resolution: Sequence[int] | str | None = None, **kwargs):
        if kwargs.get("use_latents"):
            raise DataError("BucketedVideoDataset: use_latents is not supported (cached latents have one fixed "
                            "window and size per clip); use VideoDataset")
        self.buckets = parse_buckets(buckets)
        # What the buckets replace, for describe(): the experiment's settings for one shape.
        self.replaced = {name: value for name, value in (("num_frames", num_frames), ("resolution", resolution))
                         if value is not None}
        # The base scan checks the files, and the shortest window; a square frame accepts every clip within 3:1 of
        # square (reflection padding), and each clip's own bucket is checked below.
        side = max(max(b.height, b.width) for b in self.buckets)
        super().__init__(root, num_frames=min(b.num_frames for b in self.buckets), resolution=(side, side), **kwargs)
        kept, bucket_of = [], []
        for clip in self.clips:
            bucket = choose_bucket(clip.height, clip.width, clip.num_frames, frame_stride(clip.fps, self.fps),
                                   self.buckets)
            if bucket is None:
                self.bad_files.append((clip.video, f"{clip.height}x{clip.width}, {clip.num_frames} frames fills no "
                                                   f"bucket of {[str(b) for b in self.buckets]}"))
                log.warning("skipping clip %s: %s", *self.bad_files[-1])
                continue
            kept.append(clip)
            bucket_of.append(bucket)
        self.clips, self.bucket_of = kept, bucket_of
        self._check_bad_share(len(self.bad_files))
        if not self.clips:
            raise DataError(f"no clip of {self.root} fills any of the buckets {[str(b) for b in self.buckets]} (each "
                            "clip needs a window of the bucket's frames and an aspect ratio within 3:1 of the "
                            "bucket's); list buckets of your clips' sizes and lengths")
        self._views = []  # per bucket: this dataset at that bucket's shape (sharing the clips and the bad-clip set)
        for bucket in self.buckets:
            view = copy.copy(self)
            view.resolution, view.num_frames = (bucket.height, bucket.width), bucket.num_frames
            self._views.append(view)
        # This object itself has no one shape (only its per-bucket views load clips): none is reported for it.
        self.num_frames = self.resolution = None

    def describe(self) -> str:
        """The start-up line's account of the data: the buckets and how many clips went to each."""
        counts = ", ".join(f"{bucket} {count:,}" for bucket, count in self.bucket_counts().items())
        return f"{len(self.clips):,} in {self.root}, by bucket (HxWxT:B clips): {counts}"

    def bucket_counts(self) -> dict[str, int]:
        """Clips per bucket, for logging."""
        return {str(b): self.bucket_of.count(i) for i, b in enumerate(self.buckets)}

    def __getitem__(self, key) -> dict:
        if not (isinstance(key, (tuple, list)) and len(key) == 3):
            raise TypeError(f"BucketedVideoDataset keys are (epoch, index, bucket) from BucketBatchSampler, "
                            f"got {key!r}")
        epoch, index, bucket = (int(v) for v in key)
        return VideoDataset.__getitem__(self._views[bucket], (epoch, index))


class BucketBatchSampler(Sampler):
    """Yields batches [(epoch, index, bucket), ...], one bucket each: this rank's share of a (seed, epoch)-shuffled
    epoch, from `consumed` batches on (module docstring)."""

    def __init__(self, bucket_of: Sequence[int], buckets: Sequence[Bucket], rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, seed: int = 0):
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not valid for world_size {world_size}")
        self.bucket_of = [int(b) for b in bucket_of]
        self.buckets = list(buckets)
        if any(not 0 <= b < len(self.buckets) for b in self.bucket_of):
            raise ValueError(f"bucket_of names a bucket outside 0..{len(self.buckets) - 1}")
        self.rank, self.world_size, self.shuffle, self.seed = rank, world_size, shuffle, seed
        self.epoch = 0
        self.consumed = 0  # batches of this epoch already handed to the trainer on this rank
        if not self.epoch_batches(0):
            raise DataError(f"no bucket has enough clips for one batch on each of {world_size} ranks (clips per "
                            f"bucket: {self._bucket_counts()}); lower the batch sizes or merge buckets")

    def _generator(self, epoch: int, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 2 + stream)

    def epoch_batches(self, epoch: int) -> list[tuple[int, list[int]]]:
        """This rank's (bucket, indices) batches of `epoch`, in order; every rank gets the same number."""
        size = len(self.bucket_of)
        order = torch.randperm(size, generator=self._generator(epoch, 0)).tolist() if self.shuffle else range(size)
        members: list[list[int]] = [[] for _ in self.buckets]
        for index in order:
            members[self.bucket_of[index]].append(index)
        global_batches = []
        for bucket, indices in enumerate(members):
            step = self.buckets[bucket].batch_size * self.world_size
            global_batches += [(bucket, indices[s:s + step]) for s in range(0, len(indices) - step + 1, step)]
        if self.shuffle:
            permutation = torch.randperm(len(global_batches), generator=self._generator(epoch, 1)).tolist()
            global_batches = [global_batches[i] for i in permutation]
        out = []
        for bucket, indices in global_batches:
            batch_size = self.buckets[bucket].batch_size
            out.append((bucket, indices[self.rank * batch_size:(self.rank + 1) * batch_size]))
        return out

    def __len__(self) -> int:
        return len(self.epoch_batches(self.epoch)) - self.consumed

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch = self.epoch
        for bucket, indices in self.epoch_batches(epoch)[self.consumed:]:
            yield [(epoch, index, bucket) for index in indices]

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def fingerprint(self) -> str:
        """What must match for an exact resume: the buckets and every clip's bucket."""
        text = ";".join(map(str, self.buckets)) + "|" + ",".join(map(str, self.bucket_of))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _bucket_counts(self) -> dict[str, int]:
        return {str(b): self.bucket_of.count(i) for i, b in enumerate(self.buckets)}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "dataset_size": len(self.bucket_of), "buckets": self.fingerprint(),
                "bucket_counts": self._bucket_counts()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        if "buckets" in state and state["buckets"] != mine["buckets"]:
            # Older states hold only the fingerprint; newer ones the clips per bucket, which the message shows.
            saved = state.get("bucket_counts", f"buckets fingerprint {state['buckets']}")
            raise DataError(
                f"the checkpoint's data loader was saved with other buckets or another assignment of clips to "
                f"buckets (HxWxT:B: clips) {saved} than this run's {mine['bucket_counts']}; an exact resume needs "
                "the same dataset.buckets and clips. Resume with the checkpoint's buckets, or start a new job "
                "(job.name=...) with checkpoint.load_path set to this job's checkpoint to train on with the new ones"
            )
        for key in ("seed", "dataset_size", "world_size"):
            if key in state and state[key] != mine[key]:
                raise DataError(
                    f"data-loader state was saved with {key}={state[key]} but this run has {key}={mine[key]}; exact "
                    f"resume needs the same dataset, buckets, seed and number of data-parallel ranks"
                )
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        total = len(self.epoch_batches(epoch))
        if not 0 <= consumed <= total:
            raise DataError(f"data-loader state has consumed={consumed} batches, outside 0..{total}")
        self.epoch, self.consumed = epoch, consumed


class BucketDataLoader(PositionedDataLoader):
    """A PositionedDataLoader (data/sampler.py) of one-shape batches over a BucketBatchSampler (counted in batches).

    `replaced`: the settings for one shape that the buckets replace (the dataset's num_frames and resolution, the
    loader's batch_size), named by describe()."""

    def __init__(self, dataset: BucketedVideoDataset, batch_sampler: BucketBatchSampler,
                 replaced: dict[str, Any] | None = None, **kwargs):
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self.position = batch_sampler
        self.replaced = {**dataset.replaced, **(replaced or {})}

    def _epoch_used_up(self) -> bool:
        return self.batch_sampler.consumed >= len(self.batch_sampler.epoch_batches(self.batch_sampler.epoch))

    def _advance(self, batch) -> None:
        self.batch_sampler.consumed += 1

    def describe(self) -> str:
        """The start-up line's account of the data: the buckets, their clips, and what they replace."""
        text = self.dataset.describe()
        if self.replaced:
            settings = ", ".join(f"{name}={value}" for name, value in self.replaced.items())
            text += f" (the buckets set each batch's frames, size and batch size; {settings} not used)"
        return text


def build_bucket_dataloader(
    dataset: BucketedVideoDataset,
    shuffle: bool = True,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    batch_size: int | None = None,
    **worker_kwargs: Any,
) -> BucketDataLoader:
    """A resumable, sharded loader of one-shape batches (a LazyCall target); batch sizes are the buckets'.

    rank/world_size default to torch.distributed's (the trainer passes the data-parallel ones under context
    parallelism); `batch_size` (an experiment's, for one shape) is not used: each bucket has its own; worker_kwargs:
    num_workers, pin_memory, persistent_workers, prefetch_factor (data/sampler.py's worker_options)."""
    if not isinstance(dataset, BucketedVideoDataset):
        raise TypeError(f"build_bucket_dataloader needs a BucketedVideoDataset, got {type(dataset).__name__}")
    rank, world_size = data_parallel_rank_and_size(rank, world_size)
    sampler = BucketBatchSampler(dataset.bucket_of, dataset.buckets, rank=rank, world_size=world_size,
                                 shuffle=shuffle, seed=seed)
    replaced = {"batch_size": batch_size} if batch_size is not None else {}
    return BucketDataLoader(dataset, sampler, replaced=replaced, **worker_options(**worker_kwargs))
