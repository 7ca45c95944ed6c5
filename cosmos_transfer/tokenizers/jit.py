"""The released Cosmos tokenizer as TorchScript files: loading them, and saving our network in the same form.

    # a folder with encoder.jit, decoder.jit, mean_std.pt
    tok = CosmosJITTokenizer("checkpoints/nvidia/Cosmos-Tokenize1-CV8x8x8-720p")
    latent = tok.encode(video)

    save_torchscript(network, folder, mean, std)   # our CausalVideoAutoencoder -> encoder.jit, decoder.jit, mean_std.pt

The official files hold bfloat16 weights; with dtype="auto" they run in bfloat16 on CUDA and float32 on CPU.
"""

from __future__ import annotations

import os
import warnings

import torch

from cosmos_transfer.tokenizers.base import StandardizedTokenizer
from cosmos_transfer.tokenizers.files import (
    DECODER_FILE,
    ENCODER_FILE,
    MEAN_STD_FILE,
    load_jit_module,
    load_mean_std,
    resolve_checkpoint_dir,
)


class CosmosJITTokenizer(StandardizedTokenizer):
    """The official Cosmos-Tokenize1 TorchScript encoder/decoder behind the tokenizer interface.

    checkpoint_dir: the folder with encoder.jit, decoder.jit and mean_std.pt; None means
        $COSMOS_CHECKPOINT_DIR/nvidia/Cosmos-Tokenize1-CV8x8x8-720p.
    """

    def __init__(
        self,
        checkpoint_dir: str | None = None,
        latent_channels: int = 16, spatial_compression: int = 8, temporal_compression: int = 8,
        pixel_chunk_duration: int = 121, max_enc_batch_size: int = 8, max_dec_batch_size: int = 4,
        dtype: str = "auto",
    ) -> None:
        super().__init__(latent_channels=latent_channels, spatial_compression=spatial_compression,
                         temporal_compression=temporal_compression, pixel_chunk_duration=pixel_chunk_duration,
                         max_enc_batch_size=max_enc_batch_size, max_dec_batch_size=max_dec_batch_size, dtype=dtype)
        self.checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir, "CosmosJITTokenizer")
        self.encoder = load_jit_module(os.path.join(self.checkpoint_dir, ENCODER_FILE))
        self.decoder = load_jit_module(os.path.join(self.checkpoint_dir, DECODER_FILE))
        self.set_latent_stats(*load_mean_std(self.checkpoint_dir, latent_channels, self.latent_chunk_duration))
        self.freeze()

    def _run(self, module: torch.jit.ScriptModule, x: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype(x.device)
        weight = next(module.parameters(), None)
        if weight is not None and (weight.dtype != dtype or weight.device != x.device):
            module.to(device=x.device, dtype=dtype)  # follows the input (e.g. after an offload to CPU)
        out = module(x.to(dtype))
        if isinstance(out, (tuple, list)):  # the official encoder returns (latent, (mean, std)) of its AE posterior
            out = out[0]
        return out.float()

    def _encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        return self._run(self.encoder, video)

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self._run(self.decoder, z)


def save_torchscript(network, folder: str, mean: torch.Tensor, std: torch.Tensor, method: str = "script") -> None:
    """Save our CausalVideoAutoencoder as encoder.jit / decoder.jit (parameter names as in the official files) and
    the latent statistics as mean_std.pt. method="script" (torch.jit.script, any input size) or "trace"."""
    os.makedirs(folder, exist_ok=True)
    encoder, decoder = network.latent_encoder().eval(), network.latent_decoder().eval()
    if method == "script":
        with warnings.catch_warnings():  # deprecated in torch 2.13, still the format of the released files
            warnings.simplefilter("ignore", DeprecationWarning)
            encoder_jit, decoder_jit = torch.jit.script(encoder), torch.jit.script(decoder)
    elif method == "trace":
        p = network.encoder.patcher3d.patch_size
        example = torch.zeros(1, 3, 1 + network.temporal_compression, 8 * p, 8 * p)
        with torch.no_grad():
            encoder_jit = torch.jit.trace(encoder, example)
            decoder_jit = torch.jit.trace(decoder, encoder(example))
    else:
        raise ValueError(f"save_torchscript: method must be 'script' or 'trace', got {method!r}")
    encoder_jit.save(os.path.join(folder, ENCODER_FILE))
    decoder_jit.save(os.path.join(folder, DECODER_FILE))
    torch.save((mean.detach().cpu().reshape(-1), std.detach().cpu().reshape(-1)), os.path.join(folder, MEAN_STD_FILE))
