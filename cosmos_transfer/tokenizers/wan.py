"""The Wan2.1 VAE of the Cosmos-2.5 family behind our tokenizer interface, run by diffusers' `AutoencoderKLWan`.

16 latent channels, 8x8 spatial and 4x temporal compression, causal in time: 1 + 4k frames -> 1 + k latent frames
(93 -> 24, Transfer2.5's `state_t`). The file is the one NVIDIA's 2.5 code loads (`Wan2pt1VAEInterface`, released
as `tokenizer.pth` in nvidia/Cosmos-Predict2.5-2B, the same tensors as Wan-AI's `Wan2.1_VAE.pth`): one plain state
dict of Wan's original module names (`encoder.downsamples.N.residual.K`, `decoder.upsamples.N`, `conv1`, `conv2`,
...). `nvidia_to_diffusers_key` maps those names onto AutoencoderKLWan's (the mapping of diffusers'
scripts/convert_wan_to_diffusers.py, written as rules), and the file is loaded strictly.

Latents are normalized per channel as NVIDIA does: (mu - mean) / std with Wan's 16 published means and standard
deviations (NVIDIA's `WanVAE.mean/std`; diffusers' `latents_mean/std`), the posterior mean mu (no sampling).

Chunks. The VAE is causal with a feature cache, so a whole clip is encoded in one pass (as NVIDIA encodes its 93
frames); `pixel_chunk_duration` (93 by default) only bounds the memory for longer videos, which are cut into
independent clips of that length (like Cosmos' chunked tokenizer). Batches are split `max_enc_batch_size` at a time.

diffusers is needed at run time for this tokenizer only: `pip install -e '.[wan]'`.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import torch

from cosmos_transfer.checkpoints import files
from cosmos_transfer.tokenizers.base import StandardizedTokenizer

# Wan2.1 VAE latent statistics (NVIDIA's WanVAE.mean / .std; diffusers' AutoencoderKLWan latents_mean / latents_std).
WAN21_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

DEFAULT_FILE = os.path.join("nvidia", "Cosmos-Predict2.5-2B", "tokenizer.pth")
REDOWNLOAD = ("download tokenizer.pth of nvidia/Cosmos-Predict2.5-2B again (or Wan-AI/Wan2.1-T2V-14B's "
              "Wan2.1_VAE.pth, the same tensors)")
INSTALL_HINT = "the Wan2.1 VAE runs on diffusers' AutoencoderKLWan: pip install -e '.[wan]' (diffusers >= 0.42.1)"


def default_checkpoint_path() -> str:
    return os.path.join(os.environ.get("COSMOS_CHECKPOINT_DIR", "checkpoints"), DEFAULT_FILE)


# Imported with this module (when diffusers is installed), not when a tokenizer is built: a build under
# torch.device("meta") (memory accounting, preflight) would otherwise import diffusers there, and its module-level
# tensors would stay on the meta device for the rest of the process.
try:
    from diffusers import AutoencoderKLWan as _AutoencoderKLWan
    _IMPORT_ERROR: ImportError | None = None
except ImportError as error:
    _AutoencoderKLWan, _IMPORT_ERROR = None, error


def _autoencoder_class():
    if _AutoencoderKLWan is None:
        raise ImportError(f"WanVAETokenizer: cannot import diffusers.AutoencoderKLWan ({_IMPORT_ERROR}); "
                          f"{INSTALL_HINT}")
    return _AutoencoderKLWan


# --------------------------------------------------------------------------------------------- the key layout
_RESIDUAL = {"residual.0.gamma": "norm1.gamma", "residual.2.weight": "conv1.weight", "residual.2.bias": "conv1.bias",
             "residual.3.gamma": "norm2.gamma", "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
             "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias"}
_TOP = {"conv1.weight": "quant_conv.weight", "conv1.bias": "quant_conv.bias",
        "conv2.weight": "post_quant_conv.weight", "conv2.bias": "post_quant_conv.bias"}


def nvidia_to_diffusers_key(key: str, num_res_blocks: int = 2) -> str:
    """A Wan2.1 VAE key as NVIDIA's file stores it -> AutoencoderKLWan's name (unknown keys are returned as they
    are, so a strict load names them). Wan's decoder keeps num_res_blocks + 1 residual blocks and one resample per
    level in one flat list `decoder.upsamples.N`; diffusers groups them as up_blocks.L.{resnets.i, upsamplers.0}."""
    if key in _TOP:
        return _TOP[key]
    match = re.fullmatch(r"(encoder|decoder)\.(conv1|head\.0|head\.2)\.(.+)", key)
    if match:
        part, module, rest = match.groups()
        return f"{part}.{ {'conv1': 'conv_in', 'head.0': 'norm_out', 'head.2': 'conv_out'}[module] }.{rest}"
    match = re.fullmatch(r"(encoder|decoder)\.middle\.(\d+)\.(.+)", key)
    if match:
        part, index, rest = match.groups()
        if index == "1":
            return f"{part}.mid_block.attentions.0.{rest}"
        return f"{part}.mid_block.resnets.{int(index) // 2}.{_RESIDUAL.get(rest, rest)}"
    match = re.fullmatch(r"encoder\.downsamples\.(\d+)\.(.+)", key)
    if match:
        index, rest = match.groups()
        return f"encoder.down_blocks.{index}.{_RESIDUAL.get(rest, rest)}"
    match = re.fullmatch(r"decoder\.upsamples\.(\d+)\.(.+)", key)
    if match:
        level, position = divmod(int(match.group(1)), num_res_blocks + 2)
        rest = match.group(2)
        if position <= num_res_blocks:
            return f"decoder.up_blocks.{level}.resnets.{position}.{_RESIDUAL.get(rest, rest)}"
        return f"decoder.up_blocks.{level}.upsamplers.0.{rest}"
    return key


def diffusers_to_nvidia_state_dict(state: dict[str, torch.Tensor], num_res_blocks: int = 2) -> dict[str, torch.Tensor]:
    """AutoencoderKLWan's state dict in NVIDIA's (Wan's original) layout, to write files NVIDIA's code loads."""
    inverse_residual = {v: k for k, v in _RESIDUAL.items()}
    inverse_top = {v: k for k, v in _TOP.items()}
    out = {}
    for key, value in state.items():
        if key in inverse_top:
            name = inverse_top[key]
        elif match := re.fullmatch(r"(encoder|decoder)\.(conv_in|norm_out|conv_out)\.(.+)", key):
            part, module, rest = match.groups()
            name = f"{part}.{ {'conv_in': 'conv1', 'norm_out': 'head.0', 'conv_out': 'head.2'}[module] }.{rest}"
        elif match := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            name = f"{match.group(1)}.middle.1.{match.group(2)}"
        elif match := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", key):
            part, index, rest = match.groups()
            name = f"{part}.middle.{2 * int(index)}.{inverse_residual.get(rest, rest)}"
        elif match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key):
            name = f"encoder.downsamples.{match.group(1)}.{inverse_residual.get(match.group(2), match.group(2))}"
        elif match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            level, position, rest = match.groups()
            index = int(level) * (num_res_blocks + 2) + int(position)
            name = f"decoder.upsamples.{index}.{inverse_residual.get(rest, rest)}"
        elif match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            index = int(match.group(1)) * (num_res_blocks + 2) + num_res_blocks + 1
            name = f"decoder.upsamples.{index}.{match.group(2)}"
        else:
            raise ValueError(f"diffusers_to_nvidia_state_dict: unexpected AutoencoderKLWan key {key!r}")
        out[name] = value
    return out


def load_nvidia_vae_file(vae: torch.nn.Module, path: str, num_res_blocks: int = 2) -> None:
    """Load NVIDIA's Wan2.1 VAE file into AutoencoderKLWan `vae`, strictly, or raise one clear message."""
    state = files.load_torch_file(path, "Wan2.1 VAE file", REDOWNLOAD)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise files.WeightsFileError(
            f"Wan2.1 VAE file {path}: expected a state dict of tensors (NVIDIA's tokenizer.pth layout), got "
            f"{type(state).__name__}; {REDOWNLOAD}"
        )
    mapped = {nvidia_to_diffusers_key(k, num_res_blocks): v for k, v in state.items()}
    expected = vae.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(k for k, v in state.items() if nvidia_to_diffusers_key(k, num_res_blocks) not in expected)
    wrong_shape = sorted(k for k, v in mapped.items() if k in expected and v.shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        def some(keys):
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

        problems = [f"{len(missing)} missing ({some(missing)})" if missing else "",
                    f"{len(unexpected)} unexpected ({some(unexpected)})" if unexpected else "",
                    f"{len(wrong_shape)} of another shape ({some(wrong_shape)})" if wrong_shape else ""]
        raise files.WeightsFileError(
            f"Wan2.1 VAE file {path} does not fit the Wan2.1 VAE with these settings: "
            + "; ".join(p for p in problems if p)
            + f". Expected NVIDIA's tokenizer.pth (Wan2.1_VAE.pth) layout for base_dim={vae.config.base_dim}; "
            + REDOWNLOAD
        )
    vae.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True)


# ------------------------------------------------------------------------------------------------ the tokenizer
class WanVAETokenizer(StandardizedTokenizer):
    """The Wan2.1 VAE (Cosmos-Predict2.5 / Transfer2.5 tokenizer) behind the tokenizer interface.

    checkpoint_path: NVIDIA's tokenizer.pth, or a folder holding it (default $COSMOS_CHECKPOINT_DIR/nvidia/Cosmos-Predict2.5-2B/tokenizer.pth)
    when load_weights is true; with load_weights=False a seeded random initialization (tests, demos), with the same
    normalization. base_dim, dim_mult, num_res_blocks, temporal_downsample: the network (Wan2.1: 96, (1, 2, 4, 4), 2,
    (False, True, True)); smaller base_dim for tests. dtype: "auto" runs bfloat16 on CUDA and float32 on CPU.
    """

    def __init__(
        self,
        checkpoint_path: str | None = None,
        load_weights: bool = True,
        base_dim: int = 96,
        dim_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        temporal_downsample: Sequence[bool] = (False, True, True),
        latent_mean: Sequence[float] = WAN21_LATENT_MEAN,
        latent_std: Sequence[float] = WAN21_LATENT_STD,
        pixel_chunk_duration: int = 93,
        max_enc_batch_size: int = 1,
        max_dec_batch_size: int = 1,
        dtype: str = "auto",
        seed: int = 0,
    ) -> None:
        latent_channels = len(latent_mean)
        if len(latent_std) != latent_channels or not all(s > 0 for s in latent_std):
            raise ValueError(
                f"WanVAETokenizer: latent_mean and latent_std must have one value per latent channel (std > 0), got "
                f"{len(latent_mean)} means and {len(latent_std)} standard deviations"
            )
        super().__init__(
            latent_channels=latent_channels,
            temporal_compression=2 ** sum(bool(t) for t in temporal_downsample),
            spatial_compression=2 ** len(temporal_downsample),
            pixel_chunk_duration=pixel_chunk_duration,
            max_enc_batch_size=max_enc_batch_size,
            max_dec_batch_size=max_dec_batch_size,
            dtype=dtype,
        )
        autoencoder = _autoencoder_class()
        path = self._checkpoint_file(checkpoint_path) if load_weights else None  # before building: fail fast
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the random-weight option is the same network in every process
            self.vae = autoencoder(
                base_dim=base_dim, z_dim=latent_channels, dim_mult=list(dim_mult), num_res_blocks=num_res_blocks,
                temperal_downsample=list(temporal_downsample), latents_mean=list(latent_mean),
                latents_std=list(latent_std),
            )
        self.checkpoint_path = path
        if path is not None:
            load_nvidia_vae_file(self.vae, path, num_res_blocks)
        # one value per channel, the same for every latent frame (NVIDIA's WanVAE.scale)
        self.set_latent_stats(torch.tensor(latent_mean).view(1, -1, 1, 1, 1),
                              torch.tensor(latent_std).view(1, -1, 1, 1, 1))
        self.freeze()

    @staticmethod
    def _checkpoint_file(checkpoint_path: str | None) -> str:
        path = os.path.expanduser(checkpoint_path) if checkpoint_path else default_checkpoint_path()
        if os.path.isdir(path):  # a folder holding tokenizer.pth (as a model download has it)
            path = os.path.join(path, os.path.basename(DEFAULT_FILE))
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"WanVAETokenizer: Wan2.1 VAE file {path!r} does not exist; expected NVIDIA's tokenizer.pth "
                "(download nvidia/Cosmos-Predict2.5-2B's tokenizer.pth there, set model.tokenizer.checkpoint_path=..., "
                "or set COSMOS_CHECKPOINT_DIR to the folder that holds nvidia/Cosmos-Predict2.5-2B)"
            )
        return path

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Cast x to the compute dtype; the VAE follows x's device and that dtype."""
        dtype = self.compute_dtype(x.device)
        weight = self.vae.post_quant_conv.weight
        if weight.dtype != dtype or weight.device != x.device:
            self.vae.to(device=x.device, dtype=dtype)
        return x.to(dtype)

    def _encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(self._prepare(video)).latent_dist.mode()  # the posterior mean, as NVIDIA's encode

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self._prepare(z)).sample
