#!/usr/bin/env python
"""Generate a video under control: a prompt, an input video and a control spec -> an mp4.

    python scripts/inference.py --experiment demo_edge_tiny --spec spec.json --out outputs/inference/demo.mp4 \\
        --text_encoder minilm --num_steps 12 --guidance 0 --side_by_side

The spec (see cosmos_transfer/inference/spec.py) names the prompt, the input video and, per hint key, a
`control_weight` (a number or a weight video) and optionally an `input_control` video; `edge` and `vis` controls
are computed from the input video when absent. The model is the experiment's training model, with weights from:
  (default)                     the experiment's job folder, latest checkpoint, EMA weights when the run kept them
  --checkpoint PATH             a job folder, a checkpoints/ or iter_* folder, or a .safetensors/.pt file of ours,
                                or an official base model .pt (add --control_checkpoint edge=edge_control.pt)
  --checkpoint none             no weights: the untrained model (for comparisons)
Long videos are generated window by window (--window_frames, default: the experiment's clip length), each window
conditioned on the previous one's last latent frames when the model is video2world.
Writes the video, `<out>.json` (the settings) and, with --side_by_side, `<out>_side_by_side.mp4`
(input | controls | output). Hydra overrides of the experiment go after `--`. None of these may be an input of the run
(the spec, its videos, the weights) or an existing folder: that is refused before anything is built; each is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # configs/ and experiments/ import from the repository root

from cosmos_transfer.cli import (  # noqa: E402
    MINILM,
    OutputPathError,
    add_resolution_argument,
    check_outputs,
    reported_as_user_errors,
    resolution_option,
    resolve_device,
    run_script,
    writing,
)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    overrides: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, overrides = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="the experiment the model was trained with")
    parser.add_argument("--spec", required=True, help="control spec JSON")
    parser.add_argument("--out", required=True, help="output video (.mp4)")
    parser.add_argument("--config", help="Python file defining make_config() (default: configs/train.py)")
    weights = parser.add_argument_group("weights")
    weights.add_argument("--checkpoint", help="job/checkpoint folder, weights file, official base .pt, or 'none'")
    weights.add_argument("--control_checkpoint", action="append", default=[], metavar="KEY=PATH",
                         help="an official control file for hint key KEY (repeatable), e.g. edge=edge_control.pt")
    weights.add_argument("--lora_checkpoint", metavar="PATH",
                         help="LoRA adapters written by export_checkpoint.py --lora separate, folded into the weights")
    weights.add_argument("--no_ema", action="store_true", help="use the regular weights, not the EMA")
    text = parser.add_argument_group("text")
    text.add_argument("--prompt", help="overrides the spec's prompt")
    text.add_argument("--negative_prompt", help="overrides the spec's negative prompt")
    text.add_argument("--text_encoder", "--text-encoder", dest="text_encoder",
                      help=f"{MINILM!r} (the demo's all-MiniLM-L6-v2) or a local Hugging Face folder (T5-XXL: "
                           "google-t5/t5-11b), as in scripts/prepare_dataset.py")
    text.add_argument("--text_length", type=int, help="tokens of the text embedding (default: the experiment's)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--seed", type=int, default=1)
    sampling.add_argument("--num_steps", type=int, default=35)
    sampling.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance (0: none)")
    sampling.add_argument("--sampler", choices=["res2ab", "euler", "heun", "unipc"],
                          help="default: the model's (EDM models: res2ab; Cosmos-2.5 rectified flow: unipc; "
                               "euler works for both)")
    sampling.add_argument("--sigma_max", type=float, help="initial noise level (default: the model's, 70)")
    sampling.add_argument("--sigma_min", type=float,
                          help="last noise level before the final x0 prediction (default: the model's, 0.002)")
    sampling.add_argument("--canny_threshold", default="medium",
                          choices=["very_low", "low", "medium", "high", "very_high"])
    sampling.add_argument("--blur_strength", default="medium",
                          choices=["very_low", "low", "medium", "high", "very_high"])
    video = parser.add_argument_group("video")
    add_resolution_argument(video, "--resolution",
                            help="generation size, HxW (default: the experiment's training resolution)")
    video.add_argument("--window_frames", type=int, help="frames per window (default: the experiment's num_frames)")
    video.add_argument("--conditioning_latent_frames", type=int, default=1,
                       help="latent frames each window takes from the previous one (video2world models)")
    video.add_argument("--max_frames", type=int, help="use only the first frames of the input")
    video.add_argument("--fps", type=float, help="output frame rate (default: the input's)")
    add_resolution_argument(video, "--output_size", help="resize the output video to HxW")
    video.add_argument("--side_by_side", action="store_true", help="also write input | controls | output")
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    runtime.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                         help="network precision (default: bfloat16 on cuda, float32 on cpu)")
    runtime.add_argument("--offload", action="store_true",
                         help="keep the tokenizer on the CPU between encodes/decodes (large models on one GPU)")
    args = parser.parse_args(argv)
    if not args.out.endswith(".mp4"):
        parser.error(f"--out must end in .mp4, got {args.out}")
    # Said now, not after the generation (a --fps of -1 failed when the video was written) or as numpy's words.
    for name in ("num_steps", "window_frames", "max_frames", "text_length", "fps", "sigma_max", "sigma_min"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name} must be positive, got {value}")
    if args.conditioning_latent_frames < 0:
        parser.error(f"--conditioning_latent_frames must be >= 0, got {args.conditioning_latent_frames}")
    args.resolution = resolution_option(parser, "--resolution", args.resolution)
    args.output_size = resolution_option(parser, "--output_size", args.output_size)
    return args, overrides


def check_inputs(args: argparse.Namespace, config) -> list[str]:
    """Every problem with the files this run needs, found before anything is read or built (one message)."""
    from cosmos_transfer.cli import TextEncoderError, resolve_text_encoder
    from cosmos_transfer.preflight import check_tokenizer_files

    problems = []
    if not os.path.isfile(args.spec):
        problems.append(f"--spec {args.spec!r} does not exist (a control spec JSON, docs/INFERENCE.md)")
    if args.text_encoder:
        try:
            args.text_encoder_folder = resolve_text_encoder(args.text_encoder)[0]
        except (TextEncoderError, ImportError) as error:
            problems.append(str(error))
    if args.checkpoint and args.checkpoint.lower() != "none" and not os.path.exists(args.checkpoint):
        problems.append(f"--checkpoint {args.checkpoint} does not exist")
    if args.lora_checkpoint and not os.path.isfile(args.lora_checkpoint):
        problems.append(f"--lora_checkpoint {args.lora_checkpoint} does not exist")
    for item in args.control_checkpoint:
        path = item.partition("=")[2]
        if path and not os.path.exists(path):
            problems.append(f"--control_checkpoint {item!r}: {path!r} does not exist")
    from cosmos_transfer.preflight import inference_memory_problems

    device_type = resolve_device(args.device).type
    half = (args.dtype or ("bfloat16" if device_type == "cuda" else "float32")) != "float32"
    problems += inference_memory_problems(config, device_type=device_type, half_precision=half)
    return problems + check_tokenizer_files(config)


def _dataset_option(config, name: str, default):
    try:
        value = config.dataloader_train["dataset"][name]
    except (KeyError, TypeError, AttributeError):
        return default
    return default if value is None else value


def _control_checkpoints(items: list[str]) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise ValueError(f"--control_checkpoint must be KEY=PATH (e.g. edge=edge_control.pt), got {item!r}")
        result[key] = path
    return result


def _make_config(config_file: str | None):
    """The make_config() of a --config file, or configs/train.py's."""
    if config_file is not None:
        from cosmos_transfer.config.compose import load_make_config

        return load_make_config(config_file)
    from configs.train import make_config

    return make_config


def check_output_paths(args: argparse.Namespace, spec, checkpoint_path: str | None) -> dict[str, str]:
    """The files this run writes (pipeline.output_paths), refused before any work if one is an input of the run."""
    from cosmos_transfer.inference.pipeline import output_paths

    paths = output_paths(args.out)
    inputs = {"--spec": args.spec, "the spec's input_video_path": spec.input_video,
              "the spec's prompt_embedding": spec.prompt_embedding,
              "the spec's negative_prompt_embedding": spec.negative_prompt_embedding,
              "--checkpoint": checkpoint_path, "--lora_checkpoint": args.lora_checkpoint, "--config": args.config}
    for key, control in spec.controls.items():
        inputs[f"the spec's {key} input_control"] = control.input_control
        if control.weight_is_map:
            inputs[f"the spec's {key} control_weight"] = control.control_weight
    for item in args.control_checkpoint:
        key, _, path = item.partition("=")
        inputs[f"--control_checkpoint {key}"] = path
    outputs = {"--out": paths["video"], "the settings file of --out": paths["settings"],
               "the side-by-side video of --out": paths["side_by_side"] if args.side_by_side else None}
    check_outputs(outputs, inputs)
    return paths


def _write_video(path: str, frames, fps: float) -> None:
    """write_video under a temporary name; PyAV's errors (which name no file) say which output failed."""
    import av

    from cosmos_transfer.video_io import write_video

    with writing(path) as temporary:
        try:
            write_video(temporary, frames, fps=fps)
        except av.FFmpegError as error:
            raise OutputPathError(f"cannot write the video {path}: {error}") from None


def run(args: argparse.Namespace, overrides: list[str]) -> dict:
    import numpy as np

    from cosmos_transfer.data.video import resolve_resolution
    from cosmos_transfer.inference import loading, pipeline
    from cosmos_transfer.inference.controls import prepare_inputs
    from cosmos_transfer.inference.spec import load_spec

    started = time.time()
    device = resolve_device(args.device)  # a machine without CUDA is told before anything is built
    control_checkpoints = _control_checkpoints(args.control_checkpoint)
    say = lambda message: print(f"[{time.time() - started:6.1f}s] {message}", flush=True)  # noqa: E731
    config = loading.compose_config(args.experiment, overrides, make_config=_make_config(args.config))
    problems = check_inputs(args, config)
    if problems:
        raise ValueError(f"{len(problems)} problem(s) found before reading anything:\n"
                         + "\n".join(f"  {i}. {problem}" for i, problem in enumerate(problems, 1)))
    spec = load_spec(args.spec)
    if args.prompt is not None:
        spec = spec.replace(prompt=args.prompt, prompt_embedding=None)
    if args.negative_prompt is not None:
        spec = spec.replace(negative_prompt=args.negative_prompt, negative_prompt_embedding=None)
    resolution = tuple(args.resolution) if args.resolution else resolve_resolution(
        _dataset_option(config, "resolution", "720"))
    window_frames = args.window_frames or int(_dataset_option(config, "num_frames", 121))
    text_length = args.text_length or int(_dataset_option(config, "text_embedding_length", 512))
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else None)
    checkpoint = args.checkpoint if args.checkpoint is not None else config.job.path
    checkpoint_path = None if checkpoint.lower() == "none" else loading.resolve_checkpoint(checkpoint)  # fail early
    paths = check_output_paths(args, spec, checkpoint_path)

    # Stage 1: inputs and text (the text encoder is released before the diffusion model is built).
    inputs = prepare_inputs(spec, resolution, canny_threshold=args.canny_threshold,
                            blur_strength=args.blur_strength, max_frames=args.max_frames)
    say(f"input: {inputs.num_frames} frames at {inputs.fps:g} fps, generated at {resolution[0]}x{resolution[1]}, "
        f"controls {sorted(inputs.controls)}")
    text = pipeline.encode_text(spec, length=text_length, text_encoder=getattr(args, "text_encoder_folder", None),
                                device=device)

    # Stage 2: the model.
    model = loading.build_model(config)
    if checkpoint_path is None:
        say("no checkpoint: the untrained model")
    else:
        keys = loading.load_weights(model, checkpoint_path, use_ema=not args.no_ema,
                                    control_checkpoints=control_checkpoints, report=say)
        say(f"loaded {len(keys)} weights from {checkpoint_path}" + ("" if args.no_ema else " (EMA where saved)"))
    if args.lora_checkpoint:
        from cosmos_transfer.lora import merge_adapter_file

        say(f"folded LoRA adapters into {len(merge_adapter_file(model, args.lora_checkpoint))} layers from "
            f"{args.lora_checkpoint}")
    loading.prepare_for_inference(model, device, dtype)

    # Stage 3: generation.
    options = pipeline.SamplingOptions(num_steps=args.num_steps, guidance=args.guidance, seed=args.seed,
                                       sampler=args.sampler, sigma_max=args.sigma_max, sigma_min=args.sigma_min,
                                       conditioning_latent_frames=args.conditioning_latent_frames)
    frames = pipeline.generate_video(model, inputs, text, window_frames=window_frames, options=options,
                                     offload_tokenizer=args.offload, progress=say, output=paths["video"])
    output = pipeline.resize_video(inputs.crop(frames), tuple(args.output_size) if args.output_size else None)
    fps = args.fps or inputs.fps
    _write_video(paths["video"], output, fps=fps)
    written = [paths["video"]]
    if args.side_by_side:
        panels = [inputs.crop(inputs.input_video)] if inputs.input_video is not None else []
        panels += [inputs.crop(inputs.controls[key]) for key in sorted(inputs.controls)]
        panels = [pipeline.resize_video(p, output.shape[1:3]) for p in panels] + [output]
        _write_video(paths["side_by_side"], pipeline.side_by_side(panels), fps=fps)
        written.append(paths["side_by_side"])
    settings = {
        "experiment": args.experiment,
        "spec": args.spec,
        "checkpoint": checkpoint_path,
        "ema": not args.no_ema,
        "overrides": overrides,
        "seed": args.seed,
        "num_steps": args.num_steps,
        "guidance": args.guidance,
        "sampler": args.sampler,
        "sigma_max": args.sigma_max,
        "sigma_min": args.sigma_min,
        "resolution": list(resolution),
        "window_frames": window_frames,
        "num_frames": int(output.shape[0]),
        "fps": fps,
        "controls": {k: (w if not isinstance(w, np.ndarray) else spec.controls[k].control_weight)
                     for k, w in inputs.weights.items()},
        "outputs": written,
        "seconds": round(time.time() - started, 2),
    }
    with writing(paths["settings"]) as temporary, open(temporary, "w", encoding="utf-8") as file:
        json.dump(settings, file, indent=2)
    say(f"wrote {', '.join(written)}")
    return settings


def main(argv: list[str] | None = None) -> int:
    """Generate; the exit status of the error boundary (a user error: one paragraph, 2)."""
    return run_script("inference", lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    from safetensors import SafetensorError

    # The loaders' and the pipeline's plain errors name the file, key or setting of this run that does not fit
    # (a checkpoint of another model, a window size, a damaged adapter file).
    with reported_as_user_errors(ValueError, KeyError, FileNotFoundError, SafetensorError):
        run(args, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
