"""Damaged H.264: how much our decoding catches, why it is single-threaded, and what that costs.

1. Detection: random byte flips inside the coded pictures of an mp4 (header intact), decoded by our read_video
   against the way we decoded before (FFmpeg's automatic threads, no check of the frames).
2. The threading race: how often a frame-threaded decode of a damaged clip returns no "concealed" flag at all.
3. Cost: a 60-frame 1920x1080 clip decoded and resized to 1252x704, single-threaded (ours now) against frame threads.

    python benchmarks/corrupt_video.py
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import sys
import tempfile
import time

import av
import av.logging
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cosmos_transfer.video_io import VideoReadError, read_frames, read_video, write_video  # noqa: E402


def textured(num_frames, height, width, seed=0, block=8):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height // block + 1, width // block + 1, 3), dtype=np.uint8)
    base = base.repeat(block, 0).repeat(block, 1)
    return np.stack([np.roll(base, 2 * t, axis=1)[:height, :width] for t in range(num_frames)])


def packets(path):
    with av.open(path) as container:
        return [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]


def old_decode(path):
    """What read_video did before: FFmpeg's automatic threads, every frame returned. Runs in a child process: freeing
    a frame-threaded decoder after some errors never returns (seen here), which a child survives with a timeout."""
    av.logging.set_level(av.logging.PANIC)
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
    except av.FFmpegError:
        return None


def flagged_frames(path, thread_type, count):
    """Indices of the frames a full decode with these threads marks as concealed (None on a decode error)."""
    av.logging.set_level(av.logging.PANIC)
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type, stream.thread_count = thread_type, count
            return tuple(i for i, frame in enumerate(container.decode(stream)) if frame.is_corrupt)
    except av.FFmpegError:
        return None


def _ready():
    return True


class Child:
    """Runs a function in a child process with a timeout; "hung" when it does not return."""

    def __init__(self, timeout_s=15.0):
        self.timeout_s, self.pool = timeout_s, None

    def __call__(self, function, *args):
        if self.pool is None:
            self.pool = multiprocessing.get_context("spawn").Pool(1)
            self.pool.apply(_ready)  # the child's imports take seconds: they must not count against the timeout
        try:
            return self.pool.apply_async(function, args).get(self.timeout_s)
        except multiprocessing.TimeoutError:
            self.pool.terminate()
            self.pool = None
            return "hung"


def detection(folder, rng, trials=150):
    child = Child()
    print("1. detection: random flips of 1-3 bytes inside one coded picture (any, key frames included)")
    for name, (height, width, crf) in {"64x96 crf 18": (64, 96, 18), "240x320 crf 23": (240, 320, 23)}.items():
        path, damaged = os.path.join(folder, "clip.mp4"), os.path.join(folder, "damaged.mp4")
        write_video(path, textured(30, height, width), fps=24, crf=crf)
        good, _ = read_video(path)
        data, counts = open(path, "rb").read(), collections.Counter()
        for _ in range(trials):
            pos, size = packets(path)[rng.integers(len(packets(path)))]
            bad = bytearray(data)
            for _ in range(int(rng.integers(1, 4))):
                bad[pos + int(rng.integers(min(8, size - 1), size))] ^= int(rng.integers(1, 256))
            with open(damaged, "wb") as file:
                file.write(bad)
            before = child(old_decode, damaged)
            if isinstance(before, str):
                old, visible = "decoder hung", True
            elif before is None:
                old, visible = "refused (decode error)", True
            else:
                visible = before.shape != good.shape or np.abs(before.astype(int) - good).mean(axis=(1, 2, 3)).max() > 1
                old = "accepted, visibly damaged" if visible else "accepted, identical"
            try:
                read_video(damaged)
                new = "accepted, visibly damaged" if visible else "accepted, identical"
            except VideoReadError as error:
                new = "refused (concealed frame)" if "is damaged" in str(error) else "refused (decode error)"
            counts[("before", old)] += 1
            counts[("now", new)] += 1
        for when in ("before", "now"):
            row = {k[1]: v for k, v in sorted(counts.items()) if k[0] == when}
            print(f"   {name:>15} {when:>6}: {row}")


def first_flag_then_close(path, thread_type, count):
    """Decode until the first frame marked as concealed, then close the file, as a reader that stops early does."""
    av.logging.set_level(av.logging.PANIC)
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type, stream.thread_count = thread_type, count
            return any(frame.is_corrupt for frame in container.decode(stream))
    except av.FFmpegError:
        return None


def race_clip(path):
    """40 frames of 640x368 blocks (the clip these runs were first seen on)."""
    rng = np.random.default_rng(0)
    rng.integers(0, 255, (8, 12, 3))
    base = rng.integers(0, 255, (46, 80, 3)).repeat(8, 0).repeat(8, 1)
    frames = np.zeros((40, 368, 640, 3), np.uint8)
    for t in range(40):
        frames[t] = np.roll(base, 2 * t, axis=1) // 2 + t
    write_video(path, frames, fps=24, crf=18)


def threading_race(folder, runs=10):
    print("2. threads: decodes of a damaged 640x368 clip, each in a child process (5 s timeout)")
    path, damaged = os.path.join(folder, "race.mp4"), os.path.join(folder, "race_damaged.mp4")
    race_clip(path)
    data, child = open(path, "rb").read(), Child(timeout_s=5.0)
    for which in (3, 20, 30):  # pictures in file order: a P-picture and two later ones
        pos, size = packets(path)[which]
        bad = bytearray(data)
        for k in range(pos + size // 2, pos + size // 2 + 8):
            bad[k] ^= 0x5A
        with open(damaged, "wb") as file:
            file.write(bad)
        print(f"   picture {which}: flagged frames without threads {child(flagged_frames, damaged, 'NONE', 1)}")
        for thread_type, count in [("NONE", 1), ("FRAME", 2), ("AUTO", 0), ("SLICE", 2)]:
            full = collections.Counter()
            for _ in range(runs):
                result = child(flagged_frames, damaged, thread_type, count)
                full["hung" if result == "hung" else "error" if result is None else "flagged" if result else "missed"] += 1
            early = collections.Counter(str(child(first_flag_then_close, damaged, thread_type, count))
                                        for _ in range(runs))  # fmt: skip
            print(f"   {thread_type:>5}: full decode {dict(full)}; stop at the first flag {dict(early)}")


def cost(folder, repeats=3):
    print("3. cost: 60 frames 1920x1080 -> 1252x704 (best of", repeats, ")")
    path = os.path.join(folder, "hd.mp4")
    write_video(path, textured(60, 1080, 1920, block=16), fps=24, crf=23)

    def frame_threaded():
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type, stream.thread_count = "FRAME", 2
            for frame in container.decode(stream):
                frame.reformat(width=1252, height=704, format="rgb24", interpolation="AREA").to_ndarray()

    for name, run in [("ours, one thread", lambda: read_frames(path, list(range(60)), size=(704, 1252))),
                      ("frame threads x2", frame_threaded)]:  # fmt: skip
        best_wall, best_cpu = float("inf"), float("inf")
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
        print(f"   {name:>17}: {best_wall:.2f} s wall, {best_cpu:.2f} s CPU")


def main():
    av.logging.set_level(av.logging.PANIC)  # FFmpeg's own messages about the damage would flood the output
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        detection(folder, rng)
        threading_race(folder)
        cost(folder)


if __name__ == "__main__":
    main()
