"""Cosmos-2.5 networks: the released sizes build on the meta device, bad inputs are named, training reaches the
control branch only when the base is frozen."""

import pytest
import torch

from cosmos_transfer.config.lazy import instantiate
from cosmos_transfer.networks.dit_v2_5 import Cosmos25DiT
from cosmos_transfer.networks.dit_v2_5_control import Cosmos25ControlDiT
from tests.helpers import REPO_DIR

TINY = dict(max_img_h=32, max_img_w=32, max_frames=8, in_channels=4, out_channels=4, model_channels=48,
            num_blocks=4, num_heads=2, crossattn_emb_channels=16)


def _meta_build(config):
    with torch.device("meta"):
        return instantiate(config)


def _count(net, prefix=""):
    return sum(p.numel() for n, p in net.named_parameters() if n.startswith(prefix))


@pytest.mark.parametrize("option, blocks, channels, heads, total", [
    ("PREDICT2P5_2B", 28, 2048, 16, 2_059_174_912),
    ("PREDICT2P5_14B", 36, 5120, 40, 14_368_047_104),
    ("TRANSFER2P5_2B", 28, 2048, 16, 2_763_070_464),
])
def test_released_sizes_build_on_meta(option, blocks, channels, heads, total):
    import configs.net as configs_net  # the repo root is on sys.path (conftest); a broken import must fail
    net = _meta_build(getattr(configs_net, option))
    assert (len(net.blocks), net.model_channels, net.num_heads) == (blocks, channels, heads)
    assert net.crossattn_proj[0].in_features == 100_352 and net.crossattn_proj[0].out_features == 1024
    assert net.x_embedder.proj[1].in_features == (16 + 2) * 4
    # The total follows from the shapes: 28 blocks of 4 attention projections x 2 + MLP 2 x 4D^2 + 3 AdaLN-LoRA ...
    assert _count(net) == total
    if option == "TRANSFER2P5_2B":
        assert net.control_layers == [0, 7, 14, 21]
        assert net.control_embedder.proj[1].in_features == 130 * 4  # 128 control + condition mask + padding mask
        per_block = _count(net, "blocks.0.")
        # 4 copies of a base block + after_proj (x4) + before_proj + the embedder
        d = 2048
        assert _count(net, "control_") == 4 * per_block + 5 * (d * d + d) + 130 * 4 * d


@pytest.mark.slow
def test_bad_inputs_are_named():
    net = Cosmos25ControlDiT(**TINY, vace_block_every_n=2, num_max_modalities=2, num_control_branches=2)
    x, t, text = torch.randn(1, 4, 2, 16, 16), torch.rand(1), torch.randn(1, 3, 16)
    control = torch.randn(1, 8, 2, 16, 16)
    cases = [
        (lambda: net(torch.randn(1, 5, 2, 16, 16), t, text, control), "in_channels=4"),
        (lambda: net(x, t, torch.randn(1, 3, 17), control), "crossattn_emb must be"),
        (lambda: net(x, torch.rand(2), text, control), "timesteps must be"),
        (lambda: net(x, t, text, control, condition_mask=torch.ones(1, 1, 3, 16, 16)), "condition_mask must be"),
        (lambda: net(x, t, text, torch.randn(1, 7, 2, 16, 16)), "divisible by the 2 branch"),
        (lambda: net(x, t, text, [control[:, :4]]), "1 control latents for 2 branch"),
        (lambda: net(x, t, text, torch.randn(1, 18, 2, 16, 16)), "<= 8"),
        (lambda: net(x, t, text, control, control_scale=[1.0]), "1 control scales for 2 branch"),
        (lambda: net(x, t, text, control, img_context_emb=torch.randn(1, 2, 4)), "without image context"),
        (lambda: net(torch.randn(1, 4, 2, 80, 80), t, text, torch.randn(1, 8, 2, 80, 80)), "exceeds the maximum"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match="num_heads"):
        Cosmos25DiT(**{**TINY, "num_heads": 5})
    with pytest.raises(ValueError, match="vace_block_every_n"):
        Cosmos25ControlDiT(**TINY, vace_block_every_n=0)


@pytest.mark.slow
def test_frozen_base_trains_the_branch_only():
    """Transfer2.5 post-training: base frozen, gradients reach the control blocks and the control embedder."""
    torch.manual_seed(0)
    net = Cosmos25ControlDiT(**TINY, vace_block_every_n=2, num_max_modalities=2)
    for name, p in net.named_parameters():
        p.requires_grad_(name.startswith("control_"))
    x, t, text = torch.randn(1, 4, 2, 16, 16), torch.rand(1) * 1000, torch.randn(1, 3, 16)
    net(x, t, text, torch.randn(1, 4, 2, 16, 16)).square().mean().backward()
    grads = {n: p.grad for n, p in net.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    # Zero-initialized after_proj: its gradient is the only non-zero one at the start (ControlNet's zero conv).
    assert grads["control_blocks.0.after_proj.weight"].abs().sum() > 0
    assert all(p.grad is None for n, p in net.named_parameters() if not n.startswith("control_"))


@pytest.mark.slow
def test_all_zero_branch_gets_zero_gradients_when_training():
    """As NVIDIA's net: a branch with all-zero control latents still runs under autograd, multiplied by zero."""
    torch.manual_seed(0)
    net = Cosmos25ControlDiT(**TINY, vace_block_every_n=2, num_max_modalities=2, num_control_branches=2)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    x, t, text = torch.randn(1, 4, 2, 16, 16), torch.rand(1) * 1000, torch.randn(1, 3, 16)
    controls = [torch.randn(1, 4, 2, 16, 16), torch.zeros(1, 4, 2, 16, 16)]
    net(x, t, text, controls).square().mean().backward()
    assert net.control_blocks_0[1].after_proj.weight.grad.abs().sum() > 0
    assert net.control_blocks_1[1].after_proj.weight.grad is not None
    assert net.control_blocks_1[1].after_proj.weight.grad.abs().sum() == 0


def test_transfer2p5_2b_posttraining_accounting():
    """Frozen bf16 base, fp32 control branch with AdamW and an fp32 EMA (benchmarks/transfer2p5_memory.py)."""
    import importlib.util
    import os

    import configs.net as configs_net  # the repo root is on sys.path (conftest); a broken import must fail
    from cosmos_transfer.memory import model_memory

    path = os.path.join(REPO_DIR, "benchmarks",
                        "transfer2p5_memory.py")
    spec = importlib.util.spec_from_file_location("transfer2p5_memory", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    net = script.control_posttraining_net(configs_net.TRANSFER2P5_2B)
    report = model_memory(net, optimizer_states=2, ema=True)
    trainable, total = _count(net, "control_"), 2_763_070_464
    assert report.trainable_parameters == trainable == 349_205_504
    assert report.frozen_parameters == total - trainable
    assert report.frozen_parameter_bytes == 2 * (total - trainable)  # bf16, no gradient, no optimizer state
    assert report.gradient_bytes == report.trainable_parameter_bytes == 4 * trainable
    assert report.optimizer_state_bytes == 2 * 4 * trainable and report.ema_bytes == 4 * trainable
    assert 10.9 < report.total_bytes / 2**30 < 11.1


@pytest.mark.slow
def test_control_scale_forms():
    """A number, per-branch numbers, per-sample [B] and per-token weight maps [B, T', H', W'(, 1)] agree."""
    torch.manual_seed(0)
    net = Cosmos25ControlDiT(**TINY, vace_block_every_n=2, num_max_modalities=2, num_control_branches=2).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    x, t, text = torch.randn(2, 4, 2, 16, 16), torch.rand(2) * 1000, torch.randn(2, 3, 16)
    controls = [torch.randn(2, 4, 2, 16, 16), torch.randn(2, 4, 2, 16, 16)]
    with torch.no_grad():
        def run(scale):
            return net(x, t, text, controls, control_scale=scale)

        reference = run([0.5, 0.25])
        torch.testing.assert_close(run(torch.tensor([0.5, 0.25])), reference)
        torch.testing.assert_close(run([torch.full((2,), 0.5), torch.full((2, 2, 8, 8), 0.25)]), reference)
        torch.testing.assert_close(run([torch.full((2, 2, 8, 8, 1), 0.5), 0.25]), reference)
        # a map that switches branch 0 off where it is zero: off everywhere = branch 1 alone
        torch.testing.assert_close(run([torch.zeros(2, 2, 8, 8), 0.25]), run([0.0, 0.25]))
        assert not torch.allclose(run([0.0, 0.25]), reference)
        with pytest.raises(ValueError, match="control scale of branch 1 must be"):
            run([0.5, torch.ones(2, 2, 16, 16)])


def test_meta_build_then_materialize():
    """Built on meta (no memory), then `to_empty` + `init_weights`: RoPE positions recomputed, new branch zero."""
    with torch.device("meta"):
        net = Cosmos25ControlDiT(**TINY, vace_block_every_n=2, num_max_modalities=2)
    assert all(p.is_meta for p in net.parameters())
    net.to_empty(device="cpu")
    net.init_weights()
    assert torch.equal(net.pos_embedder.seq, torch.arange(len(net.pos_embedder.seq), dtype=torch.float32))
    assert net.control_blocks[0].before_proj.weight.abs().sum() == 0
    assert net.control_blocks[1].after_proj.bias.abs().sum() == 0
    assert net.blocks["0"].adaln_modulation_mlp[2].weight.abs().sum() == 0  # blocks start as identities
    assert net.blocks["0"].self_attn.q_proj.weight.std() > 0
    x, t, text = torch.randn(1, 4, 2, 16, 16), torch.rand(1) * 1000, torch.randn(1, 3, 16)
    assert torch.isfinite(net(x, t, text, torch.randn(1, 4, 2, 16, 16))).all()


def test_single_branch_runs_on_all_zero_latents():
    """NVIDIA's single-branch path has no zero check: zero control latents still give hints (the masks and the base
    tokens enter control block 0)."""
    torch.manual_seed(0)
    net = Cosmos25ControlDiT(**TINY, vace_block_every_n=2, num_max_modalities=2).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    x, t, text = torch.randn(1, 4, 2, 16, 16), torch.rand(1) * 1000, torch.randn(1, 3, 16)
    with torch.no_grad():
        on = net(x, t, text, torch.zeros(1, 4, 2, 16, 16))
        off = net(x, t, text, torch.zeros(1, 4, 2, 16, 16), control_scale=0.0)
    assert (on - off).abs().max() > 1e-3 * off.abs().max()


def test_parallelize_finds_the_base_and_control_blocks():
    """trainer/parallelize.py shards and checkpoints the blocks it finds: the 2.5 base's and each branch's control
    blocks, under NVIDIA's names."""
    from cosmos_transfer.trainer.parallelize import find_blocks

    model = torch.nn.Module()
    model.net = Cosmos25ControlDiT(**TINY, vace_block_every_n=2, num_max_modalities=2)
    assert [name for name, _ in find_blocks(model)] == [f"net.blocks.{i}" for i in range(4)] + \
        ["net.control_blocks.0", "net.control_blocks.1"]
    model.net = Cosmos25ControlDiT(**TINY, vace_block_every_n=2, num_max_modalities=2, num_control_branches=2)
    assert [name for name, _ in find_blocks(model)][4:] == \
        ["net.control_blocks_0.0", "net.control_blocks_0.1", "net.control_blocks_1.0", "net.control_blocks_1.1"]


@pytest.mark.slow
def test_tiny_options_run():
    """The tiny 2.5 options of configs/net.py build and run on CPU (text 1024 wide, no projection)."""
    import configs.net as configs_net  # the repo root is on sys.path (conftest); a broken import must fail
    torch.manual_seed(0)
    base, transfer = instantiate(configs_net.TINY_DIT_2P5), instantiate(configs_net.TINY_TRANSFER_2P5)
    assert isinstance(base, Cosmos25DiT) and transfer.control_layers == [0]
    x, t, text = torch.randn(1, 16, 2, 16, 16), torch.rand(1) * 1000, torch.randn(1, 5, 1024)
    with torch.no_grad():
        assert base(x, t, text).shape == x.shape
        assert transfer(x, t, text, torch.randn(1, 16, 2, 16, 16)).shape == x.shape
