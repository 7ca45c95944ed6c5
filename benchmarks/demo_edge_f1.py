"""Control adherence of the demo model: Edge F1 (and blur SSIM) of the trained `demo_edge_tiny` against the same
model untrained (random base, zero-initialized control branch), on the demo's validation clips.

Peer: the untrained model; and the trained model with the control's weight set to 0, which tells how much of the
trained score comes from following the control rather than from the base making cleaner pictures. All generate
each clip with the same seed, steps and guidance, through the inference pipeline (cosmos_transfer/inference) with
the clip's own caption embedding; the edge control is computed from the clip (Canny, `medium`) and the output's
Canny edges are compared with it (cosmos_transfer/metrics.py). The runs alternate their order clip by clip.

    .venv/bin/python benchmarks/demo_edge_f1.py --job outputs/cosmos_transfer/demo/demo_edge_tiny --data datasets/demo/val
    (a model trained with overrides: add the same ones after `--`)
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from configs.train import make_config  # noqa: E402
from cosmos_transfer.inference import loading, pipeline  # noqa: E402
from cosmos_transfer.inference.controls import prepare_inputs  # noqa: E402
from cosmos_transfer.inference.spec import parse_spec  # noqa: E402
from cosmos_transfer.metrics import blur_ssim, edge_f1  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="demo_edge_tiny")
    parser.add_argument("--job", default="outputs/cosmos_transfer/demo/demo_edge_tiny", help="trained job folder")
    parser.add_argument("--data", default="datasets/demo/val", help="clips: videos/ and minilm_l6/ embeddings")
    parser.add_argument("--num_clips", type=int, default=8)
    parser.add_argument("--num_steps", type=int, default=12)
    parser.add_argument("--guidance", type=float, default=0.0)
    parser.add_argument("--sigma_min", type=float, help="last noise level (default: the model's, 0.002)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no_ema", action="store_true")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides the model was trained with (after --)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    config = loading.compose_config(args.experiment, args.overrides, make_config=make_config)
    dataset = config.dataloader_train["dataset"]
    resolution = tuple(dataset["resolution"])
    window = int(dataset["num_frames"])
    length = int(dataset["text_embedding_length"])
    folder = dataset["text_embedding_folder"]

    trained = loading.build_model(config)
    checkpoint = loading.resolve_checkpoint(args.job)
    loading.load_weights(trained, checkpoint, use_ema=not args.no_ema)
    untrained = loading.build_model(config)
    trained = loading.prepare_for_inference(trained, "cpu")
    # (model, control weight): the third run tells the control's share of the trained model's score from the base's
    models = {"trained": (trained, 1.0),
              "untrained": (loading.prepare_for_inference(untrained, "cpu"), 1.0),
              "trained, control weight 0": (trained, 0.0)}
    options = pipeline.SamplingOptions(num_steps=args.num_steps, guidance=args.guidance, seed=args.seed,
                                       sigma_min=args.sigma_min)

    videos = sorted(glob.glob(os.path.join(args.data, "videos", "*.mp4")))[: args.num_clips]
    if not videos:
        raise SystemExit(f"no videos in {args.data}/videos")
    scores = {name: {"edge_f1": [], "blur_ssim": []} for name in models}
    started = time.time()
    for index, video in enumerate(videos):
        stem = os.path.splitext(os.path.basename(video))[0]
        order = list(models) if index % 2 == 0 else list(reversed(models))  # alternate who goes first
        for name in order:
            model, weight = models[name]
            spec = parse_spec({"prompt_embedding": os.path.join(args.data, folder, stem + ".safetensors"),
                               "input_video_path": video, "edge": {"control_weight": weight}}, source=stem)
            inputs = prepare_inputs(spec, resolution, max_frames=window)
            text = pipeline.encode_text(spec, length=length)
            frames = pipeline.generate_video(model, inputs, text, window_frames=window, options=options)
            output, control = inputs.crop(frames), inputs.crop(inputs.controls["edge"])
            scores[name]["edge_f1"].append(edge_f1(output, control))
            scores[name]["blur_ssim"].append(blur_ssim(output, inputs.crop(inputs.input_video)))
        print(f"clip {index + 1}/{len(videos)} {stem}: " + ", ".join(
            f"{name} F1 {scores[name]['edge_f1'][-1]:.3f}" for name in models), file=sys.stderr)

    mean = {name: {k: statistics.mean(v) for k, v in s.items()} for name, s in scores.items()}
    ratio = mean["trained"]["edge_f1"] / max(mean["untrained"]["edge_f1"], 1e-9)
    print(heading(args, pipeline.sampler_name(trained, options), len(videos), window, resolution, checkpoint,
                  time.time() - started))
    print("| model | Edge F1 (mean) | Edge F1 (min..max) | blur SSIM |")
    print("| --- | ---: | ---: | ---: |")
    for name in models:
        f1 = scores[name]["edge_f1"]
        print(f"| {name} | {mean[name]['edge_f1']:.3f} | {min(f1):.3f}..{max(f1):.3f} | {mean[name]['blur_ssim']:.3f} |")
    print(f"\ntrained / untrained Edge F1: {ratio:.2f}x")
    print("(the F1 of each run is against the clip's edge control, also for the run that ignores it)")
    return 0


def heading(args: argparse.Namespace, sampler: str, num_clips: int, window: int, resolution: tuple[int, int],
            checkpoint: str, seconds: float) -> str:
    """The line above the table: what was generated and how (`sampler`: the one the model's objective used)."""
    sigma_min = f", sigma_min {args.sigma_min}" if args.sigma_min is not None else ""
    return (f"\nDemo control adherence ({num_clips} validation clips of {window} frames at {resolution[0]}x"
            f"{resolution[1]}, {args.num_steps} {sampler} steps, guidance {args.guidance:g}{sigma_min}, "
            f"{'regular' if args.no_ema else 'EMA'} weights from {checkpoint}; {seconds:.0f} s)\n")


if __name__ == "__main__":
    sys.exit(main())
