"""Data-loading throughput per worker: our VideoDataset against Cosmos-Transfer1's way of loading the same sample.

Peer: what Cosmos-Transfer1's example dataset does for an edge-control sample, re-run here on the same file:
decord `VideoReader(num_threads=2).get_batch(window)` at full resolution, `cv2.resize(INTER_AREA)` of every frame to
the 16:9 720p size, `cv2.Canny` with random thresholds per frame, 3-channel expansion, torch tensors [C, T, H, W].
Both also load the clip's T5 embedding and pad it to 512 tokens.
Ours: `VideoDataset[(epoch, index)]` with the edge control (seek to the window, resize inside the decoder, reflection
padding, padding mask, text embedding, caption).

Both run in this process, one sample at a time (= one data-loader worker), alternating, for the same windows.

    python benchmarks/dataloader.py            # 121 frames 1920x1080 -> 1280x704, and the demo size (17 x 64x64)
    python benchmarks/dataloader.py --quick    # fewer rounds

Needs `pip install decord` for the peer (not a dependency of the project).
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cosmos_transfer.data.dataset import VideoDataset  # noqa: E402
from cosmos_transfer.data.demo import make_clip  # noqa: E402
from cosmos_transfer.data.safe_pickle import safe_load  # noqa: E402
from cosmos_transfer.data.text_embeddings import save_text_embedding  # noqa: E402
from cosmos_transfer.video_io import write_video  # noqa: E402


def synthetic_clip(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Textured, moving content (so that H.264 has real work to do): drifting blurred noise plus moving discs."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, (height + num_frames, width + 2 * num_frames, 3), dtype=np.uint8)
    texture = cv2.GaussianBlur(noise, (0, 0), 6)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frame = np.ascontiguousarray(texture[t : t + height, 2 * t : 2 * t + width])
        for k in range(6):
            center = (int((width * (k + 1) / 7 + 5 * t) % width), int(height / 2 + height / 3 * np.sin(t / 9 + k)))
            cv2.circle(frame, center, height // 12, (255 - 40 * k, 40 * k, 128), -1)
        frames[t] = frame
    return frames


def make_folder(root: str, frames: np.ndarray, fps: float, copies: int = 2) -> None:
    for i in range(copies):
        stem = f"clip{i}"
        write_video(os.path.join(root, "videos", stem + ".mp4"), frames, fps, crf=20)
        os.makedirs(os.path.join(root, "metas"), exist_ok=True)
        with open(os.path.join(root, "metas", stem + ".txt"), "w") as file:
            file.write("a benchmark clip\n")
        embedding = np.random.default_rng(i).standard_normal((20, 1024)).astype(np.float16)
        save_text_embedding(os.path.join(root, "t5_xxl", stem + ".safetensors"), embedding, encoder="none",
                            max_length=512, caption="a benchmark clip")  # fmt: skip
        os.makedirs(os.path.join(root, "t5_pickle"), exist_ok=True)  # the peer's format: a list with one array
        with open(os.path.join(root, "t5_pickle", stem + ".pickle"), "wb") as file:
            pickle.dump([embedding], file)


class CosmosStyleEdgeSample:
    """The peer: Cosmos-Transfer1's example dataset steps for hint_key=control_input_edge, on our windows."""

    def __init__(self, size_hw: tuple[int, int]):
        import decord  # noqa: F401  (fail early with a clear ImportError)

        self.height, self.width = size_hw

    def __call__(self, path: str, frame_ids: list[int], rng: np.random.Generator) -> dict:
        from decord import VideoReader, cpu

        reader = VideoReader(path, ctx=cpu(0), num_threads=2)
        frames = reader.get_batch(frame_ids).asnumpy().astype(np.uint8)  # [T, H, W, C]
        fps = reader.get_avg_fps()
        frames = np.stack([cv2.resize(f, (self.width, self.height), interpolation=cv2.INTER_AREA) for f in frames])
        lower = int(rng.integers(20, 100))
        upper = min(255, lower + int(rng.integers(50, 150)))
        edges = np.stack([cv2.Canny(f, lower, upper) for f in frames])[None]
        # T5 embedding: Cosmos pickle.loads it; read here through our restricted unpickler (same C parser), padded to 512.
        embedding = safe_load(os.path.join(os.path.dirname(os.path.dirname(path)), "t5_pickle",
                                           os.path.basename(path)[:-4] + ".pickle"))[0]  # fmt: skip
        padded = np.zeros((512, embedding.shape[1]), np.float32)
        padded[: len(embedding)] = embedding
        return {
            "t5_text_embeddings": torch.from_numpy(padded),
            "video": torch.from_numpy(frames).permute(3, 0, 1, 2),
            "control_input_edge": torch.from_numpy(edges).expand(3, -1, -1, -1),
            "fps": fps,
            "padding_mask": torch.zeros(1, self.height, self.width),
        }


def bench_case(name: str, root: str, num_frames: int, resolution: tuple[int, int], rounds: int) -> dict:
    dataset = VideoDataset(root, num_frames=num_frames, resolution=resolution, hint_keys=["edge"],
                           text_embedding_length=512, text_embedding_dim=1024)  # fmt: skip
    peer = CosmosStyleEdgeSample(resolution)
    ours_s, peer_s = [], []
    for r in range(rounds):
        key = (r, r % len(dataset))
        start = time.perf_counter()
        sample = dataset[key]
        ours_s.append(time.perf_counter() - start)
        # The same window for the peer: ours picks it from (seed, epoch, index); recompute it the same way.
        clip = dataset.clips[key[1]]
        indices, _ = dataset._window(clip, np.random.default_rng([dataset.seed, key[0], key[1], 0]))
        start = time.perf_counter()
        peer_sample = peer(clip.video, indices, np.random.default_rng(r))
        peer_s.append(time.perf_counter() - start)
        assert sample["video"].shape[1] == peer_sample["video"].shape[1] == num_frames
    ours, theirs = statistics.median(ours_s), statistics.median(peer_s)
    return {"case": name, "ours": ours, "peer": theirs, "ratio": theirs / ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "cosmos_transfer_bench_data"))
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one data-loader worker's share; the decoders use their own threads (ours 1, decord 2)
    torch.set_num_threads(1)

    big = os.path.join(args.cache, "720p")
    if not os.path.isdir(os.path.join(big, "videos")):
        print("writing a 1920x1080, 130-frame test clip (once)...", flush=True)
        make_folder(big, synthetic_clip(130, 1080, 1920), fps=24.0)
    demo = os.path.join(args.cache, "demo")
    if not os.path.isdir(os.path.join(demo, "videos")):
        make_folder(demo, make_clip(0, size=64, num_frames=33)[0], fps=16.0)

    rows = [
        bench_case("121 frames, 1920x1080 -> 1280x704, edge", big, 121, (704, 1280), 3 if args.quick else 8),
        bench_case("17 frames, 64x64 (demo), edge", demo, 17, (64, 64), 20 if args.quick else 100),
    ]
    print()
    print("| case | ours (s/sample) | ours (samples/s/worker) | Cosmos-style decord (s/sample) | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['case']} | {row['ours']:.3f} | {1 / row['ours']:.2f} | {row['peer']:.3f} | "
              f"{row['ratio']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
