"""Numerical parity of the Cosmos-2.5 networks with diffusers' independent implementation, given the same weights.

Ours: Cosmos25DiT / Cosmos25ControlDiT. Theirs: CosmosTransformer3DModel in its 2.5 configuration
(`use_crossattn_projection`, `controlnet_block_every_n`, `img_context_dim_in`) and CosmosControlNetModel (diffusers
0.42.1). Several controls: diffusers' pipeline drives one controlnet, so its side runs one controlnet per modality
with that modality's weight as `conditioning_scale` and sums their residuals, which is what NVIDIA's multi-branch
net computes.
"""

import pytest
import torch

from cosmos_transfer.checkpoints.diffusers import control25_to_diffusers, net25_to_diffusers
from cosmos_transfer.networks.dit_v2_5 import Cosmos25DiT
from cosmos_transfer.networks.dit_v2_5_control import Cosmos25ControlDiT

transformer_cosmos = pytest.importorskip("diffusers.models.transformers.transformer_cosmos")
controlnet_cosmos = pytest.importorskip("diffusers.models.controlnets.controlnet_cosmos")

HEADS, HEAD_DIM = 2, 24
TINY = dict(
    max_img_h=32, max_img_w=32, max_frames=8, in_channels=4, out_channels=4, model_channels=HEADS * HEAD_DIM,
    num_blocks=4, num_heads=HEADS, crossattn_emb_channels=16, use_crossattn_projection=True,
    crossattn_proj_in_channels=40, rope_h_extrapolation_ratio=3.0, rope_w_extrapolation_ratio=1.5,
    rope_t_extrapolation_ratio=2.0, timestep_scale=0.001,
)
CONTROL = dict(vace_block_every_n=2, num_max_modalities=2)  # control blocks feed base blocks 0 and 2; 8 channels
pytestmark = pytest.mark.usefixtures("diffusers_without_torchvision")




def _randomize(net):
    torch.manual_seed(0)
    with torch.no_grad():  # non-zero AdaLN outputs and zero-init projections, so that every path contributes
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


def _eps_1e6(model):
    # NVIDIA's q/k RMSNorm eps is 1e-6 (minimal_v4_dit.py); diffusers' Attention builds norm_q/norm_k with 1e-5.
    for name, module in model.named_modules():
        if name.endswith(("norm_q", "norm_k")):
            module.eps = 1e-6
    return model


def _diffusers_config(ours, image=False):
    return dict(
        in_channels=ours.in_channels + 1, out_channels=4, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
        num_layers=ours.num_blocks, text_embed_dim=16, adaln_lora_dim=256, max_size=(8, 32, 32), patch_size=(1, 2, 2),
        rope_scale=(2.0, 3.0, 1.5), concat_padding_mask=True, extra_pos_embed_type=None, use_crossattn_projection=True,
        crossattn_proj_in_channels=40, encoder_hidden_states_channels=16,
        img_context_dim_in=12 if image else None, img_context_dim_out=ours.model_channels,
    )


def _transformer(ours, image=False, every_n=None):
    theirs = transformer_cosmos.CosmosTransformer3DModel(**_diffusers_config(ours, image),
                                                         controlnet_block_every_n=every_n).eval()
    theirs.load_state_dict(net25_to_diffusers(ours.state_dict()), strict=True)
    return _eps_1e6(theirs)


def _controlnet(ours, branch=None, image=False):
    config = _diffusers_config(ours, image)
    theirs = controlnet_cosmos.CosmosControlNetModel(
        n_controlnet_blocks=len(ours.control_layers), in_channels=ours.control_channels + 2,
        latent_channels=ours.in_channels + 2, model_channels=ours.model_channels, num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM, text_embed_dim=16, adaln_lora_dim=256, patch_size=(1, 2, 2),
        max_size=(8, 32, 32), rope_scale=(2.0, 3.0, 1.5), extra_pos_embed_type=None,
        img_context_dim_in=config["img_context_dim_in"], img_context_dim_out=ours.model_channels,
        use_crossattn_projection=True, crossattn_proj_in_channels=40, encoder_hidden_states_channels=16,
    ).eval()
    theirs.load_state_dict(control25_to_diffusers(ours.state_dict(), branch), strict=True)
    return _eps_1e6(theirs)


def _inputs(batch=1, frames=3, size=16, text=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, frames, size, size, generator=g)
    t = torch.rand(batch, generator=g) * 1000  # rectified-flow time in [0, 1000]; the nets scale it by 0.001
    text_emb = torch.randn(batch, text, 40, generator=g)
    condition_mask = torch.zeros(batch, 1, frames, size, size)
    condition_mask[:, :, :1] = 1.0  # first latent frame given (video2world)
    padding = torch.zeros(1, 1, size * 8, size * 8)  # pixel-space padding mask, right quarter padded
    padding[..., size * 6 :] = 1.0
    return x, t, text_emb, condition_mask, padding


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_names_are_nvidias():
    """The parameter names are those of NVIDIA's MiniTrainDIT (minimal_v4_dit.py) for the released 2.5 setup."""
    net = Cosmos25ControlDiT(**TINY, **CONTROL, extra_image_context_dim=12)
    keys = set(net.state_dict())
    for key in ("x_embedder.proj.1.weight", "t_embedder.1.linear_1.weight", "t_embedder.1.linear_2.weight",
                "t_embedding_norm.weight", "crossattn_proj.0.weight", "crossattn_proj.0.bias",
                "img_context_proj.0.weight", "img_context_proj.0.bias", "final_layer.linear.weight",
                "final_layer.adaln_modulation.1.weight", "final_layer.adaln_modulation.2.weight",
                "blocks.3.self_attn.q_proj.weight", "blocks.3.self_attn.q_norm.weight",
                "blocks.3.self_attn.output_proj.weight", "blocks.3.cross_attn.k_img.weight",
                "blocks.3.cross_attn.q_img_norm.weight", "blocks.3.mlp.layer1.weight", "blocks.3.mlp.layer2.weight",
                "blocks.3.adaln_modulation_self_attn.1.weight", "blocks.3.adaln_modulation_mlp.2.weight",
                "control_embedder.proj.1.weight", "control_blocks.0.before_proj.weight",
                "control_blocks.0.before_proj.bias", "control_blocks.1.after_proj.bias",
                "control_blocks.1.cross_attn.v_img.weight"):
        assert key in keys, key
    assert "control_blocks.1.before_proj.weight" not in keys  # before_proj on control block 0 only
    assert not any(k.startswith("pos_embedder.") for k in keys)  # RoPE ranges are recomputed, never stored
    assert net.x_embedder.proj[1].in_features == (4 + 2) * 4  # latent + condition mask + padding mask, 2x2 patches
    assert net.control_embedder.proj[1].in_features == (8 + 2) * 4


def test_new_branch_is_zero_initialized():
    """A new branch (zero before_proj / after_proj) leaves the base's output unchanged."""
    torch.manual_seed(0)
    net = Cosmos25ControlDiT(**TINY, **CONTROL).eval()
    with torch.no_grad():  # a base whose blocks are not identities
        for block in net.blocks.values():
            for name, p in block.named_parameters():
                if name.startswith("adaln_modulation"):
                    p.normal_(0, 0.2)
    net.copy_base_to_control_blocks()
    base = Cosmos25DiT(**TINY).eval()
    base.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("control_")}, strict=True)
    x, t, text, cond, padding = _inputs()
    control = torch.randn(1, 4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, text, control, cond, padding_mask=padding),
                                   base(x, t, text, cond, padding_mask=padding), rtol=0, atol=0)
    for i, control_block in enumerate(net.control_blocks):  # control block i starts as base block i
        for name, p in net.blocks[str(i)].state_dict().items():
            assert torch.equal(control_block.state_dict()[name], p)


def test_transformer_matches_diffusers():
    ours = _randomize(Cosmos25DiT(**TINY))
    theirs = _transformer(ours)
    x, t, text, cond, padding = _inputs(batch=2)
    with torch.no_grad():
        expected = torch.cat([  # diffusers repeats one [1,1,H,W] padding mask; per sample to be explicit
            theirs(x[i:i + 1], t[i:i + 1] * 0.001, text[i:i + 1], condition_mask=cond[i:i + 1],
                   padding_mask=padding).sample for i in range(2)])
        _close(ours(x, t, text, cond, padding_mask=padding), expected)
        # No condition mask: ours uses zeros (text-to-world); diffusers' channel is the zeros given.
        expected = theirs(x, t * 0.001, text, condition_mask=torch.zeros_like(cond), padding_mask=padding).sample
        _close(ours(x, t, text, padding_mask=padding), expected)


def test_transformer_backward_matches_diffusers():
    ours = _randomize(Cosmos25DiT(**TINY))
    theirs = _transformer(ours)
    x, t, text, cond, padding = _inputs()
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(x_ours, t, text, cond, padding_mask=padding).square().sum().backward()
    theirs(x_theirs, t * 0.001, text, condition_mask=cond, padding_mask=padding).sample.square().sum().backward()
    _close(x_ours.grad, x_theirs.grad)
    ours_grads = net25_to_diffusers({n: p.grad for n, p in ours.named_parameters()})
    for name, p in theirs.named_parameters():
        _close(ours_grads[name], p.grad)


def test_per_frame_timesteps_and_image_context_match_diffusers():
    ours = _randomize(Cosmos25DiT(**TINY, extra_image_context_dim=12))
    theirs = _transformer(ours, image=True)
    x, _, text, cond, padding = _inputs()
    t = torch.tensor([[100.0, 900.0, 500.0]])
    image = torch.randn(1, 5, 12)
    with torch.no_grad():
        expected = theirs(x, t[:, None, :, None, None] * 0.001, (text, image), condition_mask=cond,
                          padding_mask=padding).sample
        _close(ours(x, t, text, cond, padding_mask=padding, img_context_emb=image), expected)
        # Without an image, both skip the image attention (NVIDIA's model feeds zeros instead: the caller's choice).
        expected = theirs(x, t[:, None, :, None, None] * 0.001, (text, None), condition_mask=cond,
                          padding_mask=padding).sample
        _close(ours(x, t, text, cond, padding_mask=padding), expected)


def test_one_control_matches_diffusers():
    ours = _randomize(Cosmos25ControlDiT(**TINY, **CONTROL, extra_image_context_dim=12))
    theirs, controlnet = _transformer(ours, image=True, every_n=2), _controlnet(ours, image=True)
    x, t, text, cond, padding = _inputs()
    control = torch.randn(1, 4, 3, 16, 16)  # one modality's latents, zero-padded to 8 channels by both
    image = torch.randn(1, 5, 12)
    with torch.no_grad():
        residuals = controlnet(control, x, t * 0.001, (text, image), cond, conditioning_scale=0.7,
                               padding_mask=padding).control_block_samples
        expected = theirs(x, t * 0.001, (text, image), block_controlnet_hidden_states=residuals,
                          condition_mask=cond, padding_mask=padding).sample
        got = ours(x, t, text, control, cond, padding_mask=padding, img_context_emb=image, control_scale=0.7)
        _close(got, expected)
        without = ours(x, t, text, control, cond, padding_mask=padding, img_context_emb=image, control_scale=0.0)
    assert (got - without).abs().max() > 1e-3 * got.abs().max()  # the branch does contribute


def test_several_controls_match_diffusers():
    """Three branches (NVIDIA's num_control_branches=3): the weighted sum of three diffusers controlnets."""
    ours = _randomize(Cosmos25ControlDiT(**TINY, **CONTROL, num_control_branches=3))
    theirs = _transformer(ours, every_n=2)
    controlnets = [_controlnet(ours, branch=b) for b in range(3)]
    x, t, text, cond, padding = _inputs(seed=3)
    controls = [torch.randn(1, 4, 3, 16, 16) for _ in range(3)]
    weights = [0.5, 1.0, 0.25]
    with torch.no_grad():
        def diffusers_output(active):
            residuals = None
            for b in active:
                r = controlnets[b](controls[b], x, t * 0.001, text, cond, conditioning_scale=weights[b],
                                   padding_mask=padding).control_block_samples
                residuals = r if residuals is None else [a + c for a, c in zip(residuals, r)]
            return theirs(x, t * 0.001, text, block_controlnet_hidden_states=residuals, condition_mask=cond,
                          padding_mask=padding).sample

        # the modalities concatenated on channels (NVIDIA's layout) or one tensor per branch: the same
        _close(ours(x, t, text, torch.cat(controls, 1), cond, padding_mask=padding, control_scale=weights),
               diffusers_output([0, 1, 2]))
        _close(ours(x, t, text, controls, cond, padding_mask=padding, control_scale=weights),
               diffusers_output([0, 1, 2]))
        # an all-zero control is skipped, as NVIDIA's net does (has_hint); diffusers is given the other two
        with_zero = [controls[0], torch.zeros_like(controls[1]), controls[2]]
        _close(ours(x, t, text, with_zero, cond, padding_mask=padding, control_scale=weights),
               diffusers_output([0, 2]))
