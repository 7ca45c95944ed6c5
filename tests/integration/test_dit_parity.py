"""Numerical parity of GeneralDIT with diffusers' independent CosmosTransformer3DModel, given the same weights."""

import pytest
import torch

from cosmos_transfer.checkpoints.diffusers import net_to_diffusers
from cosmos_transfer.networks.dit import GeneralDIT

transformer_cosmos = pytest.importorskip("diffusers.models.transformers.transformer_cosmos")

TINY = dict(
    max_img_h=32, max_img_w=32, max_frames=8, in_channels=4, out_channels=4, model_channels=48, num_blocks=2,
    num_heads=2, crossattn_emb_channels=16, rope_h_extrapolation_ratio=1.5, rope_w_extrapolation_ratio=1.0,
    rope_t_extrapolation_ratio=2.0,
)


@pytest.fixture
def pair(diffusers_without_torchvision):

    def build(**overrides):
        torch.manual_seed(0)
        ours = GeneralDIT(**{**TINY, **overrides}).eval()
        with torch.no_grad():  # non-zero AdaLN outputs so that every path contributes
            for p in ours.parameters():
                p.normal_(0, 0.2)
        theirs = transformer_cosmos.CosmosTransformer3DModel(
            in_channels=ours.in_channels, out_channels=4, num_attention_heads=2, attention_head_dim=24, num_layers=2,
            text_embed_dim=16, adaln_lora_dim=256, max_size=(8, 32, 32), patch_size=(1, 2, 2),
            rope_scale=(2.0, 1.5, 1.0), concat_padding_mask=True, extra_pos_embed_type="learnable",
        ).eval()
        theirs.load_state_dict(net_to_diffusers(ours.state_dict()), strict=True)
        # The official q/k RMSNorm eps is 1e-6 (Transformer Engine RMSNorm); diffusers' Attention defaults to 1e-5.
        for name, module in theirs.named_modules():
            if name.endswith(("norm_q", "norm_k")):
                module.eps = 1e-6
        return ours, theirs

    return build


def _inputs(batch=1, frames=4, size=16, text=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, frames, size, size, generator=g)
    t = torch.rand(batch, generator=g) * 4 - 2
    text_emb = torch.randn(batch, text, 16, generator=g)
    padding = torch.zeros(1, 1, size * 8, size * 8)  # pixel-space padding mask, right quarter padded
    padding[..., size * 6 :] = 1.0
    return x, t, text_emb, padding


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_forward_matches_diffusers(pair):
    ours, theirs = pair()
    x, t, text, padding = _inputs(batch=2)
    with torch.no_grad():
        expected = theirs(x, t, text, fps=30, padding_mask=padding).sample
        _close(ours(x, t, text, fps=torch.tensor([30.0, 30.0]), padding_mask=padding), expected)
        # No fps: neither scales the RoPE time axis.
        _close(ours(x, t, text, padding_mask=padding), theirs(x, t, text, padding_mask=padding).sample)


def test_backward_matches_diffusers(pair):
    ours, theirs = pair()
    x, t, text, padding = _inputs()
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(x_ours, t, text, fps=torch.tensor([24.0]), padding_mask=padding).square().sum().backward()
    theirs(x_theirs, t, text, fps=24, padding_mask=padding).sample.square().sum().backward()
    _close(x_ours.grad, x_theirs.grad)
    ours_grads = net_to_diffusers({n: p.grad for n, p in ours.named_parameters()})
    for name, p in theirs.named_parameters():
        _close(ours_grads[name], p.grad)


def test_per_frame_timesteps_match_diffusers(pair):
    ours, theirs = pair()
    x, _, text, padding = _inputs()
    t = torch.tensor([[0.1, -1.0, 0.5, 2.0]])
    with torch.no_grad():
        expected = theirs(x, t[:, None, :, None, None], text, fps=24, padding_mask=padding).sample
        _close(ours(x, t, text, fps=torch.tensor([24.0]), padding_mask=padding), expected)


def test_video2world_channels_and_text_mask_match_diffusers(pair):
    ours, theirs = pair(in_channels=5, use_cross_attn_mask=True)
    x, t, text, padding = _inputs(batch=2)
    condition_mask = torch.zeros(2, 1, 4, 16, 16)
    condition_mask[:, :, :1] = 1.0
    text_mask = torch.ones(2, 7)
    text_mask[0, 3:] = 0
    with torch.no_grad():
        expected = theirs(
            x, t, text, attention_mask=text_mask.bool(), fps=24, condition_mask=condition_mask, padding_mask=padding
        ).sample
        got = ours(torch.cat([x, condition_mask], 1), t, text, crossattn_mask=text_mask, fps=torch.tensor([24.0] * 2),
                   padding_mask=padding)
    _close(got, expected)
