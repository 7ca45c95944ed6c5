#!/usr/bin/env python
"""Control adherence of a generated video, and its fidelity to a ground truth, as JSON.

    python scripts/evaluate.py --video outputs/inference/output.mp4 --input_video input.mp4 --out metrics.json
    python scripts/evaluate.py --video outputs/inference/output.mp4 --spec spec.json

Metrics (see cosmos_transfer/metrics.py): `edge_f1` (Canny edges of the video against the edge control: the spec's
or --edge_video's `input_control`, else the Canny edges of the input video), `blur_ssim` (against the input video,
both blurred like the `vis` control), and `psnr` / `ssim` against --ground_truth. With --spec, the input video and
the edge control come from the spec (the file given to scripts/inference.py); explicit options win. --out may not be
one of the videos or the spec (refused before anything is read).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cosmos_transfer.cli import check_outputs, reported_as_user_errors, run_script, writing  # noqa: E402
from cosmos_transfer.data.controls import BLUR_PRESETS, EDGE_PRESETS  # noqa: E402
from cosmos_transfer.metrics import evaluate_video  # noqa: E402
from cosmos_transfer.video_io import read_video  # noqa: E402


def _from_spec(path: str) -> tuple[str | None, str | None]:
    """(input video, edge control video) named by an inference spec file; paths relative to the spec's folder."""
    from cosmos_transfer.inference.spec import load_spec

    spec = load_spec(path)
    edge = spec.controls.get("edge")
    return spec.input_video, (edge.input_control if edge is not None else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True, help="the generated video (mp4/gif)")
    parser.add_argument("--spec", help="the inference spec JSON: supplies the input video and edge control")
    parser.add_argument("--input_video", help="the input video the generation was controlled by")
    parser.add_argument("--edge_video", help="the edge control video (white edges on black)")
    parser.add_argument("--ground_truth", help="a ground-truth video for PSNR/SSIM")
    parser.add_argument("--canny_threshold", default="medium", choices=list(EDGE_PRESETS))
    parser.add_argument("--blur_strength", default="medium", choices=[k for k in BLUR_PRESETS if k != "none"])
    parser.add_argument("--out", help="write the JSON here as well as to stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Evaluate; the exit status of the error boundary (a user error: one paragraph, 2)."""
    return run_script("evaluate", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    input_path, edge_path = _from_spec(args.spec) if args.spec else (None, None)
    input_path = args.input_video or input_path
    edge_path = args.edge_video or edge_path
    check_outputs({"--out": args.out}, {"--video": args.video, "--spec": args.spec, "--input_video": input_path,
                                        "--edge_video": edge_path, "--ground_truth": args.ground_truth})
    video, _ = read_video(args.video)
    load = lambda path: read_video(path)[0] if path else None  # noqa: E731
    with reported_as_user_errors(ValueError):  # metrics.py's: videos that do not match, nothing to compare
        results = evaluate_video(
            video,
            input_video=load(input_path),
            edge_video=load(edge_path),
            ground_truth=load(args.ground_truth),
            canny_threshold=args.canny_threshold,
            blur_strength=args.blur_strength,
        )
    report = {
        "video": args.video,
        "input_video": input_path,
        "edge_video": edge_path,
        "ground_truth": args.ground_truth,
        "canny_threshold": args.canny_threshold,
        "blur_strength": args.blur_strength,
        "num_frames": int(video.shape[0]),
        "metrics": results,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        with writing(args.out) as temporary, open(temporary, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
