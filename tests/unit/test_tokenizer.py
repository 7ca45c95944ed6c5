"""Tokenizer interface and the light PixelTokenizer and DCTTokenizer: frame arithmetic, round trips, chunking,
frozen state."""

import pytest
import torch

from cosmos_transfer.tokenizers import PixelTokenizer


def _video(b=2, t=17, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def test_pixel_shapes_and_exact_round_trip():
    tok = PixelTokenizer(spatial_compression=4)
    video = _video()
    latent = tok.encode(video)
    assert latent.shape == (2, 48, 17, 4, 6) and latent.dtype == torch.float32
    assert tok.latent_channels == 48 and tok.spatial_compression == 4 and tok.temporal_compression == 1
    torch.testing.assert_close(tok.decode(latent), video, rtol=0, atol=1e-6)
    # one latent pixel holds exactly its 4x4 patch, (pixel - mean) / std
    torch.testing.assert_close(latent[0, 0, 3, 1, 2], video[0, 0, 3, 4, 8] / 0.5)
    torch.testing.assert_close(latent[0, 3 * 16 - 1, 3, 1, 2], video[0, 2, 3, 7, 11] / 0.5)


def test_pixel_channel_padding_and_causal_temporal_factor():
    tok = PixelTokenizer(spatial_compression=2, temporal_compression=2, latent_channels=32)
    video = _video(t=9)
    latent = tok.encode(video)
    assert latent.shape == (2, 32, 5, 8, 12)
    assert torch.all(latent[:, 24:] == 0)
    torch.testing.assert_close(tok.decode(latent), video, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="latent_channels must be an int >= 3\\*t\\*s\\*s = 24"):
        PixelTokenizer(spatial_compression=2, temporal_compression=2, latent_channels=16)


def test_frame_arithmetic_and_errors():
    tok = PixelTokenizer(spatial_compression=8, temporal_compression=8)
    assert [tok.latent_num_frames(n) for n in (1, 9, 121, 242, 251)] == [1, 2, 16, 32, 34]
    assert [tok.pixel_num_frames(m) for m in (1, 2, 16, 32, 34)] == [1, 9, 121, 242, 251]
    for bad in (0, 8, 10, 16, 125, 250):
        with pytest.raises(ValueError, match=f"cannot tokenize {bad} frames: expected 1 \\+ 8k frames"):
            tok.latent_num_frames(bad)
    with pytest.raises(ValueError, match="cannot tokenize 16 frames"):
        tok.encode(torch.zeros(1, 3, 16, 8, 8))
    with pytest.raises(ValueError, match="not a multiple of 8"):
        tok.encode(torch.zeros(1, 3, 9, 12, 8))
    with pytest.raises(ValueError, match="expected a float video"):
        tok.encode(torch.zeros(1, 3, 9, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"expected a video tensor \[B,3,T,H,W\], got \(1, 4, 9, 8, 8\)"):
        tok.encode(torch.zeros(1, 4, 9, 8, 8))
    with pytest.raises(ValueError, match=r"expected a latent tensor \[B,1536,T',H',W'\]"):
        tok.decode(torch.zeros(1, 16, 2, 1, 1))
    with pytest.raises(ValueError, match="pixel_chunk_duration must be 1 \\+ 8k"):
        PixelTokenizer(temporal_compression=8, pixel_chunk_duration=120)


def test_chunked_equals_one_pass():
    # temporal factor 2, chunks of 5 frames -> 3 latent frames; a 13-frame video = 2 whole chunks + a 3-frame tail
    video = _video(b=3, t=13, h=8, w=8)
    one = PixelTokenizer(spatial_compression=2, temporal_compression=2, pixel_chunk_duration=5)
    small = PixelTokenizer(
        spatial_compression=2,
        temporal_compression=2,
        pixel_chunk_duration=5,
        max_enc_batch_size=1,
        max_dec_batch_size=1,
    )
    latent = small.encode(video)
    assert latent.shape[2] == one.latent_num_frames(13) == 3 + 3 + 2
    # reference: every chunk encoded on its own, in one batch
    chunks = [video[:, :, 0:5], video[:, :, 5:10], video[:, :, 10:13]]
    expected = torch.cat([one.encode(c) for c in chunks], dim=2)
    torch.testing.assert_close(latent, expected, rtol=0, atol=0)
    torch.testing.assert_close(small.decode(latent), one.decode(latent), rtol=0, atol=0)
    torch.testing.assert_close(small.decode(latent), video, rtol=0, atol=1e-6)


def test_frozen_no_grads_eval_even_after_train():
    tok = PixelTokenizer()
    parent = torch.nn.Sequential(torch.nn.Linear(2, 2), tok)
    parent.train()
    assert not tok.training
    assert all(not p.requires_grad for p in tok.parameters())
    video = _video(t=1).requires_grad_(True)
    assert not tok.encode(video).requires_grad


def test_pixel_config_option_instantiates():
    from cosmos_transfer.config.lazy import instantiate
    from configs.tokenizer import PIXEL_TOKENIZER

    tok = instantiate(PIXEL_TOKENIZER)
    assert isinstance(tok, PixelTokenizer)
    assert tok.encode(_video(t=17, h=64, w=64)).shape == (2, tok.latent_channels, 17, 16, 16)


def test_cosmos_config_options(tmp_path, monkeypatch):
    from cosmos_transfer.config.lazy import instantiate
    from configs.tokenizer import COSMOS_CV8X8X8, COSMOS_CV8X8X8_OURS, COSMOS_CV8X8X8_RANDOM

    tok = instantiate(COSMOS_CV8X8X8_RANDOM)
    latent = tok.encode(_video(b=1, t=17, h=32, w=32))
    assert latent.shape == (1, 16, 3, 4, 4)
    assert tok.decode(latent).shape == (1, 3, 17, 32, 32)
    monkeypatch.setenv("COSMOS_CHECKPOINT_DIR", str(tmp_path))
    for option in (COSMOS_CV8X8X8, COSMOS_CV8X8X8_OURS):
        expected = "Cosmos-Tokenize1-CV8x8x8-720p.*encoder.jit, decoder.jit, mean_std.pt"
        with pytest.raises(FileNotFoundError, match=expected):
            instantiate(option)


def test_hide_from_state_dict_keeps_weights_out_of_the_parent():
    from cosmos_transfer.tokenizers import CosmosCV8x8x8Tokenizer, hide_from_state_dict

    parent = torch.nn.Linear(2, 2)
    tok = CosmosCV8x8x8Tokenizer(load_weights=False, channels=4, channels_mult=[1, 1, 1], num_res_blocks=1,
                                 attn_resolutions=[])  # fmt: skip
    hide_from_state_dict(parent, "tokenizer", tok)
    assert parent.tokenizer is tok
    assert sorted(parent.state_dict()) == ["bias", "weight"] and len(list(parent.parameters())) == 2
    assert len(tok.state_dict()) > 0  # the tokenizer itself still has its weights


def test_dct_shapes_projection_and_patch_mean():
    from cosmos_transfer.tokenizers import DCTTokenizer

    tok = DCTTokenizer()  # 4x4 pixels x 4 frames, 2x2x2 frequencies per colour
    assert tok.latent_channels == 24 and tok.spatial_compression == 4 and tok.temporal_compression == 4
    video = _video(t=17, h=32, w=32) * 0.5  # inside [-1, 1] after decoding too (no clamping in the way)
    latent = tok.encode(video)
    assert latent.shape == (2, 24, 5, 8, 8)
    # the DC channel of a colour is its patch mean, (mean - 0) / 0.5; latent frame 1 = frames 1..4 (causal)
    torch.testing.assert_close(latent[0, 0, 1, 2, 3], video[0, 0, 1:5, 8:12, 12:16].mean() / 0.5)
    torch.testing.assert_close(latent[1, 8, 2, 0, 1], video[1, 1, 5:9, 0:4, 4:8].mean() / 0.5)
    # decode is the least-squares inverse: decoding projects onto the kept frequencies, so encode(decode(z)) = z
    decoded = tok.decode(latent)
    assert decoded.shape == video.shape
    torch.testing.assert_close(tok.encode(decoded), latent, rtol=0, atol=1e-5)
    # a video constant over every 4 x 4 x 4 patch is all DC: it comes back exactly
    flat = torch.nn.functional.interpolate(_video(b=1, t=5, h=8, w=8), size=(20, 32, 32), mode="nearest")[:, :, 3:]
    torch.testing.assert_close(tok.decode(tok.encode(flat * 0.9)), flat * 0.9, rtol=0, atol=1e-5)


def test_dct_all_frequencies_is_exact_and_bad_arguments_are_named():
    from cosmos_transfer.tokenizers import DCTTokenizer

    full = DCTTokenizer(spatial_compression=2, temporal_compression=2, spatial_frequencies=2, temporal_frequencies=2)
    video = _video(t=9)
    assert full.encode(video).shape == (2, 24, 5, 8, 12)
    torch.testing.assert_close(full.decode(full.encode(video)), video, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="spatial_frequencies must be an int from 1 to 4, got 5"):
        DCTTokenizer(spatial_frequencies=5)
    with pytest.raises(ValueError, match="temporal_frequencies must be an int from 1 to 4, got 0"):
        DCTTokenizer(temporal_frequencies=0)
    with pytest.raises(ValueError, match="std must be positive"):
        DCTTokenizer(std=0.0)


def test_dct_config_option_instantiates():
    from cosmos_transfer.config.lazy import instantiate
    from configs.tokenizer import DCT_TOKENIZER
    from cosmos_transfer.tokenizers import DCTTokenizer

    tok = instantiate(DCT_TOKENIZER)
    assert isinstance(tok, DCTTokenizer)
    assert tok.encode(_video(t=17, h=32, w=32)).shape == (2, 24, 5, 8, 8)
