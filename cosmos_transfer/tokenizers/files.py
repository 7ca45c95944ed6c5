"""The files of a released Cosmos tokenizer folder, and the clear errors when they are missing.

    <checkpoint_dir>/encoder.jit     TorchScript: video -> raw latent (or a (latent, ...) tuple)
    <checkpoint_dir>/decoder.jit     TorchScript: raw latent -> video
    <checkpoint_dir>/mean_std.pt     (mean, std) of the raw latents, per channel or per channel and latent frame

The default folder is $COSMOS_CHECKPOINT_DIR/nvidia/Cosmos-Tokenize1-CV8x8x8-720p (COSMOS_CHECKPOINT_DIR defaults to
`checkpoints`, the layout of the official download scripts).
"""

from __future__ import annotations

import os
import warnings

import torch

from cosmos_transfer.checkpoints import files

ENCODER_FILE = "encoder.jit"
DECODER_FILE = "decoder.jit"
MEAN_STD_FILE = "mean_std.pt"
EXPECTED_FILES = (ENCODER_FILE, DECODER_FILE, MEAN_STD_FILE)
DEFAULT_TOKENIZER_SUBDIR = os.path.join("nvidia", "Cosmos-Tokenize1-CV8x8x8-720p")


def default_checkpoint_dir() -> str:
    return os.path.join(os.environ.get("COSMOS_CHECKPOINT_DIR", "checkpoints"), DEFAULT_TOKENIZER_SUBDIR)


def resolve_checkpoint_dir(checkpoint_dir: str | None, who: str) -> str:
    """The tokenizer folder (given, or the default under $COSMOS_CHECKPOINT_DIR), checked to hold every file."""
    folder = os.path.expanduser(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir()
    expected = ", ".join(EXPECTED_FILES)
    hint = (
        "download nvidia/Cosmos-Tokenize1-CV8x8x8-720p there, set model.tokenizer.checkpoint_dir=..., or set "
        "COSMOS_CHECKPOINT_DIR to the folder that holds nvidia/Cosmos-Tokenize1-CV8x8x8-720p"
    )
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{who}: tokenizer folder {folder!r} does not exist; expected it to hold {expected} ({hint})"
        )
    missing = [name for name in EXPECTED_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise FileNotFoundError(
            f"{who}: tokenizer folder {folder!r} lacks {', '.join(missing)}; expected {expected} ({hint})"
        )
    return folder


REDOWNLOAD = (
    "download the tokenizer folder nvidia/Cosmos-Tokenize1-CV8x8x8-720p again (encoder.jit, decoder.jit, mean_std.pt; "
    "for a tokenizer of ours, write it again with save_torchscript)"
)


def load_jit_module(path: str) -> torch.jit.ScriptModule:
    """A TorchScript file, or a clear error naming it when it is damaged or incomplete (never torch's traceback)."""
    files.require_file(path, "tokenizer file", REDOWNLOAD)
    try:
        with warnings.catch_warnings():
            # torch 2.13 marks TorchScript deprecated; the released tokenizer exists only in this format.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(path, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - any failure becomes one message naming the file
        raise files.damaged(path, "tokenizer file", error, REDOWNLOAD) from None


def load_mean_std(folder: str, latent_channels: int, latent_chunk_duration: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) shaped [1, C, latent_chunk_duration, 1, 1] from mean_std.pt.

    The file holds two tensors with C values (one per channel) or C * K values (per channel and latent frame, as
    the Cosmos CV8x8x8 file: the first latent_chunk_duration frames are used, as in the original)."""
    path = os.path.join(folder, MEAN_STD_FILE)
    loaded = files.load_torch_file(path, "tokenizer statistics file", REDOWNLOAD)
    is_pair = isinstance(loaded, (tuple, list)) and len(loaded) == 2
    if not (is_pair and all(isinstance(t, torch.Tensor) for t in loaded)):
        raise ValueError(f"{path!r}: expected a (mean, std) pair of tensors, got {type(loaded).__name__}")
    out = []
    for name, tensor in zip(("mean", "std"), loaded):
        flat = tensor.detach().float().reshape(-1)
        if flat.numel() == latent_channels:
            per_frame = flat.view(latent_channels, 1).expand(latent_channels, latent_chunk_duration)
        elif flat.numel() % latent_channels == 0 and flat.numel() // latent_channels >= latent_chunk_duration:
            per_frame = flat.view(latent_channels, -1)[:, :latent_chunk_duration]
        else:
            raise ValueError(
                f"{path!r}: {name} has {flat.numel()} values; expected {latent_channels} (one per latent channel) or "
                f"{latent_channels} x K with K >= {latent_chunk_duration} latent frames"
            )
        out.append(per_frame.reshape(1, latent_channels, latent_chunk_duration, 1, 1).clone())
    if not torch.all(out[1] > 0):
        raise ValueError(f"{path!r}: std must be positive")
    return out[0], out[1]
