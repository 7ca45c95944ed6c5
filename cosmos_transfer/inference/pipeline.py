"""Controlled video generation: spec + model -> video, window by window.

    inputs = prepare_inputs(load_spec("spec.json"), resolution=(64, 64))
    text = encode_text(spec, text_encoder="demo", length=40)
    frames = generate_video(model, inputs, text, window_frames=17, options=SamplingOptions(num_steps=35))

The model is the training model itself (DiffusionModel / ControlDiffusionModel): its `generate_samples` (classifier-
free guidance, the samplers of diffusion/samplers.py), `encode` and `decode`. Long inputs are generated in windows
(inference/windows.py); each window after the first is conditioned on the previous window's last frames, encoded
into its first latent frames (video2world), so that the windows join without a seam.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from cosmos_transfer.config.errors import UserError
from cosmos_transfer.hints import batch_key, normalize_hint_key
from cosmos_transfer.inference.controls import GenerationInputs
from cosmos_transfer.inference.spec import InferenceSpec, SpecError
from cosmos_transfer.inference.windows import Window, plan_windows, window_slice


class GenerationError(UserError, RuntimeError):
    """A generation whose result is no picture (NaN from the model, or one value everywhere): it is not written, and
    the message names the likely cause. Almost always non-finite numbers in what went in (weights, adapters, control
    weights, text embeddings), hence a user error (exit 2)."""


_LIKELY_CAUSE = (
    "non-finite numbers in the model or its inputs: a weights file or checkpoint of a run that diverged, LoRA "
    "adapters, a control weight or a text embedding holding NaN or inf (a float16 --dtype can also overflow; use "
    "bfloat16)"
)


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    num_steps: int = 35
    guidance: float = 5.0  # x0 = cond + guidance * (cond - uncond); 0 = no classifier-free guidance
    seed: int = 1
    sampler: str | None = None  # None: the model's objective's (EDM: "res2ab", rectified flow: "unipc")
    sigma_max: float | None = None  # None: the model's (70, as Cosmos)
    sigma_min: float | None = None  # None: the model's (0.002); the last step returns the x0 prediction there
    conditioning_latent_frames: int = 1  # latent frames each window takes from the previous one (Cosmos: 1)


def sampler_name(model: nn.Module, options: SamplingOptions) -> str:
    """The sampler a generation with `options` uses: the one asked for, else the model's objective's default (EDM:
    "res2ab", rectified flow: "unipc"); what reports and settings files should call it."""
    return options.sampler or model.objective.default_method


@dataclasses.dataclass
class TextInputs:
    embeddings: torch.Tensor  # float32 [L, D]
    mask: torch.Tensor  # float32 [L]
    negative_embeddings: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None


# ------------------------------------------------------------------------------------------------------------- text
def encode_text(
    spec: InferenceSpec,
    *,
    length: int,
    text_encoder: str | None = None,
    device: str | torch.device = "cpu",
) -> TextInputs:
    """Text embeddings of the spec's prompt (and negative prompt), padded to `length` tokens.

    `prompt_embedding` files are read as they are; a `prompt` string needs `text_encoder`: a local Hugging Face
    folder (T5-XXL for the official weights) or "demo" (all-MiniLM-L6-v2, the CPU demo's encoder). The encoder is
    loaded, used and released here, before the diffusion model is built (it never shares memory with it).
    """
    from cosmos_transfer.data.text_embeddings import load_text_embedding, pad_text_embedding

    encoder = None
    if spec.prompt is not None or (spec.negative_prompt is not None and spec.negative_prompt_embedding is None):
        if not text_encoder:
            raise SpecError(
                f"{spec.source}: the spec has a 'prompt' (text) but no text encoder was given; pass --text_encoder "
                "(a local Hugging Face folder such as google-t5/t5-11b's encoder, or 'demo'), or give "
                "'prompt_embedding' (a precomputed embedding file) instead"
            )
        from cosmos_transfer.data.text_encoders import demo_text_encoder_dir, load_text_encoder

        folder = demo_text_encoder_dir() if text_encoder == "demo" else text_encoder
        # T5 / MiniLM, or Cosmos-Reason1 for the 2.5 models (picked from the folder's config, as prepare_dataset.py)
        encoder = load_text_encoder(folder, max_length=length, device=device)

    def embed(text: str | None, path: str | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        if path is not None:
            try:
                array = load_text_embedding(path)
            except ValueError as error:
                raise SpecError(f"{spec.source}: {error}") from error
        elif text is not None:
            array = encoder.encode([text])[0]
            if isinstance(array, torch.Tensor):  # Reason1's bf16 [512, 100,352]
                array = array.float().cpu().numpy()
        else:
            return None
        return pad_text_embedding(array, length)

    positive = embed(spec.prompt, spec.prompt_embedding)
    if positive is None:
        raise SpecError(f"{spec.source}: the spec needs a 'prompt' or a 'prompt_embedding'")
    negative = embed(spec.negative_prompt, spec.negative_prompt_embedding)
    del encoder
    _release_memory()
    if negative is not None and negative[0].shape[1] != positive[0].shape[1]:
        raise SpecError(f"{spec.source}: prompt and negative prompt embeddings differ in width "
                        f"({positive[0].shape[1]} vs {negative[0].shape[1]})")
    return TextInputs(positive[0], positive[1], *(negative if negative is not None else (None, None)))


def _release_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------ generation
@contextlib.contextmanager
def tokenizer_on(model: nn.Module, device: torch.device, offload: bool) -> Iterator[None]:
    """With `offload`, the tokenizer lives on the CPU and visits `device` only for an encode/decode."""
    if not offload:
        yield
        return
    model.tokenizer.to(device)
    try:
        yield
    finally:
        model.tokenizer.to("cpu")
        _release_memory()


def model_hint_keys(model: nn.Module) -> list[str]:
    """The controls a model takes ('edge', ...): its `hint_keys` / `hint_key` attribute, none for a base model."""
    keys = getattr(model, "hint_keys", None)
    if keys is None:
        key = getattr(model, "hint_key", None)
        keys = [key] if key else []
    return [normalize_hint_key(k) for k in keys]


def check_controls(model: nn.Module, inputs: GenerationInputs, source: str = "spec") -> list[str]:
    """The spec's controls must be among the model's branches; returns the model's hint keys the spec leaves out."""
    expected = model_hint_keys(model)
    given = sorted(inputs.controls)
    if not expected:
        raise SpecError(
            f"{source}: the model has no control branch (a base DiffusionModel) but the spec gives controls {given}; "
            "use a control experiment (a ControlDiffusionModel)"
        )
    extra = sorted(set(given) - set(expected))
    if extra:
        raise SpecError(
            f"{source}: the model's control branches take {expected}, the spec gives {given}: this model has no "
            f"branch for {extra}"
        )
    return sorted(set(expected) - set(given))


def with_unused_branches_off(inputs: GenerationInputs, keys: list[str]) -> GenerationInputs:
    """Inputs where the branches of `keys` get a black control video and weight 0 (a hint left out)."""
    if not keys:
        return inputs
    blank = np.zeros_like(next(iter(inputs.controls.values())))
    return dataclasses.replace(inputs, controls={**inputs.controls, **{k: blank for k in keys}},
                               weights={**inputs.weights, **{k: 0.0 for k in keys}})


def _to_cthw(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, C] -> uint8 [1, C, T, H, W]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None]


def window_batch(inputs: GenerationInputs, text: TextInputs, window: Window, hint_keys: list[str]) -> dict:
    """The model batch (the data contract of docs/ARCHITECTURE.md, batch size 1) of one window."""
    num_frames = window.stop - window.start
    height, width = inputs.fit.height, inputs.fit.width
    batch: dict = {
        "padding_mask": torch.from_numpy(inputs.padding_mask)[None],
        "fps": torch.tensor([inputs.fps], dtype=torch.float32),
        "image_size": torch.tensor(
            [[height, width, inputs.fit.valid_height, inputs.fit.valid_width]], dtype=torch.float32
        ),
        "num_frames": torch.tensor([num_frames]),
        "t5_text_embeddings": text.embeddings[None],
        "t5_text_mask": text.mask[None],
    }
    if text.negative_embeddings is not None:
        batch["neg_t5_text_embeddings"] = text.negative_embeddings[None]
        batch["neg_t5_text_mask"] = text.negative_mask[None]
    if inputs.input_video is not None:
        batch["video"] = _to_cthw(window_slice(inputs.input_video, window))
    for key, control in inputs.controls.items():
        batch[batch_key(key)] = _to_cthw(window_slice(control, window))
    # One weight per control in the model's hint-key order: a number or a map [1, 1, T, H, W] at pixel resolution
    # (the control model resamples maps to its token grid and normalizes weights summing to more than 1).
    weights = []
    for key in hint_keys:
        weight = inputs.weights[key]
        if isinstance(weight, np.ndarray):  # [T, H, W] -> [1, 1, T, H, W]
            weights.append(torch.from_numpy(np.ascontiguousarray(window_slice(weight, window)))[None, None])
        else:
            weights.append(float(weight))
    batch["control_weight"] = weights
    return batch


def _latent_shape(model: nn.Module, num_frames: int, height: int, width: int) -> tuple[int, ...]:
    tokenizer = model.tokenizer
    s = tokenizer.spatial_compression
    if height % s or width % s:
        raise ValueError(f"resolution {height}x{width} is not a multiple of the tokenizer's compression {s}")
    return (1, tokenizer.latent_channels, tokenizer.latent_num_frames(num_frames), height // s, width // s)


def check_window_frames(model: nn.Module, window_frames: int) -> None:
    """A window must be a length the tokenizer maps to whole latent frames (1 + 8k for Cosmos' CV8x8x8)."""
    tokenizer = model.tokenizer
    try:
        latent = tokenizer.latent_num_frames(window_frames)
    except ValueError as error:
        raise ValueError(f"window_frames={window_frames} does not map to whole latent frames: {error}") from None
    if tokenizer.pixel_num_frames(latent) != window_frames:
        raise ValueError(
            f"window_frames={window_frames} does not map to whole latent frames; the nearest valid lengths are "
            f"{tokenizer.pixel_num_frames(max(1, latent - 1))} and {tokenizer.pixel_num_frames(latent + 1)}"
        )


@torch.no_grad()
def generate_video(
    model: nn.Module,
    inputs: GenerationInputs,
    text: TextInputs,
    *,
    window_frames: int,
    options: SamplingOptions = SamplingOptions(),
    offload_tokenizer: bool = False,
    progress: Callable[[str], None] | None = None,
    output: str = "the video",
) -> np.ndarray:
    """Generate the whole video -> uint8 [T, H, W, 3] at the model's resolution (padding included).

    Window i uses seed `options.seed + i`. A model that is not video2world generates its windows independently
    (they may show seams); one that is conditions each window on `conditioning_latent_frames` latent frames of the
    previous window's output.
    A window whose sampled latents hold NaN or inf, or a video that is one value everywhere (what NaN decodes to:
    all black), raises GenerationError naming `output` (the file it was for) and the likely cause: nothing a user
    wants is written silently.
    """
    unused = check_controls(model, inputs, source="spec")
    if unused and progress is not None:
        progress(f"note: the spec leaves out {unused}: those branches run with weight 0")
    inputs = with_unused_branches_off(inputs, unused)
    check_window_frames(model, window_frames)
    device = model.device
    tokenizer = model.tokenizer
    if offload_tokenizer:
        tokenizer.to("cpu")
    conditioning_latent = options.conditioning_latent_frames if getattr(model, "video2world", False) else 0
    latent_frames = tokenizer.latent_num_frames(window_frames)
    if conditioning_latent >= latent_frames:
        raise ValueError(
            f"conditioning_latent_frames={conditioning_latent} leaves nothing to generate in a window of "
            f"{latent_frames} latent frames"
        )
    overlap = tokenizer.pixel_num_frames(conditioning_latent) if conditioning_latent > 0 else 0
    windows = plan_windows(inputs.num_frames, window_frames, overlap)
    if len(windows) > 1 and overlap == 0 and progress is not None:
        progress("note: the model is not video2world, so windows are generated independently (seams may show)")
    shape = _latent_shape(model, window_frames, inputs.fit.height, inputs.fit.width)

    pieces: list[torch.Tensor] = []  # float [3, t, H, W] in [-1, 1], new frames of each window
    previous: torch.Tensor | None = None  # the previous window's decoded output [1, 3, T, H, W]
    for window in windows:
        if progress is not None:
            progress(f"window {window.index + 1}/{len(windows)}: frames {window.start}..{window.keep_stop - 1}")
        batch = window_batch(inputs, text, window, model_hint_keys(model))  # the model moves it to its device
        condition_latent = None
        with tokenizer_on(model, device, offload_tokenizer):
            if window.conditioning_frames:
                condition_latent = model.encode(previous[:, :, -window.conditioning_frames :].to(device))
            # The control videos are encoded now, while the tokenizer is on the device (none for a base model).
            hint_latents = model.encode_hints(batch)
        latent = model.generate_samples(
            batch,
            num_steps=options.num_steps,
            guidance=options.guidance,
            seed=options.seed + window.index,
            sampler=options.sampler,
            sigma_max=options.sigma_max,
            sigma_min=options.sigma_min,
            condition_latent=condition_latent,
            latent_shape=shape,
            hint_latents=hint_latents,
        )
        where = f"window {window.index + 1}/{len(windows)}"
        _check_finite(latent, f"the model's output for {where}", output)  # before the other windows run
        with tokenizer_on(model, device, offload_tokenizer):
            decoded = model.decode(latent).float()
        _check_finite(decoded, f"the tokenizer's decoding of {where}", output)
        previous = decoded.clamp(-1, 1)
        keep = window.keep_stop - window.start
        pieces.append(previous[0, :, window.conditioning_frames : keep].cpu())
    video = torch.cat(pieces, dim=1)  # [3, T, H, W]
    frames = ((video + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    check_not_constant(frames, output)
    return frames


def _check_finite(values: torch.Tensor, what: str, output: str) -> None:
    """NaN decodes to black (clamp keeps NaN, the uint8 cast makes it 0): refuse it, naming what computed it."""
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise GenerationError(f"{output} was not written: {what} holds {bad} NaN or inf values of {values.numel()} "
                              f"(black pixels in the video). The likely cause is {_LIKELY_CAUSE}")


def check_not_constant(frames: np.ndarray, output: str = "the video") -> None:
    """A generated video [T, H, W, C] that is one value everywhere (every pixel of every frame equal) is no
    generation: raise GenerationError naming `output` and the likely cause."""
    if frames.size and frames.min() == frames.max():
        raise GenerationError(
            f"{output} was not written: every pixel of all {frames.shape[0]} generated frames has the same value "
            f"({int(frames.flat[0])}), i.e. the model produced no picture. The likely cause is {_LIKELY_CAUSE}"
        )


# ---------------------------------------------------------------------------------------------------------- output
def side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    """Videos [T, h, w, 3] of the same T and h, side by side -> [T, h, sum(w), 3]."""
    return np.concatenate(panels, axis=2)


def resize_video(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """[T, h, w, 3] -> [T, H, W, 3] for size (H, W); unchanged when size is None."""
    if size is None or tuple(frames.shape[1:3]) == tuple(size):
        return frames
    import cv2

    height, width = size
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def output_paths(out: str) -> dict[str, str]:
    """The files written for `--out video.mp4`: the video, its side-by-side and its settings JSON."""
    stem, _ = os.path.splitext(out)
    return {"video": out, "side_by_side": f"{stem}_side_by_side.mp4", "settings": f"{stem}.json"}
