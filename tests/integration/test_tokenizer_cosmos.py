"""Our CV8x8x8 network: parity with diffusers' AutoencoderKLCosmos (same weights), TorchScript round trip through
the JIT loader, official-name loading, chunking, and the errors for a missing checkpoint folder."""

import os
import re

import pytest
import torch

from cosmos_transfer.tokenizers.cosmos_cv8x8x8 import (
    CausalVideoAutoencoder,
    CosmosCV8x8x8Tokenizer,
    diffusers_state_dict,
)
from cosmos_transfer.tokenizers.jit import CosmosJITTokenizer, save_torchscript

# Small width; attention at both resolutions so that level attention is covered too (the 720p model has it only in
# the middle blocks).
SMALL = dict(channels=8, channels_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8, 16), resolution=64)


def _video(b=1, t=9, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def _randomize(module, seed=1):
    """Non-trivial norm weights and biases too (defaults are ones/zeros, which would hide mapping mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p + 0.1 * torch.randn(p.shape, generator=g))


def _diffusers_twin(net: CausalVideoAutoencoder, cfg: dict):
    import diffusers  # test-only dependency (the independent implementation we check against)
    c, m = cfg["channels"], cfg["channels_mult"]
    theirs = diffusers.AutoencoderKLCosmos(
        encoder_block_out_channels=(c, *[c * k for k in m]),
        decode_block_out_channels=(*[c * k for k in m], c * m[-1]),
        attention_resolutions=cfg["attn_resolutions"],
        resolution=cfg["resolution"],
        num_layers=cfg["num_res_blocks"],
        latents_mean=None,
        latents_std=None,
    ).eval()
    mapped = diffusers_state_dict(net)
    theirs.load_state_dict(mapped, strict=True)
    return theirs


def test_parity_with_diffusers_autoencoder_kl_cosmos():
    net = CausalVideoAutoencoder(**SMALL).eval()
    _randomize(net)
    theirs = _diffusers_twin(net, SMALL)
    video = _video(t=17)
    with torch.no_grad():
        ours_z = net.encode(video)
        their_z = theirs.encode(video).latent_dist.mode()
        assert ours_z.shape == (1, 16, 3, 4, 4)
        torch.testing.assert_close(ours_z, their_z, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(net.decode(ours_z), theirs.decode(ours_z).sample, rtol=1e-4, atol=1e-4)
        # a single frame (image) takes the T == 1 branches of the resamplers
        image = video[:, :, :1]
        torch.testing.assert_close(net.encode(image), theirs.encode(image).latent_dist.mode(), rtol=1e-4, atol=1e-4)


def test_released_architecture_names_and_size():
    net = CausalVideoAutoencoder()  # Cosmos-Tokenize1-CV8x8x8-720p settings
    keys = set(net.state_dict())
    for name in [
        "encoder.conv_in.0.conv3d.weight",
        "encoder.down.0.block.0.norm1.norm.weight",
        "encoder.down.0.block.0.conv1.1.conv3d.weight",
        "encoder.down.0.block.0.nin_shortcut.conv3d.weight",
        "encoder.down.0.downsample.conv2.conv3d.weight",
        "encoder.mid.attn_1.0.q.conv3d.weight",
        "encoder.mid.attn_1.1.proj_out.conv3d.bias",
        "encoder.conv_out.1.conv3d.weight",
        "quant_conv.conv3d.weight",
        "post_quant_conv.conv3d.weight",
        "decoder.up.1.upsample.conv1.conv3d.weight",
        "decoder.up.2.block.2.conv2.0.conv3d.weight",
        "decoder.norm_out.norm.bias",
    ]:
        assert name in keys, name
    assert not any(".attn.0" in k for k in keys if ".mid." not in k)  # 720p: attention only in the middle blocks
    assert sum(p.numel() for p in net.parameters()) > 100e6


def test_torchscript_round_trip_through_the_jit_loader(tmp_path):
    ours = CosmosCV8x8x8Tokenizer(load_weights=False, pixel_chunk_duration=9, **SMALL)
    _randomize(ours.network)
    g = torch.Generator().manual_seed(3)
    ours.latent_mean.copy_(0.1 * torch.randn(ours.latent_mean.shape, generator=g))
    ours.latent_std.copy_(0.5 + torch.rand(ours.latent_std.shape, generator=g))
    folder = str(tmp_path / "tok")
    save_torchscript(ours.network, folder, ours.latent_mean, ours.latent_std)
    assert sorted(os.listdir(folder)) == ["decoder.jit", "encoder.jit", "mean_std.pt"]

    video = _video(b=2, t=18)  # two whole 9-frame chunks
    jit_tok = CosmosJITTokenizer(folder, pixel_chunk_duration=9)
    latent = ours.encode(video)
    assert latent.shape == (2, 16, 4, 4, 4)
    torch.testing.assert_close(jit_tok.encode(video), latent, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(jit_tok.decode(latent), ours.decode(latent), rtol=1e-5, atol=1e-5)
    # our network loads the files' weights by their official names
    reloaded = CosmosCV8x8x8Tokenizer(folder, pixel_chunk_duration=9, **SMALL)
    torch.testing.assert_close(reloaded.encode(video), latent, rtol=1e-5, atol=1e-5)


def test_chunked_and_batch_bounded_equal_one_pass():
    kw = dict(load_weights=False, pixel_chunk_duration=9, **SMALL)
    small_batches = CosmosCV8x8x8Tokenizer(max_enc_batch_size=1, max_dec_batch_size=1, **kw)
    video = _video(b=2, t=9 + 9 + 1, h=16, w=16)  # two whole chunks and a 1-frame tail
    latent = small_batches.encode(video)
    assert latent.shape == (2, 16, 2 + 2 + 1, 2, 2) and small_batches.latent_num_frames(19) == 5
    # one pass: every chunk of every video side by side in one batch
    net = small_batches.network
    with torch.no_grad():
        folded = torch.cat([video[:, :, 0:9], video[:, :, 9:18]])
        one = net.encode(folded)
        expected = torch.cat([one[:2], one[2:], net.encode(video[:, :, 18:])], dim=2)
    torch.testing.assert_close(latent, expected, rtol=1e-5, atol=1e-5)
    decoded = small_batches.decode(latent)
    assert decoded.shape == video.shape
    with torch.no_grad():
        one = net.decode(torch.cat([latent[:, :, 0:2], latent[:, :, 2:4]]))
        expected = torch.cat([one[:2], one[2:], net.decode(latent[:, :, 4:])], dim=2)
    torch.testing.assert_close(decoded, expected, rtol=1e-5, atol=1e-5)


def test_missing_checkpoint_folder_or_file_names_path_and_expected_files(tmp_path, monkeypatch):
    monkeypatch.setenv("COSMOS_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    expected_root = os.path.join(str(tmp_path / "ckpts"), "nvidia", "Cosmos-Tokenize1-CV8x8x8-720p")
    with pytest.raises(FileNotFoundError, match=re.escape(expected_root) + ".*encoder.jit, decoder.jit, mean_std.pt"):
        CosmosJITTokenizer()
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "encoder.jit").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="lacks decoder.jit, mean_std.pt"):
        CosmosCV8x8x8Tokenizer(str(folder), **SMALL)


def test_frozen_and_interface():
    tok = CosmosCV8x8x8Tokenizer(load_weights=False, **SMALL)
    assert (tok.latent_channels, tok.temporal_compression, tok.spatial_compression) == (16, 8, 8)
    assert tok.latent_num_frames(121) == 16 and tok.pixel_num_frames(16) == 121
    assert not tok.training and all(not p.requires_grad for p in tok.parameters())
    with pytest.raises(ValueError, match="cannot tokenize 12 frames"):
        tok.encode(_video(t=12, h=16, w=16))


def test_bfloat16_path_close_to_float32():
    """dtype="bfloat16" is what "auto" picks on CUDA; on CPU it runs the same half-precision code (GroupNorm path)."""
    fp32 = CosmosCV8x8x8Tokenizer(load_weights=False, dtype="float32", **SMALL)
    bf16 = CosmosCV8x8x8Tokenizer(load_weights=False, dtype="bfloat16", **SMALL)
    video = _video(t=9, h=16, w=16)
    reference, latent = fp32.encode(video), bf16.encode(video)
    assert latent.dtype == torch.float32 and bf16.network.quant_conv.conv3d.weight.dtype == torch.bfloat16
    assert (latent - reference).abs().max() < 0.05 * reference.abs().max()
    decoded = bf16.decode(reference)
    assert decoded.dtype == torch.float32 and decoded.shape == video.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_dtype_runs_bfloat16_on_cuda():
    tok = CosmosCV8x8x8Tokenizer(load_weights=False, **SMALL)
    video = _video(t=9, h=16, w=16)
    reference = tok.encode(video)
    latent = tok.encode(video.cuda())  # the network follows the input to the GPU and to bfloat16
    assert tok.network.quant_conv.conv3d.weight.dtype == torch.bfloat16
    assert (latent.cpu() - reference).abs().max() < 0.05 * reference.abs().max()


def test_network_can_be_fine_tuned():
    """Outside the (frozen) tokenizer wrapper the network trains: every parameter it uses gets a gradient."""
    net = CausalVideoAutoencoder(**SMALL)
    video = _video(t=9, h=16, w=16)
    (net(video) - video).pow(2).mean().backward()
    no_grad = sorted(name for name, p in net.named_parameters() if p.grad is None)
    # only the convs of switched-off resamplers (kept for the official names) are unused
    assert no_grad and all(re.search(r"(downsample|upsample)\.conv\d\.conv3d\.", name) for name in no_grad)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
