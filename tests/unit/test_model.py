"""DiffusionModel: the training-model contract, EDM wiring, video2world conditioning, sampling."""

import math

import pytest
import torch
from torch import nn

from cosmos_transfer.diffusion import edm
from cosmos_transfer.diffusion.conditioner import VideoConditioner
from cosmos_transfer.diffusion.model import CONDITION_FRAME_SIGMA, DiffusionModel

TEXT_LENGTH, TEXT_DIM = 5, 8


class RecordingNet(nn.Module):
    """Small network with the GeneralDIT forward signature that records its inputs."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.proj = nn.Conv3d(in_channels, out_channels, 1)
        self.text = nn.Linear(TEXT_DIM, out_channels)
        self.time = nn.Linear(1, out_channels)
        self.inputs = []

    def forward(self, x, timesteps, crossattn_emb, crossattn_mask=None, fps=None, padding_mask=None):
        self.inputs.append({"x": x.detach().clone(), "timesteps": timesteps.detach().clone()})
        bias = self.text(crossattn_emb.mean(dim=1)) + self.time(timesteps[:, None])
        return self.proj(x) + bias[:, :, None, None, None]


class ShuffleTokenizer(nn.Module):
    """Stand-in tokenizer: 2x2 pixel unshuffle per frame (3 -> 12 channels), one frozen parameter."""

    latent_channels = 12
    spatial_compression = 2
    temporal_compression = 1

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(2.0))

    def encode(self, video):
        b, c, t, h, w = video.shape
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        latent = nn.functional.pixel_unshuffle(frames, 2) * self.gain
        return latent.reshape(b, t, 12, h // 2, w // 2).permute(0, 2, 1, 3, 4)

    def decode(self, latent):
        b, c, t, h, w = latent.shape
        frames = latent.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w) / self.gain
        return nn.functional.pixel_shuffle(frames, 2).reshape(b, t, 3, h * 2, w * 2).permute(0, 2, 1, 3, 4)

    def latent_num_frames(self, num_frames):
        return num_frames

    def pixel_num_frames(self, num_frames):
        return num_frames


def make_batch(batch_size=2, frames=3, height=8, width=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randint(0, 256, (batch_size, 3, frames, height, width), generator=generator, dtype=torch.uint8),
        "padding_mask": torch.zeros(batch_size, 1, height, width),
        "fps": torch.full((batch_size,), 24.0),
        "image_size": torch.tensor([[height, width, height, width]] * batch_size, dtype=torch.float32),
        "num_frames": torch.full((batch_size,), frames),
        "t5_text_embeddings": torch.randn(batch_size, TEXT_LENGTH, TEXT_DIM, generator=generator),
        "t5_text_mask": torch.ones(batch_size, TEXT_LENGTH),
    }


def make_model(video2world=False, **kwargs):
    torch.manual_seed(0)
    channels = ShuffleTokenizer.latent_channels
    net = RecordingNet(channels + int(video2world), channels)
    return DiffusionModel(net, ShuffleTokenizer(), VideoConditioner(), video2world=video2world, **kwargs)


def test_training_step_contract_and_gradients():
    model = make_model().train()
    loss, metrics = model.training_step(make_batch())
    assert loss.ndim == 0 and loss.requires_grad
    assert {"loss", "mse", "edm_loss"} <= set(metrics)
    for name, value in metrics.items():
        assert value.ndim == 0 and not value.requires_grad, name
    assert metrics["mse"].item() >= 0
    loss.backward()
    assert model.net.proj.weight.grad is not None and model.logvar[1].weight.grad is not None
    assert model.tokenizer.gain.grad is None


def test_tokenizer_is_frozen_and_outside_state_dict_and_optimizer():
    model = make_model()
    assert not any(key.startswith("tokenizer") for key in model.state_dict())
    expected = {"net." + key for key in model.net.state_dict()} | {"logvar.0.freqs", "logvar.0.phases", "logvar.1.weight"}
    assert set(model.state_dict()) == expected
    trainable = {id(p) for p in model.trainable_parameters()}
    assert id(model.tokenizer.gain) not in trainable and not model.tokenizer.gain.requires_grad
    assert not model.tokenizer.training
    model.train()
    assert not model.tokenizer.training  # model.train() does not reach the tokenizer
    model.to(torch.float64)  # moves (and casts) the tokenizer along with the model
    assert model.tokenizer.gain.dtype == torch.float64


def test_logvar_head_taken_from_the_net_when_it_has_one():
    net = RecordingNet(12, 12)
    net.logvar = edm.build_logvar_head()
    model = DiffusionModel(net, ShuffleTokenizer())
    assert model.logvar_head is net.logvar and not hasattr(model, "logvar")
    assert "net.logvar.1.weight" in model.state_dict()


def test_encode_converts_uint8_and_scales_by_sigma_data():
    model = make_model()
    video = make_batch()["video"]
    expected = model.tokenizer.encode(video.float() / 127.5 - 1.0) * 0.5
    torch.testing.assert_close(model.encode(video), expected)
    torch.testing.assert_close(model.decode(model.encode(video)), video.float() / 127.5 - 1.0)
    with pytest.raises(ValueError, match=r"\[B,3,T,H,W\]"):
        model.encode(torch.zeros(1, 4, 2, 8, 8, dtype=torch.uint8))


def test_cached_latent_skips_encoding():
    model = make_model()
    batch = make_batch()
    torch.manual_seed(5)
    loss_video, _ = model.training_step(batch)
    cached = dict(batch, latent=model.tokenizer.encode(batch["video"].float() / 127.5 - 1.0))
    model.tokenizer.encode = None  # encoding would now fail
    torch.manual_seed(5)
    loss_cached, _ = model.training_step(cached)
    torch.testing.assert_close(loss_video, loss_cached)


def test_denoise_applies_edm_preconditioning():
    model = make_model()
    batch = make_batch()
    condition = model.conditioner(batch)
    x = torch.randn(2, 12, 3, 4, 4)
    sigma = torch.tensor([0.3, 7.0])
    x0 = model.denoise(x, sigma, condition)
    c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1, 1) for c in edm.preconditioning(sigma))
    seen = model.net.inputs[-1]
    torch.testing.assert_close(seen["x"], c_in * x)
    torch.testing.assert_close(seen["timesteps"], c_noise.view(-1))
    net_output = model.net(c_in * x, c_noise.view(-1), **condition.network_kwargs())
    torch.testing.assert_close(x0, c_skip * x + c_out * net_output)
    # scalar sigma (as samplers pass it) broadcasts over the batch
    torch.testing.assert_close(model.denoise(x, torch.tensor(2.0), condition),
                               model.denoise(x, torch.tensor([2.0, 2.0]), condition))


def test_video_noise_is_adjusted_by_sqrt_latent_frames():
    for adjust, frames in [(True, 4), (False, 4), (True, 1)]:
        model = make_model(p_mean=0.0, p_std=0.0, adjust_video_noise=adjust)  # sigma = multiplier exactly
        model.training_step(make_batch(frames=frames))
        expected_sigma = math.sqrt(frames) if adjust else 1.0
        torch.testing.assert_close(model.net.inputs[-1]["timesteps"], torch.full((2,), 0.25 * math.log(expected_sigma)))


def test_video2world_conditions_on_clean_first_frames():
    model = make_model(video2world=True, min_condition_frames=1, max_condition_frames=2)
    batch = make_batch(batch_size=8, frames=4)
    x0 = model.encode(batch["video"])
    condition = model.with_condition_frames(model.conditioner(batch), x0, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    x_sigma = x0 + 5.0 * torch.randn_like(x0)
    x0_pred = model.denoise(x_sigma, torch.tensor(5.0), condition)
    net_input = model.net.inputs[-1]["x"]
    assert net_input.shape[1] == 13  # latent channels + condition mask
    clean_scale = 1.0 / math.sqrt(CONDITION_FRAME_SIGMA**2 + 0.25)
    c_in = 1.0 / math.sqrt(25.0 + 0.25)
    for b, k in enumerate([0, 1, 2, 3, 0, 1, 2, 3]):
        assert torch.all(net_input[b, 12, :k] == 1) and torch.all(net_input[b, 12, k:] == 0)
        torch.testing.assert_close(net_input[b, :12, :k], clean_scale * x0[b, :, :k])
        torch.testing.assert_close(net_input[b, :12, k:], c_in * x_sigma[b, :, k:])
        torch.testing.assert_close(x0_pred[b, :, :k], x0[b, :, :k])  # conditioning frames are kept clean
    # training draws between min and max conditioning frames per sample, and these frames add no loss
    torch.manual_seed(0)
    model.training_step(batch)
    counts = model.net.inputs[-1]["x"][:, 12, :, 0, 0].sum(dim=1)
    assert counts.min() >= 1 and counts.max() <= 2
    # a text2world call of a video2world model: mask channel all zero
    model.denoise(x_sigma, torch.tensor(5.0), model.conditioner(batch))
    assert torch.all(model.net.inputs[-1]["x"][:, 12] == 0)


def test_subclass_overrides_only_the_network_call():
    calls = []

    class DoubledModel(DiffusionModel):
        def _net_forward(self, net_input, timesteps, condition):
            calls.append(net_input.shape)
            return 2 * super()._net_forward(net_input, timesteps, condition)

    torch.manual_seed(0)
    model = DoubledModel(RecordingNet(12, 12), ShuffleTokenizer())
    loss, metrics = model.training_step(make_batch())
    assert calls and torch.isfinite(loss) and "mse" in metrics


def test_clear_errors_for_bad_inputs():
    with pytest.raises(TypeError, match="tokenizer"):
        DiffusionModel(RecordingNet(12, 12), object())
    with pytest.raises(ValueError, match="min_condition_frames"):
        DiffusionModel(RecordingNet(12, 12), ShuffleTokenizer(), min_condition_frames=3, max_condition_frames=1)
    with pytest.raises(ValueError, match="model.net.in_channels=13"):
        DiffusionModel(RecordingNet(12, 12), ShuffleTokenizer(), video2world=True)
    model = make_model()
    with pytest.raises(KeyError, match="neither 'latent' nor 'video'"):
        model.training_step({"t5_text_embeddings": torch.zeros(1, 2, TEXT_DIM)})
    with pytest.raises(ValueError, match="cached 'latent'"):
        model.training_step(dict(make_batch(), latent=torch.zeros(2, 5, 3, 4, 4)))
    with pytest.raises(ValueError, match="video2world"):
        model.with_condition_frames(model.conditioner(make_batch()), torch.zeros(2, 12, 3, 4, 4), torch.ones(2))


# ------------------------------------------------------------------------------------- with the real GeneralDIT
def make_dit_model(video2world=False, **kwargs):
    """The real pieces at tiny size: GeneralDIT and the light pixel tokenizer (2x2 patches -> 12 channels)."""
    from cosmos_transfer.networks.dit import GeneralDIT
    from cosmos_transfer.tokenizers.pixel import PixelTokenizer

    torch.manual_seed(0)
    tokenizer = PixelTokenizer(spatial_compression=2)
    channels = tokenizer.latent_channels
    net = GeneralDIT(
        max_img_h=8, max_img_w=8, max_frames=4, in_channels=channels + int(video2world), out_channels=channels,
        model_channels=32, num_blocks=1, num_heads=2, crossattn_emb_channels=TEXT_DIM,
    )
    return DiffusionModel(net, tokenizer, VideoConditioner(), video2world=video2world, **kwargs)


@pytest.mark.slow
def test_dit_model_state_dict_has_the_official_layout_and_trains():
    model = make_dit_model()
    keys = set(model.state_dict())
    assert {"logvar.0.freqs", "logvar.0.phases", "logvar.1.weight"} <= keys
    assert "net.blocks.block0.blocks.0.block.attn.to_q.0.weight" in keys
    assert all(k.startswith(("net.", "logvar.")) for k in keys)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
    batch = make_batch(frames=2)
    losses = []
    for step in range(30):
        torch.manual_seed(step % 3)  # cycle over three fixed noise draws of one batch
        loss, metrics = model.training_step(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(metrics["mse"].item())
    assert sum(losses[-6:]) < 0.8 * sum(losses[:6])


def count_net_calls(model):
    calls = []
    original = model._net_forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model._net_forward = counting
    return calls


@pytest.mark.slow
def test_generate_samples_is_seeded_and_guided():
    model = make_dit_model().eval()
    batch = make_batch(frames=2)
    calls = count_net_calls(model)
    a = model.generate_samples(batch, num_steps=4, guidance=0.0, seed=3, sampler="euler")
    assert a.shape == (2, 12, 2, 4, 4) and torch.isfinite(a).all()
    assert len(calls) == 4  # one network call per step without guidance
    b = model.generate_samples(batch, num_steps=4, guidance=0.0, seed=3, sampler="euler")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = model.generate_samples(batch, num_steps=4, guidance=0.0, seed=4, sampler="euler")
    assert not torch.allclose(a, c)
    calls.clear()
    guided = model.generate_samples(batch, num_steps=4, guidance=5.0, seed=3, sampler="res2ab")
    assert len(calls) == 8  # conditional + unconditional per step
    assert not torch.allclose(guided, a)
    negative = model.generate_samples(dict(batch, neg_t5_text_embeddings=torch.randn(2, 3, TEXT_DIM)), num_steps=4,
                                      guidance=5.0, seed=3, sampler="res2ab")
    assert not torch.allclose(negative, guided)
    video = model.decode(a)
    assert video.shape == batch["video"].shape


def test_generate_samples_video2world_keeps_the_given_frames():
    model = make_dit_model(video2world=True).eval()
    batch = make_batch(frames=4)
    previous = model.encode(batch["video"])[:, :, -1:]  # e.g. the last latent frame of a previous window
    sample = model.generate_samples(batch, num_steps=3, guidance=2.0, seed=0, condition_latent=previous)
    torch.testing.assert_close(sample[:, :, :1], previous)
    assert not torch.allclose(sample[:, :, 1:2], previous)
    with pytest.raises(ValueError, match="condition_latent must be"):
        model.generate_samples(batch, num_steps=2, condition_latent=previous[:, :5])
    with pytest.raises(ValueError, match="video2world"):
        make_dit_model().generate_samples(batch, num_steps=2, condition_latent=previous)


def test_model_config_options_build_the_model():
    from configs.train import make_config
    from cosmos_transfer.config.compose import override
    from cosmos_transfer.config.lazy import instantiate
    from cosmos_transfer.tokenizers.pixel import PixelTokenizer

    config = override(make_config(), ["model=video2world", "net=tiny", "conditioner=video", "ema=power",
                                      "model.net.in_channels=13", "model.net.out_channels=12",
                                      "model.net.crossattn_emb_channels=8", "model.net.max_img_h=8",
                                      "model.net.max_img_w=8", "model.net.max_frames=4"])
    model = instantiate(config.model, tokenizer=PixelTokenizer(spatial_compression=2))  # call-time kwargs win
    assert isinstance(model, DiffusionModel) and model.video2world and model.max_condition_frames == 2
    assert model.conditioner.text_dropout_rate == 0.2 and model.sigma_data == 0.5
    loss, _ = model.training_step(make_batch(frames=2))
    assert torch.isfinite(loss)
    ema = instantiate(config.ema, model=model)  # the trainer's call
    assert ema.s == 0.1 and "net.x_embedder.proj.1.weight" in ema.shadow


def test_flops_per_step_counts_the_network_on_the_batch_latents():
    from cosmos_transfer import flops

    model = make_dit_model()
    batch = make_batch(frames=2)
    expected = flops.dit_training_step_flops(model.net, (2, 12, 2, 4, 4), TEXT_LENGTH)
    assert model.flops_per_step(batch) == expected > 0
    assert model.flops_per_step(dict(batch, latent=torch.zeros(2, 12, 2, 4, 4))) == expected


def test_tokens_per_step_counts_the_patches_of_the_batch_latents():
    model = make_dit_model()
    ps, pt = model.net.patch_spatial, model.net.patch_temporal
    # latent (2, 12, 2, 4, 4): 2 samples x (2 / pt) frames x (4 / ps)^2 patches
    assert model.tokens_per_step(make_batch(frames=2)) == 2 * (2 // pt) * (4 // ps) ** 2 > 0


def test_training_step_is_reproducible_under_the_global_seed():
    # Every random draw (text dropout, sigma, noise, conditioning frames) comes from the global RNGs, so a seed
    # (and a resumed RNG state) reproduces the step bitwise.
    model = make_model(video2world=True).train()
    batch = make_batch(batch_size=4)
    torch.manual_seed(21)
    first, _ = model.training_step(batch)
    torch.manual_seed(21)
    again, _ = model.training_step(batch)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    other, _ = model.training_step(batch)
    assert other.item() != first.item()


def test_the_model_moves_a_batch_to_its_device_nested_values_too():
    """The model's entry points move the batch (the one place; the trainer and inference hand it over as loaded),
    including tensors inside lists and dicts (`control_weight` maps), and leave the caller's batch as it was."""
    model = make_dit_model().to("meta")
    tensor = torch.ones(2)
    batch = {"video": tensor, "control_weight": [0.5, tensor], "extra": {"x": tensor}, "caption": ["a", "b"]}
    moved = model._batch_to_device(batch)
    assert moved["video"].is_meta and moved["control_weight"][1].is_meta and moved["extra"]["x"].is_meta
    assert moved["control_weight"][0] == 0.5 and moved["caption"] == ["a", "b"]
    assert not batch["video"].is_meta and not batch["control_weight"][1].is_meta
