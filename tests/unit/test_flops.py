"""FLOP counter of a GeneralDIT training step: hand count and torch's FlopCounterMode."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cosmos_transfer.flops import DiTShape, dit_forward_flops, dit_training_step_flops, mfu
from cosmos_transfer.networks.dit import GeneralDIT

TINY = dict(max_img_h=32, max_img_w=32, max_frames=8, in_channels=4, out_channels=4, model_channels=48,
            num_blocks=2, num_heads=2, crossattn_emb_channels=16)


def test_hand_count_tiny():
    # D=48, hidden=192, Dc=16, one block, lora 8; latent [1,4,2,4,4] -> 2*2*2 = 8 tokens; 3 text tokens.
    shape = DiTShape(model_channels=48, num_blocks=1, mlp_ratio=4.0, in_channels=4, out_channels=4, patch_spatial=2,
                     patch_temporal=1, crossattn_emb_channels=16, adaln_lora_dim=8)
    patch = 2 * 8 * (5 * 4) * 48  # 5 channels (+ padding mask) x 2x2 patch -> 48
    time_mlp = 2 * 48 * 48 + 2 * 48 * 144
    self_attn = 4 * (2 * 8 * 48 * 48) + 2 * (2 * 8 * 8 * 48)  # projections + QK^T, PV
    cross_attn = 2 * (2 * 8 * 48 * 48) + 2 * (2 * 3 * 16 * 48) + 2 * (2 * 8 * 3 * 48)
    mlp = 2 * (2 * 8 * 48 * 192)
    adaln = 3 * (2 * (48 * 8 + 8 * 144))
    final = 2 * (48 * 8 + 8 * 96) + 2 * 8 * 48 * 16
    expected = patch + time_mlp + self_attn + cross_attn + mlp + adaln + final
    assert dit_forward_flops(shape, 1, 2, 4, 4, 3) == expected
    assert dit_training_step_flops(shape, (1, 4, 2, 4, 4), 3) == 3 * expected


def test_matches_torch_flop_counter():
    net = GeneralDIT(**TINY)
    x, t, text = torch.randn(2, 4, 4, 16, 16), torch.rand(2), torch.randn(2, 7, 16)
    # The math SDPA backend runs attention as matmuls, which FlopCounterMode sees.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net(x, t, text)
    assert counter.get_total_flops() == dit_forward_flops(DiTShape.of(net), 2, 4, 16, 16, 7)


def test_attention_term_is_quadratic_and_meta_net_works():
    with torch.device("meta"):
        net = GeneralDIT(max_img_h=240, max_img_w=240, max_frames=128, in_channels=16, out_channels=16,
                         model_channels=4096, num_blocks=28, num_heads=32)
    short = dit_training_step_flops(net, (1, 16, 8, 88, 160), 512)
    long = dit_training_step_flops(net, (1, 16, 16, 88, 160), 512)
    assert long > 2 * short  # twice the tokens, more than twice the work
    # 7B, 16x88x160 latent (121 frames at 704x1280): ~6*N*tokens plus attention, a few PFLOP per sample.
    params_flops = 6 * 7.2e9 * 16 * 44 * 80
    assert params_flops < long < 3 * params_flops


def test_mfu_and_errors():
    assert mfu(989e12, 2.0, 989e12, num_devices=2) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="seconds_per_step"):
        mfu(1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="not divisible"):
        dit_training_step_flops(GeneralDIT(**TINY), (1, 4, 4, 15, 16), 7)
    with pytest.raises(ValueError, match="latent_shape"):
        dit_training_step_flops(GeneralDIT(**TINY), (4, 4, 16, 16), 7)


def test_peak_for_mfu_is_the_configured_one_or_a_known_gpu():
    from cosmos_transfer.flops import device_peak_tflops

    assert device_peak_tflops(torch.device("cpu"), 123.0) == 123.0
    assert device_peak_tflops(torch.device("cpu")) is None  # no known peak on CPU: MFU is not reported
