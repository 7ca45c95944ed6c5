#!/usr/bin/env python
"""The last step of `make demo`: generate the validation clips with the post-trained edge branch, with the control
on and off, through scripts/inference.py, score them with scripts/evaluate.py, and print the Edge F1 figures.

    python scripts/demo_report.py [--data datasets/demo/val] [-- Hydra overrides the job was trained with]
    python scripts/demo_report.py --print job|init|folder [-- overrides]    # where make demo reads and writes
    # the Cosmos-2.5 demo (experiments/demo_2p5.py, docs/DATASETS.md)
    python scripts/demo_report.py --experiment demo_edge_2p5_tiny

The job folder is the config's own `job.path` ($OUTPUT_ROOT/cosmos_transfer/demo/demo_edge_tiny, OUTPUT_ROOT defaulting
to ./outputs), composed from --experiment with the same overrides as the training run, so the report finds what
training wrote wherever OUTPUT_ROOT (or job.name) sends it; `--job` names another folder. `--print` answers the
Makefile: the job folder, the converted base the branch starts from (`init`: demo_edge_init.safetensors beside the job
folder), or the demo's folder that holds both (`folder`: what `make clean-demo` removes).

For each validation clip it writes, under <job>/demo_report/:
  inputs/<clip>.mp4        the clip's first 17 frames at 32 x 32 (the size the demo trains at)
  <clip>/spec.json         the inference spec (input video, caption embedding, edge control weight 1)
  <clip>/edge_on.mp4       scripts/inference.py --spec spec.json (+ _side_by_side.mp4: input | control | output)
  <clip>/edge_off.mp4      the same with the control's weight at 0 (spec_off.json): the frozen base alone
  <clip>/*.metrics.json    scripts/evaluate.py --video ... --spec ... (Edge F1 against the clip's edge control,
                           blur SSIM against the input)
and side_by_side.gif (edge control | generated | ground truth, a row per clip). Each command is printed as it would
be typed; they run in this process (the scripts' main()) so that torch is imported once.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

EXPERIMENT = "demo_edge_tiny"
INIT_FILE = "demo_edge_init.safetensors"  # the shipped base converted with a new edge branch (make demo, step 2)
PATHS = ("job", "init", "folder")
# inference.py's default number of steps (NVIDIA's 35): Edge F1 0.410 against 0.382 at 12 (BENCHMARKS.md, issue 17).
# Guidance 0: guidance 3 scored worse on the demo (0.177 against 0.251 on an earlier branch).
NUM_STEPS = 35
SAMPLING = ["--num_steps", str(NUM_STEPS), "--guidance", "0", "--seed", "1"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default=EXPERIMENT,
                        help="the job's experiment: demo_edge_tiny (Transfer1) or demo_edge_2p5_tiny (Cosmos-2.5)")
    parser.add_argument("--job", help="the trained job folder (default: the config's job.path)")
    parser.add_argument("--print", choices=PATHS, dest="print_path",
                        help="print the job folder, the converted base (init) or the demo folder, and exit")
    parser.add_argument("--data", default="datasets/demo/val", help="validation clips (videos/, minilm_l6/)")
    parser.add_argument("--num_clips", type=int, default=8)
    parser.add_argument("--gif_clips", type=int, default=3, help="clips shown in side_by_side.gif")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides the job was trained with (after --)")
    return parser


def demo_paths(overrides: list[str], experiment: str = EXPERIMENT) -> dict[str, str]:
    """Where the demo job of these overrides lives: the composed config's job.path, the converted base beside it, and
    the folder holding both (the one place make demo, the trainer and this report learn them from)."""
    from configs.train import make_config
    from cosmos_transfer.config.compose import override

    job = str(override(make_config(), [f"experiment={experiment}", *overrides]).job.path)
    folder = os.path.dirname(os.path.normpath(job))
    return {"job": job, "init": os.path.join(folder, INIT_FILE), "folder": folder}


def demo_input(video_path: str, out_path: str, num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """The clip's first `num_frames` frames at `size` (area resize), written as a lossless-looking mp4."""
    from cosmos_transfer.video_io import read_video, write_video

    frames, fps = read_video(video_path)
    if len(frames) < num_frames:
        raise SystemExit(f"{video_path} has {len(frames)} frames; the demo needs {num_frames}")
    small = np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) for f in frames[:num_frames]])
    write_video(out_path, small, fps, crf=10, pix_fmt="yuv444p")
    return read_video(out_path)[0]  # what inference and evaluation read back


def _run(name: str, main, argv: list[str]) -> None:
    print(f"$ python scripts/{name}.py " + " ".join(argv), flush=True)
    code = main(argv)
    if code:
        raise SystemExit(f"scripts/{name}.py exited with {code}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.print_path:
        print(demo_paths(args.overrides, args.experiment)[args.print_path])
        return 0
    if args.job is None:
        args.job = demo_paths(args.overrides, args.experiment)["job"]
    import evaluate
    import inference
    import torch

    torch.set_num_threads(1)  # a 32x32 net: on a shared 2-core machine a second thread costs more than it gives

    from configs.train import make_config
    from cosmos_transfer.inference import loading
    from cosmos_transfer.metrics import canny_edges
    from cosmos_transfer.video_io import read_video, write_gif

    config = loading.compose_config(args.experiment, args.overrides, make_config=make_config)
    objective = config.model.get("objective")
    sampler = objective["default_method"] if objective else "res2ab"  # the objective's method: what inference uses
    dataset = config.dataloader_train["dataset"]
    num_frames, size = int(dataset["num_frames"]), tuple(int(v) for v in dataset["resolution"])
    embeddings = dataset["text_embedding_folder"]
    videos = sorted(glob.glob(os.path.join(args.data, "videos", "*.mp4")))[: args.num_clips]
    if not videos:
        raise SystemExit(f"no validation clips in {args.data}/videos (make them: scripts/make_demo_dataset.py)")
    out = os.path.join(args.job, "demo_report")
    os.makedirs(os.path.join(out, "inputs"), exist_ok=True)
    overrides = ["--", *args.overrides] if args.overrides else []
    scores = {"on": {"edge_f1": [], "blur_ssim": []}, "off": {"edge_f1": [], "blur_ssim": []}}
    rows = []
    for video in videos:
        stem = os.path.splitext(os.path.basename(video))[0]
        folder = os.path.join(out, stem)
        os.makedirs(folder, exist_ok=True)
        input_path = os.path.abspath(os.path.join(out, "inputs", stem + ".mp4"))
        truth = demo_input(video, input_path, num_frames, size)
        embedding = os.path.abspath(os.path.join(args.data, embeddings, stem + ".safetensors"))
        generated = {}
        for state, weight in (("on", 1.0), ("off", 0.0)):
            spec = os.path.join(folder, "spec.json" if state == "on" else "spec_off.json")
            with open(spec, "w", encoding="utf-8") as file:
                json.dump({"input_video_path": input_path, "prompt_embedding": embedding,
                           "edge": {"control_weight": weight}}, file, indent=2)
            result = os.path.join(folder, f"edge_{state}.mp4")
            _run("inference", inference.main, ["--experiment", args.experiment, "--checkpoint", args.job,
                                               "--spec", spec, "--out", result, *SAMPLING, "--side_by_side",
                                               *overrides])
            metrics = os.path.join(folder, f"edge_{state}.metrics.json")
            _run("evaluate", evaluate.main, ["--video", result, "--spec", spec, "--out", metrics])
            with open(metrics, encoding="utf-8") as file:
                values = json.load(file)["metrics"]
            for key in scores[state]:
                scores[state][key].append(values[key])
            generated[state] = read_video(result)[0]
        rows.append((truth, generated["on"]))

    gif_rows = []
    for truth, output in rows[: args.gif_clips]:
        edges = np.repeat(canny_edges(truth, "medium")[..., None], 3, axis=-1).astype(np.uint8) * 255
        gif_rows.append(np.concatenate([edges, output, truth], axis=2))  # control | generated | ground truth
    panel = np.concatenate(gif_rows, axis=1)
    panel = panel.repeat(3, axis=1).repeat(3, axis=2)  # 3x, nearest: 32-pixel frames are too small to see
    gif = os.path.join(out, "side_by_side.gif")
    write_gif(gif, panel, fps=8)

    mean = {state: {k: statistics.mean(v) for k, v in s.items()} for state, s in scores.items()}
    ratio = mean["on"]["edge_f1"] / max(mean["off"]["edge_f1"], 1e-9)
    print(f"\nDemo result ({len(videos)} validation clips, {num_frames} frames at {size[0]}x{size[1]}, "
          f"{NUM_STEPS} {sampler} steps, guidance 0, seed 1, EMA weights):")
    print("| edge control | Edge F1 mean | Edge F1 min..max | blur SSIM |")
    print("| --- | ---: | ---: | ---: |")
    for state, label in (("on", "weight 1 (trained branch)"), ("off", "weight 0 (frozen base alone)")):
        f1 = scores[state]["edge_f1"]
        print(f"| {label} | {mean[state]['edge_f1']:.3f} | {min(f1):.3f}..{max(f1):.3f} | "
              f"{mean[state]['blur_ssim']:.3f} |")
    print(f"Edge F1 with the control on / off: {ratio:.2f}x")
    print(f"Videos: {out}/<clip>/edge_on.mp4, edge_off.mp4, *_side_by_side.mp4 (input | control | output); "
          f"metrics: {out}/<clip>/*.metrics.json")
    print(f"GIF (edge control | generated | ground truth): {gif}")
    print(f"Training samples (every validation): {os.path.join(args.job, 'samples')}")
    return 0


if __name__ == "__main__":
    from cosmos_transfer.cli import run_script

    sys.exit(run_script("demo_report", main))
