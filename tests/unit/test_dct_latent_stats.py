"""The DCT tokenizer's per-channel latent standardization (issue 17): with the demo's measured statistics every
latent channel of demo clips has about unit std (at one common scale the 21 gradient channels, the shapes' outlines,
were 4-30x smaller than the patch means and the EDM loss left them unlearned), and decoding is unchanged."""

import pytest
import torch

from configs.train import make_config
from cosmos_transfer.config.lazy import instantiate
from cosmos_transfer.data.demo import make_clip
from cosmos_transfer.inference import loading
from cosmos_transfer.tokenizers.dct import DCTTokenizer, channel_stats


def _demo_clips(seeds) -> torch.Tensor:
    """Demo generator clips (not among the 512 the statistics were measured on), 17 frames at 32 x 32 as the demo
    reads them (the first 17 of the 33 frames the dataset stores, drawn at 64 and area-downsampled 2x; a clip's
    motion spans all its frames), float in [-1, 1]: [N, 3, 17, 32, 32]."""
    clips = [torch.from_numpy(make_clip(seed, size=64, num_frames=33)[0][:17]) for seed in seeds]
    video = torch.stack(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # [N, 3, T, 64, 64]
    return torch.nn.functional.avg_pool3d(video, (1, 2, 2))


def _demo_tokenizer(experiment: str) -> DCTTokenizer:
    tokenizer = instantiate(loading.compose_config(experiment, make_config=make_config).model.tokenizer)
    assert isinstance(tokenizer, DCTTokenizer)
    return tokenizer


def _std_per_channel(latent: torch.Tensor) -> torch.Tensor:
    return latent.transpose(0, 1).flatten(1).std(1)


def test_demo_latents_have_unit_std_per_channel():
    video = _demo_clips(range(1000, 1024))
    demo = _demo_tokenizer("demo_base_tiny")
    assert torch.equal(demo.latent_std, _demo_tokenizer("demo_edge_tiny").latent_std)  # the branch sees the same
    latent = demo.encode(video)
    std, mean = _std_per_channel(latent), latent.transpose(0, 1).flatten(1).mean(1)
    assert ((std > 0.75) & (std < 1.35)).all(), std
    assert (mean.abs() < 0.3).all(), mean
    # What the statistics fix: at the common scale the gradient channels are many times smaller than the means.
    plain = _std_per_channel(DCTTokenizer().encode(video))
    assert plain.max() / plain.min() > 10, plain


def test_standardization_leaves_decoding_unchanged():
    video = _demo_clips([7, 8])
    plain, demo = DCTTokenizer(), _demo_tokenizer("demo_base_tiny")
    torch.testing.assert_close(demo.decode(demo.encode(video)), plain.decode(plain.encode(video)), rtol=0, atol=1e-5)
    # the standardized latent is (plain latent - mean) / std, per channel
    torch.testing.assert_close(demo.encode(video), (plain.encode(video) - demo.latent_mean) / demo.latent_std,
                               rtol=1e-5, atol=1e-5)


def test_constants_survive_module_operations():
    # A meta-device build (trainer/shard_loading.py) runs to_empty() over the model and its tokenizer: the basis and
    # the statistics are constants of the arguments and must come through unchanged.
    video = _demo_clips([9])
    demo = _demo_tokenizer("demo_edge_tiny")
    before = demo.encode(video)
    demo._apply(torch.empty_like)
    demo.to_empty(device="cpu")
    torch.testing.assert_close(demo.encode(video), before, rtol=0, atol=0)


def test_channel_stats_standardize_the_videos_they_were_measured_on():
    video = _demo_clips([3, 4, 5])
    mean, std = channel_stats(DCTTokenizer(), video.split(1))
    latent = DCTTokenizer(latent_mean=mean, latent_std=std).encode(video)
    flat = latent.transpose(0, 1).flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(24), rtol=0, atol=1e-4)
    torch.testing.assert_close(flat.std(1, correction=0), torch.ones(24), rtol=0, atol=1e-4)
    # measured through an already standardized tokenizer, the statistics are those of the raw latents still
    again, _ = channel_stats(DCTTokenizer(latent_mean=mean, latent_std=std), video.split(1))
    torch.testing.assert_close(torch.tensor(again), torch.tensor(mean), rtol=0, atol=1e-5)


def test_bad_latent_stats_are_named():
    with pytest.raises(ValueError, match="latent_mean must be 24 finite floats .* got 3"):
        DCTTokenizer(latent_mean=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="latent_std must be a list of 24 floats"):
        DCTTokenizer(latent_std="wide")
    with pytest.raises(ValueError, match="every latent_std must be positive"):
        DCTTokenizer(latent_std=[1.0] * 23 + [0.0])
    with pytest.raises(ValueError, match="channel_stats: no videos given"):
        channel_stats(DCTTokenizer(), [])
