"""Encode a dataset's videos once with the tokenizer and store the latents beside them, so training can skip it.

    python scripts/precompute_latents.py --root datasets/my_clips/train --num-frames 121 --resolution 720 \
        --tokenizer cosmos_cv8x8x8 [--checkpoint-dir checkpoints/nvidia/Cosmos-Tokenize1-CV8x8x8-720p]

For each root/videos/<stem>.mp4 this writes root/latents/<stem>.safetensors holding one tensor, `latent`
(float [C, T', H', W'], the normalized tokenizer latent of one fixed window), and string metadata that the dataset
checks when it reads it (VideoDataset(..., use_latents=True)):

    frame_start, frame_stride, num_frames   the window: frames start, start + stride, ... (num_frames of them)
    height, width                            the padded frame size the window was resized/reflection-padded to
    valid_height, valid_width                the video inside it
    tokenizer                                the tokenizer option, for the record

The frames are decoded exactly as the dataset decodes them (same resize, same reflection padding). Files are
safetensors (no pickle). Existing files are kept unless --overwrite. Exit status 1 if any video failed (each failure
is listed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from cosmos_transfer.data.video import (  # noqa: E402
    BadSampleError,
    decode_padded,
    fit_frame,
    frame_stride,
    resolve_resolution,
    window_indices,
    window_start_range,
)
from cosmos_transfer.cli import resolve_device  # noqa: E402
from cosmos_transfer.config.lazy import instantiate  # noqa: E402
from cosmos_transfer.video_io import VideoReadError, probe_video  # noqa: E402

TOKENIZER_OPTIONS = ("pixel", "cosmos_cv8x8x8", "cosmos_cv8x8x8_ours", "cosmos_cv8x8x8_random", "wan2pt1",
                     "wan2pt1_random")


def build_tokenizer(option: str, checkpoint_dir: str | None, device: str) -> torch.nn.Module:
    """A tokenizer option of configs/tokenizer.py (with its checkpoint folder, for the Cosmos ones)."""
    from configs import tokenizer as options

    nodes = {
        "pixel": options.PIXEL_TOKENIZER,
        "cosmos_cv8x8x8": options.COSMOS_CV8X8X8,
        "cosmos_cv8x8x8_ours": options.COSMOS_CV8X8X8_OURS,
        "cosmos_cv8x8x8_random": options.COSMOS_CV8X8X8_RANDOM,
        "wan2pt1": options.WAN2PT1,
        "wan2pt1_random": options.WAN2PT1_RANDOM,
    }
    if option not in nodes:
        raise ValueError(f"unknown tokenizer {option!r}; expected one of {list(nodes)}")
    # Without --checkpoint-dir the Cosmos options read $COSMOS_CHECKPOINT_DIR/nvidia/Cosmos-Tokenize1-CV8x8x8-720p.
    # wan2pt1 reads tokenizer.pth in --checkpoint-dir (e.g. checkpoints/nvidia/Cosmos-Predict2.5-2B).
    uses_files = option in ("cosmos_cv8x8x8", "cosmos_cv8x8x8_ours")
    kwargs = {"checkpoint_dir": checkpoint_dir} if checkpoint_dir and uses_files else {}
    if checkpoint_dir and option == "wan2pt1":
        kwargs = {"checkpoint_path": checkpoint_dir}
    return instantiate(nodes[option], **kwargs).to(device)


def encode_video(
    tokenizer: torch.nn.Module,
    path: str,
    num_frames: int,
    resolution: tuple[int, int],
    fps: float | None,
    frame_start: int,
    device: str,
) -> tuple[torch.Tensor, dict[str, str]]:
    """The latent [C,T',H',W'] of one window of `path`, decoded as the dataset decodes it, and its metadata."""
    info = probe_video(path)
    stride = frame_stride(info.fps, fps)
    if frame_start >= max(1, window_start_range(info.num_frames, num_frames, stride)):
        raise BadSampleError(
            f"{path}: {info.num_frames} frames are too few for a window of {num_frames} frames at stride {stride} "
            f"starting at frame {frame_start}"
        )
    fit = fit_frame(info.height, info.width, resolution)
    indices = window_indices(frame_start, num_frames, stride)
    frames = decode_padded(path, indices, fit)  # uint8 [T, H, W, 3]
    video = torch.from_numpy(frames).to(device).permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5 - 1.0
    latent = tokenizer.encode(video)[0].float().cpu().contiguous()
    meta = {
        "frame_start": str(frame_start),
        "frame_stride": str(stride),
        "num_frames": str(num_frames),
        "height": str(fit.height),
        "width": str(fit.width),
        "valid_height": str(fit.valid_height),
        "valid_width": str(fit.valid_width),
    }
    return latent, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="dataset folder (with videos/*.mp4)")
    parser.add_argument("--num-frames", type=int, required=True, help="frames per window (e.g. 121)")
    parser.add_argument("--resolution", required=True, help="a name (720, 480, 256, tiny) or HxW, e.g. 704x1280")
    parser.add_argument("--fps", type=float, default=None, help="target frame rate of the window (default: the clip's)")
    parser.add_argument("--frame-start", type=int, default=0, help="first frame of the window")
    parser.add_argument("--tokenizer", default="cosmos_cv8x8x8", choices=TOKENIZER_OPTIONS)
    parser.add_argument(
        "--checkpoint-dir", default=None, help="tokenizer folder (encoder.jit, decoder.jit, mean_std.pt)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="dtype of stored latents")
    parser.add_argument("--overwrite", action="store_true", help="re-encode videos that already have latents")
    args = parser.parse_args(argv)
    args.device = str(resolve_device(args.device))  # a missing GPU is said now, not after the tokenizer is built

    resolution = args.resolution
    if "x" in resolution:
        resolution = resolution.split("x")
    try:
        resolution = resolve_resolution(resolution)
    except ValueError as error:
        parser.error(str(error))
    videos = sorted(glob.glob(os.path.join(args.root, "videos", "*.mp4")))
    if not videos:
        print(f"precompute_latents: no videos found in {os.path.join(args.root, 'videos')} (expected *.mp4)")
        return 1
    try:
        tokenizer = build_tokenizer(args.tokenizer, args.checkpoint_dir, args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"precompute_latents: {error}")
        return 1
    try:
        tokenizer.latent_num_frames(args.num_frames)
    except ValueError as error:
        print(f"precompute_latents: --num-frames {args.num_frames}: {error}")
        return 1

    out_dir = os.path.join(args.root, "latents")
    os.makedirs(out_dir, exist_ok=True)
    failures, written, kept = [], 0, 0
    for path in videos:
        stem = os.path.splitext(os.path.basename(path))[0]
        target = os.path.join(out_dir, stem + ".safetensors")
        if os.path.exists(target) and not args.overwrite:
            kept += 1
            continue
        try:
            latent, meta = encode_video(
                tokenizer, path, args.num_frames, resolution, args.fps, args.frame_start, args.device
            )
        except (BadSampleError, VideoReadError, ValueError, OSError) as error:
            failures.append(f"{path}: {error}")
            continue
        meta["tokenizer"] = args.tokenizer
        tmp = target + ".tmp"
        save_file({"latent": latent.to(getattr(torch, args.dtype))}, tmp, metadata=meta)
        os.replace(tmp, target)  # never leave a half-written file under the final name
        written += 1
    print(f"precompute_latents: wrote {written}, kept {kept} existing, failed {len(failures)} -> {out_dir}")
    for line in failures:
        print(f"  failed: {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    from cosmos_transfer.cli import run_script

    sys.exit(run_script("precompute_latents", main))
