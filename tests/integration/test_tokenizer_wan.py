"""The Wan2.1 VAE tokenizer (Cosmos-2.5): our wrapper against diffusers' AutoencoderKLWan at a tiny width with
random weights, frame arithmetic, chunking, NVIDIA's file layout loaded strictly, clear messages for bad files."""

import inspect
import sys

import pytest
import torch
from tests.helpers import REPO_DIR

diffusers = pytest.importorskip("diffusers", reason="the Wan tokenizer runs on diffusers (the `wan` extra)")

from cosmos_transfer.checkpoints.files import WeightsFileError  # noqa: E402
from cosmos_transfer.tokenizers.wan import (  # noqa: E402
    WAN21_LATENT_MEAN,
    WAN21_LATENT_STD,
    WanVAETokenizer,
    diffusers_to_nvidia_state_dict,
    nvidia_to_diffusers_key,
)

TINY = dict(base_dim=4)


@pytest.fixture(scope="module")
def tokenizer():
    return WanVAETokenizer(load_weights=False, **TINY)


def video(batch=1, frames=5, size=16, seed=0):
    return torch.rand(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def oracle(tokenizer):
    """A separate AutoencoderKLWan with the same weights, and diffusers' own latent statistics."""
    vae = diffusers.AutoencoderKLWan(base_dim=4)
    vae.load_state_dict(tokenizer.vae.state_dict())
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return vae.eval(), mean, std


def test_statistics_are_the_published_ones():
    # NVIDIA's WanVAE.mean/std and diffusers' AutoencoderKLWan defaults are the same 16 + 16 numbers
    signature = inspect.signature(diffusers.AutoencoderKLWan.__init__)
    assert tuple(signature.parameters["latents_mean"].default) == WAN21_LATENT_MEAN
    assert tuple(signature.parameters["latents_std"].default) == WAN21_LATENT_STD


def test_encode_decode_equal_autoencoder_kl_wan_with_normalization(tokenizer):
    vae, mean, std = oracle(tokenizer)
    x = video(frames=9)
    with torch.no_grad():
        expected = (vae.encode(x).latent_dist.mode() - mean) / std
        latent = tokenizer.encode(x)
        assert latent.shape == (1, 16, 3, 2, 2) and latent.dtype == torch.float32
        torch.testing.assert_close(latent, expected, atol=1e-6, rtol=1e-5)
        expected_video = vae.decode(latent * std + mean).sample
        torch.testing.assert_close(tokenizer.decode(latent), expected_video, atol=1e-6, rtol=1e-5)


def test_frame_arithmetic(tokenizer):
    assert (tokenizer.spatial_compression, tokenizer.temporal_compression, tokenizer.latent_channels) == (8, 4, 16)
    assert tokenizer.latent_num_frames(93) == 24 and tokenizer.pixel_num_frames(24) == 93
    assert [tokenizer.latent_num_frames(n) for n in (1, 5, 9, 17)] == [1, 2, 3, 5]
    assert tokenizer.latent_num_frames(186) == 48  # two independent 93-frame clips
    for n in (1, 5, 93):
        assert tokenizer.pixel_num_frames(tokenizer.latent_num_frames(n)) == n
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        tokenizer.latent_num_frames(95)
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        tokenizer.encode(video(frames=6))


def test_batch_splitting_equals_one_pass_and_long_videos_are_independent_clips():
    one_by_one = WanVAETokenizer(load_weights=False, max_enc_batch_size=1, max_dec_batch_size=1, **TINY)
    together = WanVAETokenizer(load_weights=False, max_enc_batch_size=3, max_dec_batch_size=3, **TINY)
    x = video(batch=3, frames=5, size=8)
    a, b = one_by_one.encode(x), together.encode(x)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(one_by_one.decode(a), together.decode(a), atol=1e-5, rtol=1e-4)  # float32 batch kernels
    # with 5-frame clips, 10 frames are two clips encoded on their own (the causal cache restarts)
    chunked = WanVAETokenizer(load_weights=False, pixel_chunk_duration=5, **TINY)
    x = video(frames=10, size=8)
    expected = torch.cat([chunked.encode(x[:, :, :5]), chunked.encode(x[:, :, 5:])], dim=2)
    assert torch.equal(chunked.encode(x), expected)


def test_frozen_and_dtypes(tokenizer):
    assert not any(p.requires_grad for p in tokenizer.parameters())
    tokenizer.train()
    assert not tokenizer.training and not tokenizer.vae.training
    assert tokenizer.compute_dtype(torch.device("cpu")) == torch.float32
    assert tokenizer.compute_dtype(torch.device("cuda")) == torch.bfloat16
    bf16 = WanVAETokenizer(load_weights=False, dtype="bfloat16", **TINY)
    latent = bf16.encode(video(size=8))
    assert latent.dtype == torch.float32 and bf16.vae.post_quant_conv.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        WanVAETokenizer(load_weights=False, dtype="float16", **TINY)


# ----------------------------------------------------------------------------------------------- NVIDIA's layout
# Names of Wan's original modules (NVIDIA's WanVAE_ in cosmos_transfer2/_src/predict2/tokenizers/wan2pt1.py):
# encoder.downsamples is one flat list (2 residual blocks per level, then a Resample: 2d at 2, 3d at 5 and 8),
# decoder.upsamples likewise with 3 residual blocks per level (3d resamples at 3 and 7, 2d at 11; the channel
# change, hence the shortcut, at 4), middle = residual, attention, residual; head = norm, SiLU, conv; conv1/conv2
# are the posterior and post-quant 1x1 convs.
NVIDIA_NAMES = [
    "conv1.weight", "conv2.bias", "encoder.conv1.weight", "encoder.head.0.gamma", "encoder.head.2.weight",
    "encoder.downsamples.0.residual.0.gamma", "encoder.downsamples.1.residual.6.weight",
    "encoder.downsamples.2.resample.1.weight", "encoder.downsamples.3.shortcut.weight",
    "encoder.downsamples.5.time_conv.weight", "encoder.downsamples.8.time_conv.bias",
    "encoder.middle.0.residual.2.weight", "encoder.middle.1.to_qkv.weight", "encoder.middle.2.residual.3.gamma",
    "decoder.conv1.bias", "decoder.middle.1.proj.weight", "decoder.upsamples.0.residual.0.gamma",
    "decoder.upsamples.3.time_conv.weight", "decoder.upsamples.3.resample.1.weight",
    "decoder.upsamples.4.shortcut.weight", "decoder.upsamples.7.time_conv.bias",
    "decoder.upsamples.11.resample.1.weight", "decoder.upsamples.14.residual.6.bias", "decoder.head.2.weight",
]


def test_released_architecture_key_map_is_a_bijection_onto_nvidia_names():
    with torch.device("meta"):
        vae = diffusers.AutoencoderKLWan()  # the released Wan2.1 VAE, no memory
    keys = list(vae.state_dict())
    nvidia = diffusers_to_nvidia_state_dict(dict.fromkeys(keys, torch.empty(0)))
    assert len(nvidia) == len(keys)
    assert set(NVIDIA_NAMES) <= set(nvidia), sorted(set(NVIDIA_NAMES) - set(nvidia))
    assert sorted(nvidia_to_diffusers_key(k) for k in nvidia) == sorted(keys)
    assert not any("downsamples.11" in k or "upsamples.15" in k for k in nvidia)


def test_a_file_in_nvidia_layout_loads_strictly(tmp_path, tokenizer):
    path = tmp_path / "tokenizer.pth"
    torch.save(diffusers_to_nvidia_state_dict(tokenizer.vae.state_dict()), path)
    loaded = WanVAETokenizer(checkpoint_path=str(path), seed=123, **TINY)
    assert loaded.checkpoint_path == str(path)
    for key, value in tokenizer.vae.state_dict().items():
        assert torch.equal(loaded.vae.state_dict()[key], value), key
    x = video(size=8)
    assert torch.equal(loaded.encode(x), tokenizer.encode(x))
    # the folder of the file works too (as --checkpoint-dir passes it)
    assert WanVAETokenizer(checkpoint_path=str(tmp_path), **TINY).checkpoint_path == str(path)


def test_bad_files_get_one_clear_message(tmp_path, tokenizer):
    state = diffusers_to_nvidia_state_dict(tokenizer.vae.state_dict())
    with pytest.raises(FileNotFoundError, match="tokenizer.pth.*does not exist"):
        WanVAETokenizer(checkpoint_path=str(tmp_path / "nowhere" / "tokenizer.pth"), **TINY)
    damaged = tmp_path / "damaged.pth"
    torch.save(state, damaged)
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(WeightsFileError, match="damaged.pth"):
        WanVAETokenizer(checkpoint_path=str(damaged), **TINY)
    incomplete = tmp_path / "incomplete.pth"
    torch.save({k: v for k, v in state.items() if k != "decoder.upsamples.4.shortcut.weight"} | {"extra.w": torch.ones(1)},
               incomplete)
    with pytest.raises(WeightsFileError, match="1 missing.*shortcut.*1 unexpected.*extra.w"):
        WanVAETokenizer(checkpoint_path=str(incomplete), **TINY)
    good = tmp_path / "good.pth"
    torch.save(state, good)
    with pytest.raises(WeightsFileError, match="another shape.*base_dim=8"):
        WanVAETokenizer(checkpoint_path=str(good), base_dim=8)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.ones(1)], not_a_dict)
    with pytest.raises(WeightsFileError, match="state dict of tensors"):
        WanVAETokenizer(checkpoint_path=str(not_a_dict), **TINY)


def test_missing_diffusers_is_named():
    """In a process without diffusers (the module imports it when it is imported), building the tokenizer names the
    extra to install."""
    import subprocess

    from tests.helpers import REPO_DIR

    script = ("import sys; sys.modules['diffusers'] = None\n"
              "from cosmos_transfer.tokenizers.wan import WanVAETokenizer\n"
              "try:\n    WanVAETokenizer(load_weights=False)\nexcept ImportError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_DIR, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pip install -e '.[wan]'" in result.stdout


def test_precompute_latents_goes_through_the_interface(tmp_path):
    import importlib.util
    import os

    from safetensors import safe_open

    from cosmos_transfer.data.dataset import VideoDataset
    from tests.tiny_datasets import make_tiny_dataset

    script_path = os.path.join(REPO_DIR, "scripts",
                               "precompute_latents.py")
    spec = importlib.util.spec_from_file_location("precompute_latents", script_path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root = make_tiny_dataset(tmp_path / "data", stems=("a",), num_frames=8, size=(16, 24))
    argv = ["--root", str(root), "--num-frames", "5", "--resolution", "16x16", "--tokenizer", "wan2pt1_random",
            "--device", "cpu"]  # fmt: skip
    assert script.main(argv) == 0
    with safe_open(os.path.join(root, "latents", "a.safetensors"), framework="pt") as file:
        assert file.get_tensor("latent").shape == (16, 2, 2, 2)
    dataset = VideoDataset(root, num_frames=5, resolution=(16, 16), text_embedding_length=16, text_embedding_dim=8,
                           use_latents=True, hint_keys=())  # fmt: skip
    sample = dataset[0]
    expected = WanVAETokenizer(load_weights=False, seed=0, **TINY).encode(sample["video"][None].float() / 127.5 - 1)
    torch.testing.assert_close(sample["latent"], expected[0], rtol=0, atol=1e-5)  # the window the dataset decodes


def test_config_options(tmp_path, monkeypatch):
    from cosmos_transfer.config.lazy import instantiate
    from configs.tokenizer import WAN2PT1, WAN2PT1_RANDOM

    random_option = instantiate(WAN2PT1_RANDOM)
    assert isinstance(random_option, WanVAETokenizer) and random_option.latent_num_frames(93) == 24
    monkeypatch.setenv("COSMOS_CHECKPOINT_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nvidia/Cosmos-Predict2.5-2B/tokenizer.pth"):
        instantiate(WAN2PT1)  # the released option reads the file from the default place
