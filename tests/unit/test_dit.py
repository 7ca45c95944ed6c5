"""GeneralDIT: shapes, official parameter names, pieces API, conditioning inputs, errors, 7B on the meta device."""

import pytest
import torch

from cosmos_transfer.networks import te_backend
from cosmos_transfer.networks.dit import GeneralDIT

TINY = dict(
    max_img_h=32, max_img_w=32, max_frames=8, in_channels=4, out_channels=4, model_channels=48, num_blocks=2,
    num_heads=2, crossattn_emb_channels=16, rope_t_extrapolation_ratio=2.0,
)


def make_net(seed: int = 0, randomize: bool = True, **overrides) -> GeneralDIT:
    torch.manual_seed(seed)
    net = GeneralDIT(**{**TINY, **overrides}).eval()
    if randomize:  # the official init zeroes the AdaLN outputs (blocks = identity); make every path count
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0, 0.2)
    return net


def inputs(batch: int = 2, channels: int = 4, frames: int = 4, size: int = 16, text: int = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, channels, frames, size, size, generator=g),
        torch.rand(batch, generator=g) * 2 - 1,
        torch.randn(batch, text, 16, generator=g),
    )


def test_output_shape_text2world_and_video2world():
    x, t, text = inputs()
    assert make_net()(x, t, text).shape == x.shape
    net = make_net(in_channels=5)  # video2world: +1 condition-mask channel, concatenated by the diffusion model
    x5 = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
    assert net(x5, t, text).shape == x.shape
    net = make_net(patch_temporal=2, out_channels=3)
    assert net(x, t, text, fps=torch.tensor([24.0, 24.0])).shape == (2, 3, 4, 16, 16)


def test_official_parameter_names():
    keys = set(make_net(randomize=False).state_dict())
    expected = {
        "x_embedder.proj.1.weight", "t_embedder.1.linear_1.weight", "t_embedder.1.linear_2.weight",
        "affline_norm.weight", "pos_embedder.seq",
        "extra_pos_embedder.pos_emb_h", "extra_pos_embedder.pos_emb_w", "extra_pos_embedder.pos_emb_t",
        "blocks.block0.blocks.0.block.attn.to_q.0.weight", "blocks.block0.blocks.0.block.attn.to_q.1.weight",
        "blocks.block0.blocks.0.block.attn.to_k.1.weight", "blocks.block0.blocks.0.block.attn.to_v.0.weight",
        "blocks.block0.blocks.0.block.attn.to_out.0.weight", "blocks.block1.blocks.1.block.attn.to_k.0.weight",
        "blocks.block0.blocks.0.adaLN_modulation.1.weight", "blocks.block0.blocks.0.adaLN_modulation.2.weight",
        "blocks.block0.blocks.2.block.layer1.weight", "blocks.block0.blocks.2.block.layer2.weight",
        "final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.2.weight", "final_layer.linear.weight",
    }
    assert expected <= keys
    # Nothing else besides the per-block copies of those names (no biases, no extra buffers).
    per_block = {k.replace("block1.", "block0.", 1) for k in keys}
    # x_embedder, seq, 3 extra tables, 2 time Linears, affline_norm; 2 attentions x (6 + 2 AdaLN); MLP 2 + 2 AdaLN;
    # final layer 3.
    assert len(per_block) == 1 + 1 + 3 + 2 + 1 + 2 * (6 + 2) + (2 + 2) + 3


def test_init_makes_blocks_identity_without_adaln_lora():
    # Zero AdaLN outputs: without the LoRA term (which comes from the time MLP) blocks start as identity,
    # so the text cannot change the output at init.
    net = make_net(randomize=False, use_adaln_lora=False)
    x, t, text = inputs()
    torch.testing.assert_close(net(x, t, text), net(x, t, torch.randn_like(text)))


def test_pieces_reproduce_forward_and_inject_residuals():
    net = make_net()
    x, t, text = inputs()
    fps = torch.tensor([24.0, 12.0])
    reference = net(x, t, text, fps=fps)
    block_inputs = net.forward_before_blocks(x, t, text, fps=fps)
    tokens = net.forward_blocks(block_inputs.x, block_inputs)
    torch.testing.assert_close(net.decode_output(tokens, block_inputs), reference)
    assert list(net.blocks) == ["block0", "block1"]

    residual = torch.randn_like(block_inputs.x)
    manual = net.blocks["block0"](block_inputs.x, **block_inputs.block_kwargs()) + residual
    manual = net.blocks["block1"](manual, **block_inputs.block_kwargs())
    injected = net(x, t, text, fps=fps, block_residuals={"block0": residual})
    torch.testing.assert_close(injected, net.decode_output(manual, block_inputs))


def test_batch_items_are_independent_with_per_sample_fps():
    net = make_net()
    x, t, text = inputs()
    fps = torch.tensor([24.0, 10.0])
    together = net(x, t, text, fps=fps)
    for i in range(2):
        alone = net(x[i : i + 1], t[i : i + 1], text[i : i + 1], fps=fps[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(net(x, t, text, fps=torch.tensor([24.0, 24.0])), together)


def test_per_frame_timesteps_match_uniform_when_equal():
    net = make_net()
    x, t, text = inputs()
    per_frame = t[:, None].expand(2, 4).contiguous()
    torch.testing.assert_close(net(x, per_frame, text), net(x, t, text))
    per_frame = per_frame.clone()
    per_frame[:, 0] = 5.0  # a clean conditioning frame changes the modulation
    assert not torch.allclose(net(x, per_frame, text), net(x, t, text))


def test_padding_mask_is_resized_and_used():
    net = make_net()
    x, t, text = inputs()
    zeros = torch.zeros(2, 1, 128, 128)
    torch.testing.assert_close(net(x, t, text, padding_mask=zeros), net(x, t, text))
    mask = zeros.clone()
    mask[..., 96:] = 1.0
    assert not torch.allclose(net(x, t, text, padding_mask=mask), net(x, t, text))


def test_cross_attention_mask_hides_padded_text():
    net = make_net(use_cross_attn_mask=True)
    x, t, text = inputs()
    mask = torch.ones(2, 7)
    mask[:, 4:] = 0
    other = text.clone()
    other[:, 4:] = torch.randn(2, 3, 16)
    torch.testing.assert_close(net(x, t, text, crossattn_mask=mask), net(x, t, other, crossattn_mask=mask))
    # The official default ignores the mask (the released weights were trained attending to padding).
    net = make_net(use_cross_attn_mask=False)
    assert not torch.allclose(net(x, t, text, crossattn_mask=mask), net(x, t, other, crossattn_mask=mask))


def test_gradients_reach_every_parameter():
    net = make_net()
    x, t, text = inputs()
    net(x, t, text, fps=torch.tensor([24.0, 30.0])).square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda net, x, t, c: net(x[:, :3], t, c), "in_channels=4"),
        (lambda net, x, t, c: net(x[:, :, :, :15], t, c), "divisible by the patch size"),
        (lambda net, x, t, c: net(x, t, c[..., :8]), "crossattn_emb must be"),
        (lambda net, x, t, c: net(x, t[:1], c), "timesteps must be"),
        (lambda net, x, t, c: net(x, t, c, padding_mask=torch.zeros(2, 3, 8, 8)), "padding_mask must be"),
        (lambda net, x, t, c: net(x[0], t, c), r"x must be \[B,C,T,H,W\]"),
        (lambda net, x, t, c: net(torch.randn(2, 4, 4, 40, 40), t, c), "exceeds the maximum"),
    ],
)
def test_bad_inputs_have_clear_errors(call, message):
    x, t, text = inputs()
    with pytest.raises(ValueError, match=message):
        call(make_net(randomize=False), x, t, text)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        GeneralDIT(**{**TINY, "num_heads": 5})
    with pytest.raises(ValueError, match="attention_backend"):
        GeneralDIT(**{**TINY, "attention_backend": "flash"})
    with pytest.raises(ValueError, match="num_blocks"):
        GeneralDIT(**{**TINY, "num_blocks": 0})
    with pytest.raises(ValueError, match="num_blocks must be a positive integer, got True"):  # as Cosmos25DiT
        GeneralDIT(**{**TINY, "num_blocks": True})


@pytest.mark.skipif(te_backend.is_available(), reason="checks the message shown when Transformer Engine is absent")
def test_te_backend_absent_gives_clear_message():
    with pytest.raises(ImportError, match="attention_backend='torch'"):
        GeneralDIT(**{**TINY, "attention_backend": "te"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_te_backend_matches_torch_on_cuda():
    if not te_backend.is_available():
        pytest.skip("needs CUDA")  # and Transformer Engine, installed only on CUDA machines
    torch_net = make_net().cuda()
    te_net = make_net(attention_backend="te").cuda()
    te_net.load_state_dict(torch_net.state_dict(), strict=True)
    x, t, text = (v.cuda() for v in inputs())
    torch.testing.assert_close(te_net(x, t, text), torch_net(x, t, text), atol=2e-3, rtol=2e-3)


def test_cosmos_7b_on_meta_device():
    with torch.device("meta"):
        net = GeneralDIT(
            max_img_h=240, max_img_w=240, max_frames=128, in_channels=16, out_channels=16, model_channels=4096,
            num_blocks=28, num_heads=32, rope_t_extrapolation_ratio=2.0,
        )
    count = sum(p.numel() for p in net.parameters())
    assert all(p.is_meta for p in net.parameters())
    assert 7.0e9 < count < 7.5e9, count
    assert len(net.blocks) == 28


def test_memory_lean_autograd_functions_match_autograd():
    from cosmos_transfer.networks.dit import RMSNorm, _GeluLinearFunction, _RMSNormFunction

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
    norm = RMSNorm(6).double()
    with torch.no_grad():
        norm.weight.copy_(weight)
    assert torch.autograd.gradcheck(lambda a, w: _RMSNormFunction.apply(a, w, 1e-6), (x, weight))
    torch.testing.assert_close(norm(x), torch.nn.functional.rms_norm(x, (6,), norm.weight, 1e-6))
    w2 = torch.randn(4, 6, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(_GeluLinearFunction.apply, (x, w2))
    torch.testing.assert_close(_GeluLinearFunction.apply(x, w2), torch.nn.functional.gelu(x) @ w2.t())


def test_meta_construction_then_materialize_and_init():
    with torch.device("meta"):
        net = GeneralDIT(**TINY)
    net.to_empty(device="cpu")
    net.init_weights()
    reference = make_net(randomize=False)
    for (name, value), (_, expected) in zip(net.state_dict().items(), reference.state_dict().items()):
        assert torch.isfinite(value).all(), name
        if name.endswith(("seq", "norm.weight", "to_q.1.weight", "to_k.1.weight")) or ("blocks.block" in name and "adaLN_modulation.2" in name):
            torch.testing.assert_close(value, expected, msg=name)  # deterministic parts of the init
    x, t, text = inputs()
    assert torch.isfinite(net(x, t, text)).all()


def test_backward_under_cpu_autocast():
    net = make_net()
    x, t, text = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, text)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
